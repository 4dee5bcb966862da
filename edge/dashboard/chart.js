// Clicks over time as SVG: one bar per bucket, human clicks below, bot clicks stacked on top.
// Sizes are SVG attributes and colours come from the stylesheet, so the CSP needs no inline style.

import { formatNumber } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const HEIGHT = 220;
const PAD = { left: 48, right: 8, top: 10, bottom: 26 };

function s(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

const LABELS = {
  "time:month": new Intl.DateTimeFormat(undefined, { year: "numeric", month: "short", timeZone: "UTC" }),
  "time:day": new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", timeZone: "UTC" }),
  "time:hour": new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", timeZone: "UTC" }),
};
LABELS["time:week"] = LABELS["time:day"];
LABELS["time:minute"] = LABELS["time:hour"];

/** A bucket as the API names it ("2026-12-08" or "2026-12-08 13:00:00", already in the view's
 * timezone), in the browser's locale. Formatted as UTC so no second timezone shift happens. */
export function bucketLabel(value, dimension) {
  const text = String(value);
  const m = text.match(/^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2}))?/);
  if (!m || !LABELS[dimension]) return text;
  const when = Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4] ?? 0), Number(m[5] ?? 0));
  return LABELS[dimension].format(when);
}

/** Draw ``points`` ([{label, human, bot}]) into ``container``. */
export function drawSeries(container, points, dimension) {
  // As wide as the container, so the labels keep their size on a phone; redrawn on resize.
  const WIDTH = Math.max(300, Math.round(container.clientWidth || 800));
  container.lastSeries = [points, dimension, WIDTH];
  if (!container.resizeWatch && typeof ResizeObserver === "function") {
    container.resizeWatch = new ResizeObserver(() => {
      const [p, d, drawn] = container.lastSeries || [];
      if (p && Math.abs(Math.round(container.clientWidth) - drawn) > 20) drawSeries(container, p, d);
    });
    container.resizeWatch.observe(container);
  }
  const total = points.reduce((sum, p) => sum + p.human + p.bot, 0);
  const max = Math.max(1, ...points.map((p) => p.human + p.bot));
  const svg = s("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    role: "img",
    "aria-label": `Clicks over time: ${formatNumber(total)} clicks in ${points.length} buckets, highest ${formatNumber(max)}`,
    class: "series",
  });
  const plotW = WIDTH - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const y = (v) => PAD.top + plotH - (v / max) * plotH;
  for (const frac of [0, 0.5, 1]) {
    const v = Math.round(max * frac);
    svg.append(s("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(s("text", { x: PAD.left - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" }, formatNumber(v)));
  }
  const step = plotW / Math.max(1, points.length);
  const barW = Math.max(1, Math.min(step * 0.8, 48));
  points.forEach((p, i) => {
    const x = PAD.left + i * step + (step - barW) / 2;
    const g = s("g", { class: "bucket" });
    g.append(s("title", {}, `${bucketLabel(p.label, dimension)}: ${formatNumber(p.human)} human, ${formatNumber(p.bot)} bot`));
    if (p.human > 0) g.append(s("rect", { x, width: barW, y: y(p.human), height: y(0) - y(p.human), class: "human" }));
    if (p.bot > 0) g.append(s("rect", { x, width: barW, y: y(p.human + p.bot), height: y(p.human) - y(p.human + p.bot), class: "bot" }));
    svg.append(g);
  });
  // Up to one label per ~110 px, under the bars they name.
  const every = Math.max(1, Math.ceil(points.length / Math.max(1, Math.floor(plotW / 110))));
  points.forEach((p, i) => {
    if (i % every !== 0) return;
    const x = PAD.left + i * step + step / 2;
    const anchor = points.length === 1 ? "middle" : i === 0 ? "start" : "middle";
    svg.append(s("text", { x: anchor === "start" ? PAD.left + i * step : x, y: HEIGHT - 6, "text-anchor": anchor, class: "axis" },
      bucketLabel(p.label, dimension)));
  });
  container.replaceChildren(svg);
}

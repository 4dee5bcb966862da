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

/** A short label of a time bucket as the API returns it (e.g. "2026-12-08" or "2026-12-08 13:00:00"). */
export function bucketLabel(value, dimension) {
  const text = String(value);
  const m = text.match(/^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2}))?/);
  if (!m) return text;
  if (dimension === "time:month") return `${m[1]}-${m[2]}`;
  if (dimension === "time:hour" || dimension === "time:minute") return `${m[2]}-${m[3]} ${m[4] ?? "00"}:${m[5] ?? "00"}`;
  return `${m[1]}-${m[2]}-${m[3]}`;
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
  if (points.length) {
    const first = bucketLabel(points[0].label, dimension);
    const last = bucketLabel(points[points.length - 1].label, dimension);
    svg.append(s("text", { x: PAD.left, y: HEIGHT - 6, class: "axis" }, first));
    svg.append(s("text", { x: WIDTH - PAD.right, y: HEIGHT - 6, "text-anchor": "end", class: "axis" }, last));
  }
  container.replaceChildren(svg);
}

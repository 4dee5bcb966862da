// The analytics half of the page: totals, the series and the breakdown tables, all from
// POST /api/v1/analytics/query with the view's range, timezone and filters.

import { ApiError } from "./api.js";
import { drawSeries } from "./chart.js";
import { fill, formatNumber, h, safeHref, formatInstant } from "./dom.js";
import { bucket, dateRange } from "./state.js";

export const PANELS = [
  { dimension: "link", title: "Top links" },
  { dimension: "country", title: "Countries" },
  { dimension: "device", title: "Devices" },
  { dimension: "browser", title: "Browsers" },
  { dimension: "os", title: "Operating systems" },
  { dimension: "referrer_host", title: "Referrers", drill: "referrer" },
  { dimension: "utm_source", title: "UTM sources" },
  { dimension: "utm_campaign", title: "UTM campaigns" },
  { dimension: "bot_reason", title: "Bot reasons", metrics: ["clicks"] },
];
const PANEL_METRICS = ["clicks", "human_clicks", "visitors"];
const METRIC_TITLES = { clicks: "Clicks", human_clicks: "Human", visitors: "Visitors" };
const EMPTY_VALUE = { referrer_host: "(direct)", referrer: "(direct)", bot_reason: "(human)" };
export const DIMENSION_TITLES = {
  link: "Link", country: "Country", device: "Device", browser: "Browser", os: "OS",
  referrer_host: "Referrer", referrer: "Referrer URL", utm_source: "UTM source",
  utm_campaign: "UTM campaign", bot_reason: "Bot reason", tag: "Tag",
};
const PANEL_LIMIT = 10;

export const valueLabel = (dimension, value) => (value === "" ? EMPTY_VALUE[dimension] || "(none)" : String(value));

function apiFilters(state) {
  const byDimension = new Map();
  for (const f of state.filters) {
    if (!byDimension.has(f.dimension)) byDimension.set(f.dimension, []);
    byDimension.get(f.dimension).push(f.value);
  }
  if (state.link) byDimension.set("link", [state.link]);
  return [...byDimension].map(([dimension, values]) => ["is", dimension, values]);
}

export class Overview {
  constructor(root, { onFilter, onError }) {
    this.root = root;
    this.onFilter = onFilter;
    this.onError = onError;
    this.generation = 0;
    this.totals = root.querySelector("#totals");
    this.chart = root.querySelector("#chart");
    this.panels = root.querySelector("#panels");
    this.error = root.querySelector("#overview-error");
    this.detail = root.querySelector("#link-detail");
  }

  base(state) {
    return { date_range: dateRange(state), timezone: state.tz, filters: apiFilters(state) };
  }

  /** Render the whole overview for ``state``; answers of an older render are dropped. */
  async render(api, state, { onCloseLink }) {
    const generation = ++this.generation;
    const current = () => generation === this.generation;
    this.error.hidden = true;
    this.root.setAttribute("aria-busy", "true");
    this.renderLoading(state);
    const base = this.base(state);
    const series = bucket(state);
    const visible = PANELS.filter((p) => !(state.link && p.dimension === "link"));
    const jobs = [
      api.query({ ...base, metrics: ["clicks", "human_clicks", "visitors"] }),
      api.query({ ...base, metrics: ["human_clicks", "bot_clicks"], dimensions: [series] }),
      ...visible.map((panel) => {
        const dimension = this.panelDimension(panel, state);
        const metrics = panel.metrics || PANEL_METRICS;
        return api.query({ ...base, metrics, dimensions: [dimension], order_by: [[metrics[0], "desc"]], limit: PANEL_LIMIT });
      }),
    ];
    const linkJob = state.link ? api.get(`/links/${encodeURIComponent(state.link)}`) : null;
    const [answers, link] = await Promise.all([Promise.allSettled(jobs), linkJob ? linkJob.then((v) => v, (e) => e) : null]);
    if (!current()) return;
    this.root.removeAttribute("aria-busy");
    if (state.link) this.renderLinkDetail(link, state, onCloseLink);
    else this.detail.hidden = true;
    const failed = answers.find((a) => a.status === "rejected");
    if (failed) {
      const error = failed.reason;
      this.error.textContent = error instanceof ApiError ? error.userMessage() : String(error);
      this.error.hidden = false;
      this.onError(error);
    }
    const [totals, points, ...tables] = answers.map((a) => (a.status === "fulfilled" ? a.value : null));
    this.renderTotals(totals);
    this.renderSeries(points, series);
    visible.forEach((panel, i) => this.renderPanel(panel, state, tables[i]));
  }

  panelDimension(panel, state) {
    return panel.drill && state.filters.some((f) => f.dimension === panel.dimension) ? panel.drill : panel.dimension;
  }

  renderLoading(state) {
    for (const node of this.totals.querySelectorAll("dd")) node.classList.add("loading");
    const visible = PANELS.filter((p) => !(state.link && p.dimension === "link"));
    const present = [...this.panels.children].map((n) => n.dataset.panel).join();
    if (present !== visible.map((p) => p.dimension).join()) {
      fill(this.panels, visible.map((p) => this.panelShell(p)));
    }
    for (const body of this.panels.querySelectorAll(".panel-body")) {
      body.setAttribute("aria-busy", "true");
    }
  }

  panelShell(panel) {
    const id = `panel-${panel.dimension}`;
    return h("section", { className: "card panel", dataset: { panel: panel.dimension }, "aria-labelledby": id },
      h("h3", { id, text: panel.title }),
      h("div", { className: "panel-body" }, h("p", { className: "muted", text: "Loading…" })));
  }

  renderTotals(answer) {
    const row = answer?.results?.[0]?.metrics || [0, 0, 0];
    const items = [["clicks", "Clicks"], ["human_clicks", "Human clicks"], ["visitors", "Visitors"]];
    fill(this.totals, items.map(([metric, title], i) => h("div", { className: "card total" },
      h("dt", { text: title }),
      h("dd", { dataset: { metric, value: answer ? String(row[i] ?? 0) : "" }, text: answer ? formatNumber(row[i] ?? 0) : "–" }))));
  }

  renderSeries(answer, dimension) {
    if (!answer) {
      fill(this.chart, h("p", { className: "muted", text: "No series." }));
      return;
    }
    const points = answer.results.map((r) => ({ label: r.dimensions[0], human: r.metrics[0] || 0, bot: r.metrics[1] || 0 }));
    drawSeries(this.chart, points, dimension);
  }

  renderPanel(panel, state, answer) {
    const section = this.panels.querySelector(`[data-panel="${panel.dimension}"]`);
    const body = section.querySelector(".panel-body");
    body.removeAttribute("aria-busy");
    const dimension = this.panelDimension(panel, state);
    section.querySelector("h3").textContent = dimension === panel.dimension ? panel.title : DIMENSION_TITLES[dimension];
    if (!answer) {
      fill(body, h("p", { className: "muted", text: "Not available." }));
      return;
    }
    if (!answer.results.length) {
      fill(body, h("p", { className: "muted empty", text: "No clicks in this range." }));
      return;
    }
    const metrics = answer.meta?.metrics || panel.metrics || PANEL_METRICS;
    const rows = answer.results.map((r) => {
      const value = r.dimensions[0];
      const label = valueLabel(dimension, value);
      const active = state.filters.some((f) => f.dimension === dimension && f.value === String(value));
      return h("tr", {},
        h("th", { scope: "row" },
          h("button", {
            type: "button", className: "row-filter", title: `Filter by ${DIMENSION_TITLES[dimension] || dimension}: ${label}`,
            "aria-pressed": active ? "true" : "false",
            dataset: { dimension, value: String(value) },
            onclick: () => this.onFilter(dimension, String(value)),
          }, label)),
        r.metrics.map((m, i) => h("td", { className: "num", dataset: { metric: metrics[i], value: String(m) }, text: formatNumber(m) })));
    });
    fill(body, h("div", { className: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, h("th", { scope: "col", text: DIMENSION_TITLES[dimension] || dimension }),
        metrics.map((m) => h("th", { scope: "col", className: "num", text: METRIC_TITLES[m] || m })))),
      h("tbody", {}, rows))));
  }

  renderLinkDetail(link, state, onCloseLink) {
    this.detail.hidden = false;
    const close = h("button", { type: "button", id: "close-link", onclick: onCloseLink, text: "Back to the overview" });
    if (!link || link instanceof Error) {
      const message = link instanceof ApiError && link.status === 404
        ? `No link with the code “${state.link}” in this account.` : link instanceof ApiError ? link.userMessage() : "";
      fill(this.detail, h("h3", { text: `Link ${state.link}` }), h("p", { className: "error", text: message }), close);
      return;
    }
    const target = safeHref(link.url);
    fill(this.detail,
      h("h3", { id: "link-title", text: "Details" }),
      h("dl", { className: "facts" },
        h("dt", { text: "Short URL" }), h("dd", { className: "short-url", text: link.short_url }),
        h("dt", { text: "Target" }), h("dd", {}, target
          ? h("a", { href: target, rel: "noopener noreferrer", target: "_blank", className: "target", text: link.url })
          : h("span", { className: "target", text: link.url })),
        h("dt", { text: "Tags" }), h("dd", { className: "tags" }, link.tags.map((t) => h("span", { className: "tag", text: t }))),
        h("dt", { text: "All-time clicks" }), h("dd", { dataset: { value: String(link.clicks) }, text: `${formatNumber(link.clicks)} (${formatNumber(link.human_clicks)} human)` }),
        h("dt", { text: "Created" }), h("dd", { text: formatInstant(link.created_at) })),
      close);
  }
}

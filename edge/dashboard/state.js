// The view's state lives in the URL fragment (never the key), so a view can be bookmarked and
// shared: #range=7d&tz=Europe/Paris&f=country:FR&f=device:mobile&link=promo

export const RANGES = ["today", "24h", "7d", "30d", "12mo", "custom"];
export const DEFAULT_RANGE = "7d";
export const browserZone = () => Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";

export function readState(hash = location.hash) {
  const params = new URLSearchParams(hash.replace(/^#/, ""));
  const range = RANGES.includes(params.get("range")) ? params.get("range") : DEFAULT_RANGE;
  const filters = [];
  for (const raw of params.getAll("f")) {
    const at = raw.indexOf(":");
    if (at > 0) filters.push({ dimension: raw.slice(0, at), value: raw.slice(at + 1) });
  }
  return {
    range,
    from: params.get("from") || "",
    to: params.get("to") || "",
    tz: params.get("tz") || browserZone(),
    filters,
    link: params.get("link") || "",
  };
}

export function writeState(state) {
  const params = new URLSearchParams();
  if (state.range !== DEFAULT_RANGE) params.set("range", state.range);
  if (state.range === "custom") {
    params.set("from", state.from);
    params.set("to", state.to);
  }
  if (state.tz && state.tz !== browserZone()) params.set("tz", state.tz);
  for (const f of state.filters) params.append("f", `${f.dimension}:${f.value}`);
  if (state.link) params.set("link", state.link);
  const hash = params.toString();
  // Assigning the same fragment fires no hashchange; the caller renders on hashchange only.
  if (hash !== location.hash.replace(/^#/, "")) location.hash = hash;
  return hash;
}

/** The API's date_range for a state. */
export function dateRange(state) {
  if (state.range === "custom" && state.from && state.to) return [state.from, state.to];
  return state.range === "custom" ? DEFAULT_RANGE : state.range;
}

/** The time bucket of the series for a state. */
export function bucket(state) {
  if (state.range === "today" || state.range === "24h") return "time:hour";
  if (state.range === "12mo") return "time:month";
  if (state.range === "custom" && state.from && state.to) {
    const days = (Date.parse(state.to) - Date.parse(state.from)) / 86400000 + 1;
    if (days <= 2) return "time:hour";
    if (days > 92) return "time:month";
  }
  return "time:day";
}

// Boot: sign in (the key in sessionStorage for this tab only), then render the view the URL
// fragment describes, again on every hashchange. Every control changes the fragment only.

import { Api, ApiError } from "./api.js";
import { fill, h } from "./dom.js";
import { Links } from "./links.js";
import { DIMENSION_TITLES, Overview, valueLabel } from "./overview.js";
import { browserZone, readState, writeState } from "./state.js";

const KEY = "linkedge.apiKey";
const $ = (selector) => document.querySelector(selector);

let api = null;
let state = readState();

const status = (text) => {
  $("#status").textContent = text;
};

function onApiError(error) {
  if (error instanceof ApiError && error.status === 401 && api) {
    signOut("Your API key is no longer accepted (revoked or deleted): sign in again.");
  }
}

const overview = new Overview($("#overview"), {
  onFilter: (dimension, value) => {
    if (state.filters.some((f) => f.dimension === dimension && f.value === value)) return;
    writeState({ ...state, filters: [...state.filters, { dimension, value }] });
  },
  onError: onApiError,
});

const links = new Links($("#links"), {
  onOpen: (code) => {
    writeState({ ...state, link: code });
    $("#overview-heading").focus();
  },
  onError: onApiError,
});

function setupControls() {
  const tz = $("#tz");
  const zones = new Set(typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : []);
  zones.add("UTC");
  zones.add(browserZone());
  fill(tz, [...zones].sort().map((zone) => h("option", { value: zone, text: zone })));
  $("#range").addEventListener("change", (event) => {
    const range = event.target.value;
    if (range === "custom") {
      $("#custom-range").hidden = false;
      $("#from").focus();
      return;
    }
    writeState({ ...state, range });
  });
  $("#apply-range").addEventListener("click", () => {
    const from = $("#from").value;
    const to = $("#to").value;
    if (!from || !to || from > to) {
      status("Choose a start date on or before the end date.");
      return;
    }
    writeState({ ...state, range: "custom", from, to });
  });
  tz.addEventListener("change", (event) => writeState({ ...state, tz: event.target.value }));
}

function renderControls() {
  $("#range").value = state.range;
  $("#custom-range").hidden = state.range !== "custom";
  $("#from").value = state.from;
  $("#to").value = state.to;
  const tz = $("#tz");
  if (![...tz.options].some((option) => option.value === state.tz)) {
    tz.append(h("option", { value: state.tz, text: state.tz })); // a zone from a shared link
  }
  tz.value = state.tz;
  fill($("#chips"), state.filters.map((f, i) => {
    const label = `${DIMENSION_TITLES[f.dimension] || f.dimension}: ${valueLabel(f.dimension, f.value)}`;
    return h("li", { className: "chip" },
      h("span", { text: label }),
      h("button", {
        type: "button", className: "chip-remove", "aria-label": `Remove filter ${label}`, text: "×",
        onclick: () => writeState({ ...state, filters: state.filters.filter((_, j) => j !== i) }),
      }));
  }));
}

function render() {
  state = readState();
  renderControls();
  if (!api) return;
  $("#overview-heading").textContent = state.link ? `Link ${state.link}` : "Overview";
  document.title = state.link ? `${state.link} · linkedge dashboard` : "linkedge dashboard";
  overview.render(api, state, { onCloseLink: () => writeState({ ...state, link: "" }) });
}

function showApp(signedIn) {
  $("#signin").hidden = signedIn;
  $("#app").hidden = !signedIn;
  $("#nav").hidden = !signedIn;
}

async function signIn(key) {
  const candidate = new Api(key);
  try {
    await candidate.get("/links?limit=1");
  } catch (error) {
    // A key without links:read is still a key: its sections say what it may not do.
    if (!(error instanceof ApiError) || error.status !== 403) throw error;
  }
  sessionStorage.setItem(KEY, key);
  start(candidate);
}

function start(candidate) {
  api = candidate;
  showApp(true);
  status("");
  render();
  links.start(api);
}

function signOut(message = "") {
  api = null;
  sessionStorage.removeItem(KEY);
  links.stop();
  fill($("#totals"));
  fill($("#chart"));
  fill($("#panels"));
  showApp(false);
  $("#signin-error").textContent = message;
  $("#key").value = "";
  $("#key").focus();
}

function boot() {
  setupControls();
  $("#signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("#key");
    const key = input.value.trim();
    const error = $("#signin-error");
    if (!key) {
      error.textContent = "Paste an API key first.";
      return;
    }
    error.textContent = "Checking the key…";
    try {
      await signIn(key);
      input.value = "";
      error.textContent = "";
    } catch (failure) {
      error.textContent = failure instanceof ApiError ? failure.userMessage() : String(failure);
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
  });
  $("#sign-out").addEventListener("click", () => signOut("Signed out."));
  window.addEventListener("hashchange", render);
  const saved = sessionStorage.getItem(KEY);
  if (saved) start(new Api(saved));
  else {
    showApp(false);
    renderControls();
    $("#key").focus();
  }
}

boot();

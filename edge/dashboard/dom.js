// Building DOM nodes: text always through textContent, never HTML. A value from a click or a
// link (target, referrer, UTM value, tag, code) can only ever become text here.

/** An element with attributes and children (strings become text nodes). */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = String(value);
    else if (name === "className") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined));
  return node;
}

/** Replace every child of ``node``. */
export function fill(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
}

/** An http(s) URL as a string, or null: only such a URL ever becomes an href. */
export function safeHref(value) {
  try {
    const url = new URL(value);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

const numbers = new Intl.NumberFormat(undefined);
export const formatNumber = (n) => numbers.format(n);

const dates = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
export function formatInstant(iso) {
  const when = new Date(iso);
  return Number.isNaN(when.getTime()) ? String(iso ?? "") : dates.format(when);
}

export function show(node, visible) {
  node.hidden = !visible;
}

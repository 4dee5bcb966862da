// The link half of the page: a paginated list, and create, edit and delete through the form,
// with the API's validation messages next to the fields they name.

import { ApiError } from "./api.js";
import { fill, formatInstant, formatNumber, h, safeHref } from "./dom.js";

const PAGE = 20;

export class Links {
  constructor(root, { onOpen, onError }) {
    this.root = root;
    this.onOpen = onOpen;
    this.onError = onError;
    this.api = null;
    this.cursors = [null]; // cursors[i]: the cursor of page i; the last one is the page shown
    this.editing = null;
    this.body = root.querySelector("#links-table tbody");
    this.error = root.querySelector("#links-error");
    this.form = root.querySelector("#link-form");
    this.older = root.querySelector("#links-older");
    this.newer = root.querySelector("#links-newer");
    root.querySelector("#new-link").addEventListener("click", () => this.openForm(null));
    root.querySelector("#cancel-link").addEventListener("click", () => this.closeForm());
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.save();
    });
    this.older.addEventListener("click", () => {
      this.cursors.push(this.next);
      this.load();
    });
    this.newer.addEventListener("click", () => {
      if (this.cursors.length > 1) this.cursors.pop();
      this.load();
    });
  }

  start(api) {
    this.api = api;
    this.cursors = [null];
    this.closeForm();
    return this.load();
  }

  stop() {
    this.api = null;
    fill(this.body);
    this.closeForm();
  }

  showError(error) {
    this.error.textContent = error ? (error instanceof ApiError ? error.userMessage() : String(error)) : "";
    this.error.hidden = !error;
    if (error) this.onError(error);
  }

  async load() {
    const api = this.api;
    if (!api) return;
    const cursor = this.cursors[this.cursors.length - 1];
    const query = new URLSearchParams({ limit: String(PAGE) });
    if (cursor) query.set("cursor", cursor);
    this.root.setAttribute("aria-busy", "true");
    try {
      const page = await api.get(`/links?${query}`);
      if (api !== this.api) return;
      this.showError(null);
      this.next = page.next_cursor;
      this.older.disabled = !page.next_cursor;
      this.newer.disabled = this.cursors.length <= 1;
      fill(this.body, page.items.length
        ? page.items.map((link) => this.row(link))
        : h("tr", {}, h("td", { colspan: "7", className: "muted empty", text: "No links yet: create one with “New link”." })));
    } catch (error) {
      if (api === this.api) this.showError(error);
    } finally {
      this.root.removeAttribute("aria-busy");
    }
  }

  row(link) {
    const target = safeHref(link.url);
    const shortUrl = h("span", { className: "short-url", text: link.short_url });
    const copy = h("button", { type: "button", className: "copy", "aria-label": `Copy ${link.short_url}`, text: "Copy" });
    copy.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(link.short_url);
        copy.textContent = "Copied";
      } catch {
        const range = document.createRange();
        range.selectNodeContents(shortUrl);
        getSelection().removeAllRanges();
        getSelection().addRange(range);
        copy.textContent = "Selected";
      }
    });
    const actions = h("td", { className: "actions", dataset: { label: "Actions" } },
      h("button", { type: "button", className: "open", onclick: () => this.onOpen(link.code), text: "Stats", "aria-label": `Stats of ${link.code}` }),
      h("button", { type: "button", className: "edit", onclick: () => this.openForm(link), text: "Edit", "aria-label": `Edit ${link.code}` }),
      h("button", { type: "button", className: "delete", text: "Delete", "aria-label": `Delete ${link.code}`, onclick: () => this.confirmDelete(link, actions) }));
    // data-label: the column's name, shown by the stylesheet where rows stack on a phone.
    return h("tr", { dataset: { code: link.code } },
      h("td", { dataset: { label: "Short URL" } }, shortUrl, " ", copy),
      h("td", { className: "target-cell", dataset: { label: "Target" } }, target
        ? h("a", { href: target, rel: "noopener noreferrer", target: "_blank", className: "target", text: link.url })
        : h("span", { className: "target", text: link.url })),
      h("td", { className: "num", dataset: { metric: "clicks", label: "Clicks" }, text: formatNumber(link.clicks) }),
      h("td", { className: "num", dataset: { metric: "human_clicks", label: "Human" }, text: formatNumber(link.human_clicks) }),
      h("td", { className: "tags", dataset: { label: "Tags" } }, link.tags.map((t) => h("span", { className: "tag", text: t }))),
      h("td", { dataset: { label: "Created" }, text: formatInstant(link.created_at) }),
      actions);
  }

  confirmDelete(link, cell) {
    const saved = [...cell.childNodes];
    const cancel = () => fill(cell, saved);
    const confirm = h("button", { type: "button", className: "danger confirm-delete", text: `Delete ${link.code}` });
    confirm.addEventListener("click", async () => {
      confirm.disabled = true;
      try {
        await this.api.request("DELETE", `/links/${encodeURIComponent(link.code)}`);
        this.showError(null);
        await this.load();
      } catch (error) {
        cancel();
        this.showError(error);
      }
    });
    fill(cell, h("span", { className: "confirm-text", text: "Delete for good? The code is never reused." }), " ", confirm, " ",
      h("button", { type: "button", onclick: cancel, text: "Keep" }));
    confirm.focus();
  }

  openForm(link) {
    this.editing = link;
    this.clearErrors();
    const f = this.form;
    f.querySelector("#link-form-heading").textContent = link ? `Edit ${link.code}` : "New link";
    f.querySelector("#save-link").textContent = link ? "Save" : "Create";
    f.querySelector("#code-field").hidden = Boolean(link);
    f.querySelector("#f-url").value = link ? link.url : "";
    f.querySelector("#f-code").value = "";
    f.querySelector("#f-redirect").value = String(link ? link.redirect_type : 302);
    f.querySelector("#f-tags").value = link ? link.tags.join(", ") : "";
    f.querySelector("#f-forward").checked = link ? link.forward_query : false;
    f.hidden = false;
    f.querySelector("#f-url").focus();
  }

  closeForm() {
    this.editing = null;
    this.form.hidden = true;
    this.clearErrors();
  }

  clearErrors() {
    for (const node of this.form.querySelectorAll(".field-error, #e-form")) node.textContent = "";
    for (const node of this.form.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
  }

  async save() {
    const f = this.form;
    const body = {
      url: f.querySelector("#f-url").value.trim(),
      redirect_type: Number(f.querySelector("#f-redirect").value),
      tags: f.querySelector("#f-tags").value.split(",").map((t) => t.trim()).filter(Boolean),
      forward_query: f.querySelector("#f-forward").checked,
    };
    const code = f.querySelector("#f-code").value.trim();
    if (!this.editing && code) body.code = code;
    this.clearErrors();
    const button = f.querySelector("#save-link");
    button.disabled = true;
    try {
      const link = this.editing
        ? await this.api.request("PATCH", `/links/${encodeURIComponent(this.editing.code)}`, body)
        : await this.api.request("POST", "/links", body);
      this.closeForm();
      if (!this.editing) this.cursors = [null];
      await this.load();
      const row = this.body.querySelector(`tr[data-code="${CSS.escape(link.code)}"]`);
      row?.classList.add("fresh");
    } catch (error) {
      this.showFormError(error);
    } finally {
      button.disabled = false;
    }
  }

  showFormError(error) {
    if (!(error instanceof ApiError)) {
      this.form.querySelector("#e-form").textContent = String(error);
      return;
    }
    const placed = [];
    for (const item of error.problem.errors || []) {
      const field = String(item.field || "").split(/[.[]/)[0];
      const slot = this.form.querySelector(`.field-error[data-field="${CSS.escape(field)}"]`);
      if (slot) {
        slot.textContent = slot.textContent ? `${slot.textContent} ${item.message}` : String(item.message);
        const input = this.form.querySelector(`[name="${CSS.escape(field)}"]`);
        input?.setAttribute("aria-invalid", "true");
        placed.push(field);
      }
    }
    if (error.status === 409 && !this.editing) {
      this.form.querySelector("#e-code").textContent = error.problem.detail || "This code is taken.";
      placed.push("code");
    }
    if (!placed.length) this.form.querySelector("#e-form").textContent = error.userMessage();
    else this.form.querySelector(`[name="${CSS.escape(placed[0])}"]`)?.focus();
    if (error.status === 401) this.onError(error);
  }
}

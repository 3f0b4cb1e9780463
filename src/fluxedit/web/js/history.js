// The caller's recent predictions (GET /v1/prediction), and their average run time.

import { ApiError, call } from "./api.js";
import { $, formatSeconds, h, timeAgo } from "./dom.js";

const PAGE = 10;
const LABEL = { created: "Queued", starting: "Starting", processing: "Running", success: "Done", error: "Failed", cancelled: "Cancelled" };

export class History {
  constructor(onOpen, onAverage) {
    this.onOpen = onOpen;
    this.onAverage = onAverage;
    this.items = [];
    this.cursor = null;
    $("history-refresh").addEventListener("click", () => this.load());
    $("history-more").addEventListener("click", () => this.load({ more: true }));
  }

  async load({ more = false } = {}) {
    const query = new URLSearchParams({ limit: String(PAGE) });
    if (more && this.cursor) query.set("cursor", this.cursor);
    let page;
    try {
      page = await call("GET", `/v1/prediction?${query}`);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      $("history-note").textContent = error.status === 401 ? "Enter an API key to see your predictions." : error.message;
      return;
    }
    this.items = more ? [...this.items, ...page.data] : page.data;
    this.cursor = page.next_cursor;
    this.render();
  }

  render() {
    const times = this.items.filter((p) => p.status === "success" && p.metrics?.predict_time).map((p) => p.metrics.predict_time);
    const average = times.length ? times.reduce((a, b) => a + b, 0) / times.length : null;
    this.onAverage(average, times.length);
    $("history-note").textContent = this.items.length
      ? `${this.items.length} most recent${average === null ? "" : `, ${formatSeconds(average)} on average per successful run`}.`
      : "No predictions yet: your runs will be listed here.";
    $("history-more").hidden = !this.cursor;
    $("history-list").replaceChildren(...this.items.map((prediction) => this.#item(prediction)));
  }

  #item(prediction) {
    const prompt = prediction.input?.prompt ?? "(no prompt)";
    const output = Array.isArray(prediction.output) ? prediction.output : [];
    const thumb = output.length
      ? h("img", { class: "thumb", src: output[0], alt: "", loading: "lazy" })
      : h("span", { class: "thumb", "aria-hidden": "true" }, LABEL[prediction.status] || prediction.status);
    const count = output.length > 1 ? ` · ${output.length} images` : "";
    return h(
      "li",
      { dataset: { id: prediction.id, status: prediction.status } },
      h(
        "button",
        { type: "button", onclick: () => this.onOpen(prediction), "aria-label": `Open: ${prompt} (${LABEL[prediction.status] || prediction.status})` },
        thumb,
        h("span", { class: "what" }, h("span", { title: prompt }, prompt), h("span", { class: "hint" }, `${prediction.width ? `${prediction.width}×${prediction.height}` : "–"}${count}`)),
        h(
          "span",
          { class: "when" },
          h("span", { class: `status-pill ${prediction.status}` }, LABEL[prediction.status] || prediction.status),
          h("span", { class: "run-time" }, formatSeconds(prediction.metrics?.predict_time)),
          h("span", {}, timeAgo(prediction.created_at)),
        ),
      ),
    );
  }
}

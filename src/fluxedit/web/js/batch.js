// A batch from the page's side: upload each image (POST /v1/files), create the batch with the form's settings
// as its template (POST /v1/batches), then read it back every second (GET /v1/batches/{id} and its /items)
// into a grid that fills in as results arrive. Only public endpoints, as any program would use them.

import { ApiError, call } from "./api.js";
import { $, formatSeconds, formatUsd, h } from "./dom.js";
import { reference } from "./runner.js";

const POLL_MS = 1000;
const ENDED = new Set(["success", "error", "cancelled"]);
const UPLOADS_AT_ONCE = 3;
const STATUS_TEXT = {
  created: "Queued", starting: "Starting", processing: "Running", success: "Done", error: "Failed", cancelled: "Cancelled",
};

// Upload the sources that are not on the server yet, a few at a time; their references, in order.
async function references(sources, onUploaded) {
  const found = new Array(sources.length);
  let next = 0;
  let uploaded = 0;
  const worker = async () => {
    while (next < sources.length) {
      const index = next++;
      found[index] = await reference(sources[index]);
      onUploaded(++uploaded);
    }
  };
  await Promise.all(Array.from({ length: Math.min(UPLOADS_AT_ONCE, sources.length) }, worker));
  return found;
}

export async function createBatch(sources, template, onUploaded) {
  const ids = await references(sources, onUploaded);
  const images = ids.map((image, index) => ({ image, name: sources[index].name }));
  return call("POST", "/v1/batches", { json: { input: template, images } });
}

const resultsPath = (id) => `/v1/batches/${encodeURIComponent(id)}/results.zip`;

export function cancelBatch(id) {
  return call("POST", `/v1/batches/${encodeURIComponent(id)}/cancel`);
}

async function allItems(id) {
  const items = [];
  let cursor = null;
  do {
    const query = cursor === null ? "" : `?cursor=${encodeURIComponent(cursor)}`;
    const page = await call("GET", `/v1/batches/${encodeURIComponent(id)}/items${query}`);
    items.push(...page.items);
    cursor = page.next;
  } while (cursor !== null && cursor !== undefined);
  return items;
}

// Read the batch back every second until every one of its predictions has ended; onUpdate(view, items) each time.
export async function followBatch(id, onUpdate) {
  while (true) {
    const [view, items] = await Promise.all([call("GET", `/v1/batches/${encodeURIComponent(id)}`), allItems(id)]);
    onUpdate(view, items);
    if (view.status !== "processing" && items.every((item) => ENDED.has(item.status))) return view;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

// The grid in the output panel: one cell per image, its thumbnail until its output (or its error) arrives.
export class BatchView {
  constructor() {
    this.batch = null;
    this.cells = [];
    $("batch-zip").addEventListener("click", (event) => this.#downloadZip(event));
  }

  // A new batch starts: the single-edit stage gives way to the grid.
  start(sources) {
    this.batch = null;
    for (const id of ["stage", "result-bar", "progress-box"]) $(id).hidden = true;
    $("batch-view").hidden = false;
    $("batch-zip").hidden = true;
    $("batch-cancel").hidden = false;
    $("batch-cancel").disabled = false;
    this.#bar(0);
    $("batch-progress").textContent = `Uploading ${sources.length} images…`;
    this.cells = sources.map((source) => this.#cell(source));
    $("batch-grid").replaceChildren(...this.cells.map((cell) => cell.element));
    const pill = $("status-pill");
    pill.hidden = false;
    pill.className = "status-pill processing";
    pill.textContent = "Batch";
  }

  uploaded(count, total) {
    $("batch-progress").textContent = `Uploading the images: ${count} of ${total}`;
  }

  // Back to the single-edit panel (a single run, a reopened step or history entry).
  hide() {
    $("batch-view").hidden = true;
    $("stage").hidden = false;
  }

  get visible() {
    return !$("batch-view").hidden;
  }

  update(view, items) {
    this.batch = view;
    const { done, total } = view.progress;
    const failed = view.counts.error;
    const cancelled = view.counts.cancelled;
    const parts = [`${done}/${total} done`, `${failed} failed`];
    if (cancelled) parts.push(`${cancelled} cancelled`);
    parts.push(`cost ${formatUsd(view.cost)}`);
    const ended = view.status !== "processing" && done >= total;
    if (ended) parts.push(view.status === "cancelled" ? "cancelled" : "finished");
    else parts.push(`time left ${view.estimated_seconds_left === null ? "–" : formatSeconds(view.estimated_seconds_left)}`);
    $("batch-progress").textContent = parts.join(" · ");
    this.#bar(Math.round(view.progress.percent));
    const zip = $("batch-zip");
    zip.href = resultsPath(view.id);
    zip.download = `${view.id}-results.zip`;
    zip.hidden = view.counts.success === 0;
    for (const item of items) this.cells[item.index]?.show(item);
    if (ended) {
      $("batch-cancel").hidden = true;
      const pill = $("status-pill");
      pill.className = `status-pill ${view.status === "cancelled" ? "cancelled" : failed ? "error" : "success"}`;
      pill.textContent = view.status === "cancelled" ? "Cancelled" : failed ? `Done, ${failed} failed` : "Done";
    }
  }

  failed(message) {
    $("batch-cancel").hidden = true;
    $("batch-progress").textContent = message;
    $("batch-progress").setAttribute("role", "alert");
    const pill = $("status-pill");
    pill.className = "status-pill error";
    pill.textContent = "Failed";
  }

  #cell(source) {
    const image = h("img", { src: source.displayUrl, alt: `${source.name}, before the edit` });
    const status = h("span", { class: "batch-status" }, "Waiting");
    const error = h("p", { class: "batch-error", hidden: true });
    const link = h("a", { class: "batch-open", target: "_blank", rel: "noopener", hidden: true }, "Open");
    const element = h("li", { class: "batch-cell", dataset: { status: "created" } }, image,
      h("div", { class: "batch-caption" }, h("span", { class: "batch-name", title: source.name }, source.name), status, link), error);
    let shown = null;
    const show = (item) => {
      if (item.status === shown) return; // unchanged: the image is not loaded again
      shown = item.status;
      element.dataset.status = item.status;
      status.textContent = STATUS_TEXT[item.status] || item.status;
      if (item.status === "success" && item.output.length) {
        image.src = item.output[0]; // outputs need no key (docs/playground.md)
        image.alt = `${source.name}, edited`;
        link.href = item.output[0];
        link.hidden = false;
      }
      if (item.status === "error") {
        error.textContent = item.error || "The edit failed.";
        error.hidden = false;
      }
    };
    return { element, show };
  }

  // results.zip is the caller's: fetched with the key in the header (never in a URL), then saved.
  async #downloadZip(event) {
    event.preventDefault();
    if (!this.batch) return;
    try {
      const response = await call("GET", resultsPath(this.batch.id), { raw: true });
      const url = URL.createObjectURL(await response.blob());
      const save = h("a", { href: url, download: `${this.batch.id}-results.zip`, hidden: true });
      document.body.append(save);
      save.click();
      save.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      $("batch-progress").textContent = `The zip could not be downloaded: ${error.message}`;
    }
  }

  #bar(percent) {
    $("batch-bar").setAttribute("aria-valuenow", String(percent));
    $("batch-fill").style.width = `${percent}%`;
  }
}

// The output panel: progress while a run goes, then the result with downloads and a before/after slider.

import { $, formatSeconds, formatUsd, h } from "./dom.js";

const STATUS_TEXT = {
  created: "Queued",
  starting: "Starting",
  processing: "Running",
  success: "Done",
  error: "Failed",
  cancelled: "Cancelled",
};

export class OutputView {
  constructor({ onEdit, onReuseSeed }) {
    this.onEdit = onEdit;
    this.onReuseSeed = onReuseSeed;
    this.prediction = null;
    this.failure = null; // the message shown when a run ended without a prediction to show
    this.selected = 0;
    $("view-result").addEventListener("click", () => this.#compare(false));
    $("view-compare").addEventListener("click", () => this.#compare(true));
    $("compare-range").addEventListener("input", (event) => this.#split(event.target.value));
    $("edit-result").addEventListener("click", () => this.onEdit(this.prediction, this.selected));
  }

  // A run starts: the old result stays until the first preview replaces it.
  running() {
    this.prediction = null;
    $("progress-box").hidden = false;
    $("cancel").disabled = false;
    $("cancel").hidden = false;
    $("progress-text").textContent = "Waiting for a worker…";
    this.#bar(0);
    this.status("created");
    $("result-bar").hidden = true;
    $("compare").hidden = true;
    $("live-preview").hidden = true;
    this.#message("Starting… a live preview appears after the first step.");
  }

  // A run that ended without a prediction to show (refused, unreachable server, lost stream): its reason.
  failed(message) {
    this.prediction = null;
    $("progress-box").hidden = true;
    for (const id of ["result-bar", "compare", "live-preview"]) $(id).hidden = true;
    this.status("error");
    this.#message(message, "failure");
  }

  // A failure whose cause may be gone (a new key was saved): back to the empty panel.
  dismissFailure() {
    if (this.failure && !this.prediction) this.clear();
  }

  status(status) {
    const pill = $("status-pill");
    pill.hidden = false;
    pill.className = `status-pill ${status}`;
    pill.textContent = STATUS_TEXT[status] || status;
    if (status === "starting") $("progress-text").textContent = "Starting…";
    if (status === "processing" && $("progress").getAttribute("aria-valuenow") === "0") {
      $("progress-text").textContent = "Preparing the images…";
    }
  }

  progress(step, total) {
    this.#bar(Math.round((100 * step) / total));
    $("progress-text").textContent = `Step ${step} of ${total}`;
  }

  tick(seconds) {
    $("progress-time").textContent = formatSeconds(seconds);
  }

  preview(image) {
    const live = $("live-preview");
    live.src = image;
    live.hidden = false;
    $("placeholder").hidden = true;
    $("compare").hidden = true;
  }

  // The run in progress has ended: the progress bar stays, showing how it ended.
  finished(prediction, before, elapsed) {
    $("cancel").hidden = true;
    if (prediction.status === "success") {
      this.#bar(100);
      $("progress-text").textContent = "Finished";
    } else if (prediction.status === "cancelled") {
      $("progress-text").textContent = "Cancelled";
    } else {
      $("progress-box").hidden = true;
    }
    this.#render(prediction, before, elapsed, 0);
  }

  // Nothing to show: the placeholder again.
  clear() {
    this.prediction = null;
    for (const id of ["status-pill", "progress-box", "result-bar", "compare", "live-preview"]) $(id).hidden = true;
    this.#message("Your edited image appears here.");
    $("placeholder-hint").hidden = false;
  }

  // The placeholder with one message: the "how to start" hint only shows on the empty panel (clear()).
  #message(text, kind = "") {
    const failure = kind === "failure";
    this.failure = failure ? text : null;
    $("placeholder").hidden = false;
    $("placeholder").classList.toggle("failure", failure);
    $("placeholder-text").textContent = text;
    if (failure) $("placeholder-text").setAttribute("role", "alert");
    else $("placeholder-text").removeAttribute("role");
    $("placeholder-hint").hidden = true;
  }

  // A finished prediction from before (a reopened step, a history entry).
  show(prediction, before, selected = 0) {
    $("progress-box").hidden = true;
    this.#render(prediction, before, null, selected);
  }

  #render(prediction, before, elapsed, selected) {
    this.prediction = prediction;
    this.before = before;
    this.elapsed = elapsed;
    this.status(prediction.status);
    $("live-preview").hidden = true;
    if (prediction.status !== "success") {
      $("compare").hidden = true;
      $("result-bar").hidden = true;
      if (prediction.status === "error") {
        this.#message(`The edit failed: ${prediction.output?.error_message || "no reason given"}`, "failure");
      } else {
        this.#message("The run was cancelled before it finished. Nothing was charged.");
      }
      return;
    }
    this.failure = null;
    $("placeholder").hidden = true;
    $("compare").hidden = false;
    $("result-bar").hidden = false;
    $("compare").style.setProperty("--ratio", String(prediction.width / prediction.height));
    $("view-compare").disabled = !before;
    if (!before) this.#compare(false);
    this.#grid();
    this.select(selected);
  }

  select(index) {
    const urls = this.prediction.output;
    this.selected = Math.min(index, urls.length - 1);
    const url = urls[this.selected];
    const image = $("result-image");
    image.src = url;
    image.alt = `Result ${urls.length > 1 ? `${this.selected + 1} of ${urls.length}` : ""} for “${this.prediction.input?.prompt ?? ""}”`;
    $("before-image").src = this.before || "";
    const link = $("download");
    link.href = url;
    link.download = fileName(this.prediction, this.selected);
    link.setAttribute("aria-label", urls.length > 1 ? `Download image ${this.selected + 1}` : "Download the result");
    document.querySelectorAll("#result-grid .pick").forEach((button, i) => {
      button.setAttribute("aria-pressed", String(i === this.selected));
    });
    this.#meta();
  }

  #grid() {
    const urls = this.prediction.output;
    const grid = $("result-grid");
    grid.hidden = urls.length < 2;
    grid.replaceChildren(
      ...urls.map((url, index) =>
        h(
          "li",
          {},
          h(
            "button",
            { type: "button", class: "pick", "aria-label": `Show image ${index + 1}`, onclick: () => this.select(index) },
            h("img", { src: url, alt: "" }),
          ),
          h("a", { class: "button ghost small", href: url, download: fileName(this.prediction, index) }, `Download ${index + 1}`),
        ),
      ),
    );
  }

  #meta() {
    const p = this.prediction;
    const seed = p.seed === null || p.seed === undefined ? null : String((BigInt(p.seed) + BigInt(this.selected)) % 2n ** 64n);
    const item = (label, value) => h("span", {}, `${label} `, h("b", {}, value));
    const parts = [];
    if (seed !== null) {
      parts.push(
        h(
          "span",
          {},
          "Seed ",
          h("b", { class: "seed-value" }, seed),
          " ",
          h("button", { type: "button", class: "button ghost small", id: "reuse-seed", onclick: () => this.onReuseSeed(seed) }, "Reuse seed"),
        ),
      );
    }
    parts.push(item("Run time", formatSeconds(p.metrics?.predict_time)));
    if (this.elapsed !== null) parts.push(item("Total", formatSeconds(this.elapsed)));
    parts.push(h("span", { class: "size" }, "Size ", h("b", {}, `${p.width}×${p.height}`)));
    if (p.metrics?.cost !== null && p.metrics?.cost !== undefined) parts.push(item("Cost", formatUsd(p.metrics.cost)));
    $("result-meta").replaceChildren(...parts);
  }

  #compare(on) {
    $("compare").classList.toggle("comparing", on);
    $("view-result").setAttribute("aria-pressed", String(!on));
    $("view-compare").setAttribute("aria-pressed", String(on));
    if (on) {
      $("compare-range").value = "50";
      this.#split(50);
    }
  }

  #split(percent) {
    $("compare").style.setProperty("--split", `${percent}%`);
    $("compare-range").setAttribute("aria-valuetext", `${percent}% before, ${100 - percent}% after`);
  }

  #bar(percent) {
    $("progress").setAttribute("aria-valuenow", String(percent));
    $("progress-fill").style.width = `${percent}%`;
  }
}

function fileName(prediction, index) {
  const url = prediction.output[index];
  const ext = url.slice(url.lastIndexOf(".") + 1);
  const suffix = prediction.output.length > 1 ? `-${index + 1}` : "";
  return `fluxedit-${prediction.id}${suffix}.${ext}`;
}

// The mask tool over the input image: "Whole image" (no mask sent) or a painted region, with a brush,
// an eraser, a size slider, invert and clear; the mask follows the main image and goes up with the run.

import { $ } from "./dom.js";
import { clearMask, copyMask, coverage, createMask, invertMask, loadMask, maskPng, resizeMask } from "./mask.js";
import { wirePainting } from "./mask-painting.js";
import { reference } from "./runner.js";

export class MaskTool {
  constructor(onChange) {
    this.onChange = onChange;
    this.canvas = $("mask-canvas");
    this.sourceId = null;
    this.next = null; // what the next main image starts with: {id, mask} (a mask canvas, or "carry")
    this.upload = null; // {version, source}: the PNG of one version of the mask, uploaded once
    this.version = 0;
    this.painted = 0;
    this.size = null; // [width, height] of the main image
    this.unsized = false; // the canvas is not yet the main image's size (nothing painted on it)
    this.#wireControls();
    wirePainting(this.canvas, $("mask-cursor"), {
      diameter: () => Number($("mask-size").value),
      erasing: () => $("mask-eraser").checked,
      painted: () => this.#changed(),
    });
  }

  get masked() {
    return !$("region-field").hidden && $("region-mask").checked;
  }

  // The form's main image changed (or may have): a new image starts with no mask, unless it was expected.
  follow(main, batchSize) {
    const usable = main !== null && batchSize < 2;
    $("region-field").hidden = !usable;
    if (!usable) return;
    if ($("mask-image").src !== main.displayUrl) $("mask-image").src = main.displayUrl;
    const known = Boolean(main.width && main.height);
    $("region-mask").disabled = !known;
    $("region-unknown").hidden = known;
    const expected = this.next?.id === main.id ? this.next : null;
    if (main.id === this.sourceId && !expected) return;
    this.sourceId = main.id;
    const next = expected?.mask ?? null;
    this.next = null;
    this.size = known ? [main.width, main.height] : null;
    if (!known) return this.#choose("whole");
    $("mask-stage").style.setProperty("--ratio", String(main.width / main.height));
    this.unsized = false;
    if (next === "carry" && this.masked) resizeMask(this.canvas, main.width, main.height);
    else if (next && next !== "carry") this.#load(next, main);
    else {
      // A mask the image's size is made when one is first painted: a large photo edited whole needs none.
      this.unsized = true;
      this.#choose("whole");
      return this.#changed(0);
    }
    this.#changed();
  }

  // "Edit this result": the result becomes the next input; the mask goes with it when the user keeps it.
  carryTo(source) {
    this.next = { id: source.id, mask: this.masked && $("mask-keep").checked ? "carry" : null };
  }

  // Reopening a step: its image comes back with the mask it ran with (or none).
  restoreWith(source, mask) {
    this.next = { id: source.id, mask };
  }

  // A stored mask (a history entry's mask_url, reopened) as a picture to restore.
  pictureFrom(source) {
    return new Promise((resolve) => {
      const picture = new Image();
      picture.onload = () => resolve(picture);
      picture.onerror = () => resolve(null); // shown without its mask rather than not at all
      picture.src = source.displayUrl;
    });
  }

  // A copy of the mask a run used, for the edit chain; null when it edited the whole image.
  snapshot() {
    return this.masked ? copyMask(this.canvas) : null;
  }

  // Why the form cannot run as it is, or null.
  problem() {
    if (!this.masked || this.painted > 0) return null;
    return "Paint the part of the image to change, or choose “Whole image”.";
  }

  // The mask_url for the run: the painted PNG uploaded as a file (once per version), or null.
  async reference() {
    if (!this.masked) return null;
    if (this.upload?.version !== this.version) {
      const blob = await maskPng(this.canvas);
      this.upload = { version: this.version, source: { file: new File([blob], "mask.png", { type: "image/png" }), name: "mask.png" } };
    }
    return reference(this.upload.source);
  }

  #load(mask, main) {
    createMask(main.width, main.height, this.canvas);
    loadMask(this.canvas, mask);
    this.#choose("mask");
  }

  #choose(mode) {
    if (mode === "mask" && this.unsized) {
      createMask(...this.size, this.canvas);
      this.unsized = false;
    }
    $("region-whole").checked = mode === "whole";
    $("region-mask").checked = mode === "mask";
    $("mask-editor").hidden = mode !== "mask";
  }

  // After any change to the mask: a new version to upload, its coverage said in words.
  #changed(known = null) {
    this.version++;
    this.painted = known ?? coverage(this.canvas);
    const percent = this.painted * 100;
    const share = percent === 0 ? "" : percent < 1 ? "under 1%" : `${Math.round(percent)}%`;
    const text = share
      ? `The edit may change ${share} of the image (painted); the rest stays as it is.`
      : "Nothing painted yet: paint where the edit may change the picture.";
    $("mask-coverage").textContent = text;
    this.canvas.setAttribute("aria-label", `Mask over the image: ${share || "nothing"} painted`);
    $("mask-error").textContent = "";
    this.onChange();
  }

  #wireControls() {
    for (const id of ["region-whole", "region-mask"]) {
      $(id).addEventListener("change", () => {
        this.#choose($("region-mask").checked ? "mask" : "whole");
        this.onChange();
      });
    }
    $("mask-size").addEventListener("input", () => ($("mask-size-value").textContent = `${$("mask-size").value} px`));
    $("mask-invert").addEventListener("click", () => {
      invertMask(this.canvas);
      this.#changed();
    });
    $("mask-clear").addEventListener("click", () => {
      clearMask(this.canvas);
      this.#changed(0);
    });
    // The mask as a file, for the snippets (mask.png) or another tool.
    $("mask-save").addEventListener("click", async () => {
      const link = document.createElement("a");
      link.href = URL.createObjectURL(await maskPng(this.canvas));
      link.download = "mask.png";
      link.click();
      setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
    });
  }
}

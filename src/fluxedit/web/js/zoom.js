// Zoom to 100%: the result (and the before/after slider over it) at one image pixel per screen pixel,
// in a scrolling box, so a full-resolution result can be checked where it matters. A double click
// zooms in on the point clicked; the button, the double click again or Escape zoom back out.

import { $ } from "./dom.js";

export class ActualSizeZoom {
  constructor() {
    this.on = false;
    $("zoom-actual").addEventListener("click", () => this.toggle());
    $("compare").addEventListener("dblclick", (event) => {
      const box = $("compare").getBoundingClientRect();
      this.toggle({ x: (event.clientX - box.left) / box.width, y: (event.clientY - box.top) / box.height });
    });
    $("stage").addEventListener("keydown", (event) => {
      if (event.key === "Escape" && this.on) this.toggle();
    });
    // A new result (another run, another image of the grid) is shown at 100% too while zoomed.
    $("result-image").addEventListener("load", () => this.on && this.#apply(null));
  }

  // Back to the fitted view (a new run starts, another prediction opens).
  reset() {
    if (this.on) this.toggle();
  }

  // at: the point to bring into view, as fractions of the picture; by default the slider's line.
  toggle(at = null) {
    this.on = !this.on;
    $("zoom-actual").setAttribute("aria-pressed", String(this.on));
    $("zoom-actual").textContent = this.on ? "Fit to the panel" : "Zoom to 100%";
    $("stage").classList.toggle("zoomed", this.on);
    if (this.on) this.#apply(at);
    else $("compare").style.removeProperty("--actual-width");
  }

  #apply(at) {
    const image = $("result-image");
    if (!image.naturalWidth) return;
    const width = image.naturalWidth / (window.devicePixelRatio || 1);
    $("compare").style.setProperty("--actual-width", `${width}px`);
    const split = parseFloat(getComputedStyle($("compare")).getPropertyValue("--split")) / 100;
    const focus = at ?? { x: $("compare").classList.contains("comparing") && split >= 0 ? split : 0.5, y: 0.5 };
    const stage = $("stage");
    const height = width * (image.naturalHeight / image.naturalWidth);
    stage.scrollLeft = Math.max(0, focus.x * width - stage.clientWidth / 2);
    stage.scrollTop = Math.max(0, focus.y * height - stage.clientHeight / 2);
  }
}

// The "Full resolution" choice (output_resolution: input): the result at the input's own size, the
// untouched pixels kept exactly. The size that will come back is shown before the run, and an input
// above the server's limit is refused here with the same reason the server gives.

import { $ } from "./dom.js";

export const MAX_FULL_RESOLUTION_PIXELS = 40_000_000;

const megapixels = (width, height) => `${((width * height) / 1e6).toFixed(1)} MP`;

export class FullResolution {
  constructor(onChange) {
    this.box = $("full-size");
    this.box.addEventListener("change", onChange);
  }

  get on() {
    return this.box.checked;
  }

  // The API's input field, when it differs from the default.
  values() {
    return this.on ? { output_resolution: "input" } : {};
  }

  load(input) {
    this.box.checked = input.output_resolution === "input";
  }

  // sources: the image or the batch's images; modelSize: [w, h] the model makes for the first (or null).
  show(sources, modelSize) {
    $("full-size-field").hidden = sources.length === 0;
    const problem = this.problem(sources);
    $("full-size-error").textContent = problem ?? "";
    this.box.setAttribute("aria-invalid", String(Boolean(problem)));
    $("full-size-hint").textContent = this.#describe(sources, modelSize);
  }

  // Why the run cannot go with full resolution on, or null.
  problem(sources) {
    if (!this.on) return null;
    const big = sources.find((source) => source.width * source.height > MAX_FULL_RESOLUTION_PIXELS);
    if (!big) return null;
    return (
      `“${big.name}” is ${big.width}×${big.height} (${megapixels(big.width, big.height)}): full resolution goes up to ` +
      `${MAX_FULL_RESOLUTION_PIXELS / 1e6} MP. Scale it down, or turn full resolution off for the model's size.`
    );
  }

  #describe(sources, modelSize) {
    const model = modelSize ? `${modelSize[0]}×${modelSize[1]}` : null;
    if (!this.on) return model ? `The result comes back at the model's size, ${model}.` : "The result comes back at the model's size.";
    if (sources.length > 1) return "Each result comes back at its own input's size.";
    const [main] = sources;
    if (!main?.width) return "The result comes back at the input's own size (known once the server reads it).";
    const priced = model ? ` (priced as the model's ${model})` : "";
    return `The result comes back at ${main.width}×${main.height}, the input's own size${priced}; every pixel the edit leaves alone is the input's own.`;
  }
}

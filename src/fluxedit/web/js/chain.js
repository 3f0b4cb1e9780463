// Iterative editing: the chain of steps, each one editing the result of the one before.
// Step 0 is the original image; step k holds the input it used, its prompt and settings, its result.

import { $, h } from "./dom.js";

export class EditChain {
  constructor(onOpen) {
    this.onOpen = onOpen;
    this.steps = [];
    this.current = -1;
  }

  // Record a finished run whose main image was `source`; answers the new step's index.
  record(source, refs, input, prediction) {
    const from = this.#stepWhoseResultIs(source);
    if (from !== null) this.steps.length = from + 1; // going on from step k drops what came after it
    else if (this.steps[0]?.source.id === source.id) this.steps.length = 1;
    else this.steps = [{ source, prediction: null }];
    this.steps.push({ source, refs: [...refs], input, prediction, selected: 0 });
    this.current = this.steps.length - 1;
    this.render();
    return this.current;
  }

  // Mark a source made from step k's result, so the next run continues the chain from there.
  resultSource(source, stepIndex, selected = 0) {
    if (this.steps[stepIndex]) this.steps[stepIndex].selected = selected; // the image the chain went on from
    source.fromStep = stepIndex;
    source.fromPrediction = this.steps[stepIndex]?.prediction?.id;
    this.render();
    return source;
  }

  indexOf(predictionId) {
    return this.steps.findIndex((step) => step.prediction?.id === predictionId);
  }

  open(index) {
    this.current = index;
    this.render();
    this.onOpen(this.steps[index], index);
  }

  #stepWhoseResultIs(source) {
    if (source.fromStep === undefined) return null;
    const step = this.steps[source.fromStep];
    return step && step.prediction?.id === source.fromPrediction ? source.fromStep : null;
  }

  render() {
    $("chain-card").hidden = this.steps.length < 2;
    $("chain").replaceChildren(
      ...this.steps.map((step, index) => {
        const picture = index === 0 ? step.source.displayUrl : step.prediction.output[step.selected];
        const title = index === 0 ? "Original" : `Step ${index}`;
        const prompt = index === 0 ? step.source.name : step.input.prompt;
        return h(
          "li",
          {},
          h(
            "button",
            {
              type: "button",
              "aria-current": index === this.current ? "step" : false,
              "aria-label": `${title}: ${prompt}`,
              onclick: () => this.open(index),
            },
            h("img", { src: picture, alt: "" }),
            h("span", { class: "step-title" }, title),
            h("span", { class: "step-prompt", title: prompt }, prompt),
          ),
        );
      }),
    );
  }
}

// The settings form, drawn from the model card's JSON Schema: its fields, defaults, limits and
// choices come from the server, so a new input shows up here without a change to the page.

import { $, h } from "./dom.js";

const MAX_SEED = 2n ** 64n - 1n;
// Fields the page asks for elsewhere (the images, the prompt, the mask and full resolution).
const ELSEWHERE = new Set(["prompt", "image_url", "image_urls", "mask_url", "output_resolution"]);
const ORDER = [
  "num_inference_steps", "guidance_scale", "strength", "seed", "num_images", "resolution_mode",
  "output_format", "output_quality", "acceleration", "enable_safety_checker", "loras",
];
const TEXT = {
  num_inference_steps: ["Steps", "More steps refine detail; fewer run faster."],
  guidance_scale: ["Guidance", "How strictly to follow the prompt; 2.5 suits most edits."],
  seed: ["Seed", "Same seed and settings, same image. Empty: a new seed each run."],
  num_images: ["Images", "Made in one batch; image k uses seed + k."],
  resolution_mode: ["Resolution", ""], // the hint shows the output size
  output_format: ["Output format", ""],
  output_quality: ["Quality", "For JPEG and WebP."],
  acceleration: ["Acceleration", "Step caching: faster runs, slightly different details."],
  enable_safety_checker: ["Safety checker", "Black out images the server's safety model flags."],
  loras: ["LoRAs", "Adapters by name, uploaded file, URL or owner/repo, each with a scale."],
  strength: ["Mask strength", "With a mask: how far the painted region may move from the input (0 keeps it, 1 remakes it)."],
};
const CHOICE_LABELS = {
  match_input: "Match input",
  auto: "Auto (input's aspect)",
  none: "None",
  regular: "Regular",
  high: "High",
  jpeg: "JPEG",
  png: "PNG",
  webp: "WebP",
};
const SLIDER_STEP = { guidance_scale: 0.1, strength: 0.05 };

export class SettingsForm {
  constructor(container, schema, onChange) {
    this.schema = schema;
    this.onChange = onChange;
    this.fields = {};
    this.inputFormat = null;
    this.lastSeed = null;
    const names = Object.keys(schema.properties).filter((name) => !ELSEWHERE.has(name));
    names.sort((a, b) => rank(a) - rank(b));
    for (const name of names) {
      const spec = resolve(schema.properties[name], schema.$defs || {});
      this.fields[name] = { spec, ...this.#widget(name, spec) };
    }
    container.replaceChildren(...Object.values(this.fields).map((field) => field.element));
    container.addEventListener("input", () => this.#changed());
    container.addEventListener("change", () => this.#changed());
    this.#changed();
  }

  // {values, error}: only the settings that differ from the server's defaults, as the API takes them.
  read() {
    const values = {};
    let error = null;
    for (const [name, field] of Object.entries(this.fields)) {
      let value;
      try {
        value = field.read();
        field.invalid?.(false);
      } catch (problem) {
        field.invalid?.(true);
        error ??= problem.message;
        continue;
      }
      if (value !== undefined && !sameAsDefault(value, field.spec.default)) values[name] = value;
    }
    return { values, error };
  }

  // Fill the form from a prediction's input (reopening a step or a history entry).
  load(input) {
    for (const [name, field] of Object.entries(this.fields)) field.write?.(input[name] ?? field.spec.default);
    this.#changed();
  }

  // Names registered with POST /v1/loras, suggested in the LoRA path fields.
  setLoraNames(names) {
    $("lora-names")?.replaceChildren(...names.map((name) => h("option", { value: name })));
  }

  setInputFormat(format) {
    this.inputFormat = format;
    this.#changed();
  }

  setLastSeed(seed) {
    this.lastSeed = seed === null || seed === undefined ? null : String(seed);
    const reuse = $("seed-reuse");
    if (reuse) {
      reuse.disabled = this.lastSeed === null;
      reuse.title = this.lastSeed ? `Use seed ${this.lastSeed} again` : "No run yet";
    }
  }

  reuseSeed(seed = this.lastSeed) {
    if (seed === null || !this.fields.seed) return;
    this.fields.seed.write(String(seed));
    this.#changed();
  }

  summary() {
    const { values } = this.read();
    const get = (name) => values[name] ?? this.fields[name]?.spec.default;
    const parts = [`${get("num_inference_steps")} steps`, `guidance ${get("guidance_scale")}`];
    const images = get("num_images");
    parts.push(`${images} image${images > 1 ? "s" : ""}`);
    if (values.seed !== undefined) parts.push(`seed ${values.seed}`);
    return parts.join(" · ");
  }

  #changed() {
    const format = this.fields.output_format?.read() ?? null;
    const effective = format || this.inputFormat;
    const quality = this.fields.output_quality;
    if (quality) quality.disable(effective === "png");
    const sameAsInput = document.querySelector("#set-output_format option[value='']");
    if (sameAsInput) {
      sameAsInput.textContent = this.inputFormat ? `Same as input (${CHOICE_LABELS[this.inputFormat]})` : "Same as input";
    }
    $("settings-summary").textContent = this.summary();
    this.onChange();
  }

  #widget(name, spec) {
    if (name === "seed") return seedWidget(this, spec);
    if (name === "num_images") return segmentedWidget(name, spec);
    if (name === "loras") return loraWidget(spec);
    if (spec.enum) return selectWidget(name, spec, name === "output_format");
    if (spec.type === "boolean") return checkboxWidget(name, spec);
    if ((spec.type === "integer" || spec.type === "number") && spec.minimum !== undefined && spec.maximum !== undefined) {
      return sliderWidget(name, spec);
    }
    return textWidget(name, spec);
  }
}

function rank(name) {
  const index = ORDER.indexOf(name);
  return index < 0 ? ORDER.length : index;
}

// A property as one plain schema: anyOf [X, null] becomes X, and $refs are followed.
function resolve(property, defs) {
  let spec = { ...property };
  if (spec.anyOf) {
    const branch = spec.anyOf.find((option) => option.type !== "null") || {};
    spec = { ...branch, ...spec, nullable: spec.anyOf.some((option) => option.type === "null") };
    delete spec.anyOf;
  }
  if (spec.$ref) {
    const target = defs[spec.$ref.split("/").pop()] || {};
    spec = { ...target, ...spec };
    delete spec.$ref;
  }
  return spec;
}

function sameAsDefault(value, fallback) {
  if (Array.isArray(value)) return value.length === 0 && (fallback === undefined || (Array.isArray(fallback) && !fallback.length));
  if (fallback === undefined) return value === null || value === "";
  return value === fallback || (fallback === null && (value === "" || value === null));
}

function labelFor(name, spec) {
  return TEXT[name]?.[0] || spec.title || name;
}

function hintFor(name, spec, id) {
  const text = TEXT[name]?.[1] ?? spec.description ?? "";
  return h("span", { class: "hint", id }, text);
}

function rangeText(spec) {
  return `between ${spec.minimum} and ${spec.maximum}`;
}

function sliderWidget(name, spec) {
  const id = `set-${name}`;
  const step = spec.type === "integer" ? 1 : SLIDER_STEP[name] || 0.1;
  const common = { min: String(spec.minimum), max: String(spec.maximum), step: String(step) };
  const number = h("input", { type: "number", id, name, inputmode: "decimal", "aria-describedby": `${id}-hint`, ...common });
  const slider = h("input", { type: "range", tabindex: "-1", "aria-hidden": "true", ...common });
  const write = (value) => {
    number.value = String(value);
    slider.value = String(value);
  };
  number.addEventListener("input", () => (slider.value = number.value));
  slider.addEventListener("input", () => (number.value = slider.value));
  write(spec.default ?? spec.minimum);
  const element = h(
    "div",
    { class: "setting" },
    h("label", { class: "label", for: id }, labelFor(name, spec)),
    h("div", { class: "row" }, slider, number),
    hintFor(name, spec, `${id}-hint`),
  );
  return {
    element,
    write,
    invalid: (bad) => number.setAttribute("aria-invalid", String(bad)),
    disable: (off) => {
      number.disabled = off;
      slider.disabled = off;
    },
    read: () => {
      const value = Number(number.value);
      const whole = spec.type !== "integer" || Number.isInteger(value);
      if (number.value.trim() === "" || Number.isNaN(value) || !whole || value < spec.minimum || value > spec.maximum) {
        const kind = spec.type === "integer" ? "a whole number " : "";
        throw new Error(`${labelFor(name, spec)} must be ${kind}${rangeText(spec)}.`);
      }
      return value;
    },
  };
}

function seedWidget(form, spec) {
  const id = "set-seed";
  const input = h("input", {
    type: "text", id, name: "seed", inputmode: "numeric", autocomplete: "off", placeholder: "random",
    "aria-describedby": `${id}-hint`,
  });
  const dice = h(
    "button",
    {
      type: "button", class: "button secondary small", id: "seed-dice", "aria-label": "Pick a random seed",
      title: "Pick a random seed",
      onclick: () => {
        input.value = String(crypto.getRandomValues(new Uint32Array(1))[0]);
        input.dispatchEvent(new Event("input", { bubbles: true }));
      },
    },
    diceIcon(),
  );
  const reuse = h(
    "button",
    { type: "button", class: "button secondary small", id: "seed-reuse", disabled: true, onclick: () => form.reuseSeed() },
    "Reuse last",
  );
  const element = h(
    "div",
    { class: "setting wide" },
    h("label", { class: "label", for: id }, labelFor("seed", spec)),
    h("div", { class: "row" }, input, dice, reuse),
    hintFor("seed", spec, `${id}-hint`),
  );
  return {
    element,
    write: (value) => (input.value = value === null || value === undefined ? "" : String(value)),
    invalid: (bad) => input.setAttribute("aria-invalid", String(bad)),
    read: () => {
      const text = input.value.trim();
      if (text === "") return null;
      if (!/^\d+$/.test(text) || BigInt(text) > MAX_SEED) {
        throw new Error("Seed must be a whole number from 0 to 18446744073709551615, or empty for a random one.");
      }
      return String(BigInt(text)); // a string: see json.js
    },
  };
}

function segmentedWidget(name, spec) {
  const values = [];
  for (let value = spec.minimum; value <= spec.maximum; value++) values.push(value);
  const radios = values.map((value) =>
    h("input", { type: "radio", name, value: String(value), id: `set-${name}-${value}`, class: "visually-hidden" }),
  );
  const element = h(
    "fieldset",
    { class: "setting" },
    h("legend", { class: "label" }, labelFor(name, spec)),
    h(
      "div",
      { class: "radio-row" },
      values.map((value, index) => [radios[index], h("label", { for: `set-${name}-${value}` }, String(value))]),
    ),
    hintFor(name, spec),
  );
  const write = (value) => radios.forEach((radio) => (radio.checked = Number(radio.value) === Number(value)));
  write(spec.default ?? spec.minimum);
  return { element, write, read: () => Number(radios.find((radio) => radio.checked)?.value ?? spec.default) };
}

function selectWidget(name, spec, allowSameAsInput) {
  const id = `set-${name}`;
  const options = spec.enum.map((value) => h("option", { value }, CHOICE_LABELS[value] || value));
  if (allowSameAsInput) options.unshift(h("option", { value: "" }, "Same as input"));
  const select = h("select", { id, name, "aria-describedby": `${id}-hint` }, options);
  const write = (value) => (select.value = value ?? "");
  write(spec.default);
  const element = h(
    "div",
    { class: "setting" },
    h("label", { class: "label", for: id }, labelFor(name, spec)),
    select,
    hintFor(name, spec, `${id}-hint`),
  );
  return { element, write, read: () => (select.value === "" ? null : select.value) };
}

function checkboxWidget(name, spec) {
  const id = `set-${name}`;
  const box = h("input", { type: "checkbox", id, name, "aria-describedby": `${id}-hint` });
  box.checked = Boolean(spec.default);
  const element = h(
    "div",
    { class: "setting wide" },
    h("div", { class: "setting check" }, box, h("label", { class: "label", for: id }, labelFor(name, spec))),
    hintFor(name, spec, `${id}-hint`),
  );
  return { element, write: (value) => (box.checked = Boolean(value)), read: () => box.checked };
}

function textWidget(name, spec) {
  const id = `set-${name}`;
  const input = h("input", { type: "text", id, name, "aria-describedby": `${id}-hint` });
  if (spec.default !== undefined && spec.default !== null) input.value = String(spec.default);
  const element = h(
    "div",
    { class: "setting" },
    h("label", { class: "label", for: id }, labelFor(name, spec)),
    input,
    hintFor(name, spec, `${id}-hint`),
  );
  const read = () => {
    if (input.value === "") return null;
    return spec.type === "integer" || spec.type === "number" ? Number(input.value) : input.value;
  };
  return { element, write: (value) => (input.value = value ?? ""), read };
}

function loraWidget(spec) {
  const limit = spec.maxItems ?? 4;
  const scaleSpec = spec.items?.properties?.scale || { default: 1, minimum: -4, maximum: 4 };
  const list = h("div", { class: "lora-list" });
  const add = h("button", { type: "button", class: "button secondary small", id: "lora-add" }, "Add a LoRA");
  const rows = () => [...list.children];
  const renumber = () => {
    rows().forEach((row, index) => {
      row.querySelector(".lora-path").setAttribute("aria-label", `LoRA ${index + 1}: path`);
      row.querySelector(".lora-scale").setAttribute("aria-label", `LoRA ${index + 1}: scale`);
      row.querySelector(".lora-remove").setAttribute("aria-label", `Remove LoRA ${index + 1}`);
    });
    add.hidden = rows().length >= limit;
  };
  const addRow = (path = "", scale = scaleSpec.default ?? 1) => {
    const row = h(
      "div",
      { class: "lora-row" },
      h("input", {
        type: "text", class: "lora-path", value: path, list: "lora-names", placeholder: "name, file id, URL or owner/repo",
      }),
      h("input", {
        type: "number", class: "lora-scale", value: String(scale), step: "0.05",
        min: String(scaleSpec.minimum), max: String(scaleSpec.maximum),
      }),
      h("button", {
        type: "button", class: "button ghost small lora-remove",
        onclick: (event) => {
          event.currentTarget.parentElement.remove();
          renumber();
          list.dispatchEvent(new Event("change", { bubbles: true }));
        },
      }, "Remove"),
    );
    list.append(row);
    renumber();
  };
  add.addEventListener("click", () => {
    addRow();
    list.lastElementChild.querySelector("input").focus();
  });
  const element = h(
    "div",
    { class: "setting wide" },
    h("span", { class: "label" }, labelFor("loras", spec)),
    list,
    h("div", {}, add),
    hintFor("loras", spec),
    h("datalist", { id: "lora-names" }), // the caller's registered LoRAs, offered while typing
  );
  return {
    element,
    write: (value) => {
      list.replaceChildren();
      (value || []).forEach((lora) => addRow(lora.path, lora.scale ?? 1));
      renumber();
    },
    read: () =>
      rows()
        .map((row) => ({ path: row.querySelector(".lora-path").value.trim(), scale: Number(row.querySelector(".lora-scale").value) }))
        .filter((lora) => lora.path)
        .map((lora) => {
          if (Number.isNaN(lora.scale) || lora.scale < scaleSpec.minimum || lora.scale > scaleSpec.maximum) {
            throw new Error(`LoRA scale must be ${rangeText(scaleSpec)}.`);
          }
          return lora;
        }),
  };
}

function diceIcon() {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("class", "icon");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute(
    "d",
    "M5 3h14a2 2 0 0 1 2 2v14a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2Zm2.5 3a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3Zm9 0a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3ZM12 10.5a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3ZM7.5 15a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3Zm9 0a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3Z",
  );
  svg.append(path);
  return svg;
}

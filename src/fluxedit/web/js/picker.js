// The image inputs: the main image (drop, file picker, paste, URL) and up to three reference images.
// Several images chosen at once (a multi-select or a drop of several files) are a batch: one edit over each.

import { $, formatBytes, h } from "./dom.js";
import { SourceError, sourceFromFile, sourceFromUrl } from "./sources.js";

export const MAX_REFERENCES = 3;

export class ImagePicker {
  constructor(onChange) {
    this.main = null;
    this.refs = [];
    this.batch = []; // two or more images to run as one batch; main is then the first of them
    this.onChange = onChange;
    this.#wireMain();
    this.#wireRefs();
    // An image on the clipboard (a screenshot, say) pasted anywhere but in a text field.
    document.addEventListener("paste", (event) => this.#pasteImage(event));
  }

  setMain(source) {
    this.batch = [];
    this.main = source;
    this.#showMain();
    this.#error("image-error", "");
    this.onChange();
  }

  // Several images, each edited the same way: main stands for them (its size prices the form, its format
  // drives the settings) until the batch is replaced or removed.
  setBatch(sources) {
    this.batch = sources;
    this.main = sources[0];
    this.#showMain();
    this.#error("image-error", "");
    this.onChange();
  }

  clearMain() {
    this.batch = [];
    this.main = null;
    $("image-file").value = "";
    this.#showMain();
    this.onChange();
  }

  setRefs(sources) {
    this.refs = sources.slice(0, MAX_REFERENCES);
    this.#showRefs();
    this.onChange();
  }

  async chooseFiles(files, { asReference = false } = {}) {
    const list = [...files];
    if (!list.length) return;
    if (!asReference && list.length > 1) {
      await this.#chooseBatch(list);
      return;
    }
    if (!asReference) {
      const first = list.shift();
      const source = await this.#check(() => sourceFromFile(first), "image-error");
      if (source) this.setMain(source);
    }
    for (const file of list) {
      if (this.refs.length >= MAX_REFERENCES) {
        this.#error("ref-error", `At most ${MAX_REFERENCES} reference images; “${file.name}” was left out.`);
        break;
      }
      const source = await this.#check(() => sourceFromFile(file), "ref-error");
      if (source) this.#addRef(source);
    }
  }

  // Each file checked as a single one is; those refused are named and left out of the batch.
  async #chooseBatch(files) {
    const sources = [];
    const refused = [];
    for (const file of files) {
      try {
        sources.push(await sourceFromFile(file));
      } catch (error) {
        if (!(error instanceof SourceError)) throw error;
        refused.push(error.message);
      }
    }
    if (sources.length > 1) this.setBatch(sources);
    else if (sources.length === 1) this.setMain(sources[0]);
    if (refused.length) this.#error("image-error", `Left out: ${refused.join(" ")}`);
  }

  async chooseUrl(text, { asReference = false } = {}) {
    const errorId = asReference ? "ref-error" : "image-error";
    const field = $(asReference ? "ref-url" : "image-url");
    field.setAttribute("aria-busy", "true");
    const source = await this.#check(() => sourceFromUrl(text), errorId);
    field.removeAttribute("aria-busy");
    field.setAttribute("aria-invalid", source ? "false" : "true");
    if (!source) return;
    field.value = "";
    if (asReference) this.#addRef(source);
    else this.setMain(source);
    if (source.previewFailed) {
      this.#error(errorId, "This browser could not load that image; the server will try to fetch it when you run.");
    }
  }

  async #check(make, errorId) {
    try {
      const source = await make();
      this.#error(errorId, "");
      return source;
    } catch (error) {
      if (!(error instanceof SourceError)) throw error;
      this.#error(errorId, error.message);
      return null;
    }
  }

  #addRef(source) {
    if (this.refs.length >= MAX_REFERENCES) return;
    this.refs.push(source);
    this.#showRefs();
    this.onChange();
  }

  #error(id, message) {
    $(id).textContent = message;
  }

  #wireMain() {
    const zone = $("dropzone");
    $("image-file").addEventListener("change", (event) => this.chooseFiles(event.target.files));
    $("chosen-clear").addEventListener("click", () => this.clearMain());
    for (const name of ["dragenter", "dragover"]) {
      zone.addEventListener(name, (event) => {
        event.preventDefault();
        zone.classList.add("dragging");
      });
    }
    zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("dragging");
      this.#drop(event.dataTransfer, false);
    });
    this.#wireUrlField("image-url", "image-url-use", false);
  }

  #wireRefs() {
    $("ref-file").addEventListener("change", (event) => {
      this.chooseFiles(event.target.files, { asReference: true });
      event.target.value = "";
    });
    const area = $("refs-add").parentElement;
    area.addEventListener("dragover", (event) => event.preventDefault());
    area.addEventListener("drop", (event) => {
      event.preventDefault();
      this.#drop(event.dataTransfer, true);
    });
    this.#wireUrlField("ref-url", "ref-url-use", true);
  }

  #wireUrlField(fieldId, buttonId, asReference) {
    const field = $(fieldId);
    const apply = () => field.value.trim() && this.chooseUrl(field.value, { asReference });
    $(buttonId).addEventListener("click", apply);
    field.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        apply();
      }
    });
    field.addEventListener("input", () => field.removeAttribute("aria-invalid"));
    // A pasted URL is used at once: pasting is the whole gesture.
    field.addEventListener("paste", () => setTimeout(apply, 0));
  }

  #drop(transfer, asReference) {
    if (transfer.files.length) {
      this.chooseFiles(transfer.files, { asReference });
      return;
    }
    // An image dragged from another page arrives as a link.
    const link = (transfer.getData("text/uri-list") || transfer.getData("text/plain")).split("\n")[0];
    if (link) this.chooseUrl(link, { asReference });
  }

  #pasteImage(event) {
    const target = event.target;
    if (target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement) return;
    const files = [...(event.clipboardData?.files || [])];
    if (!files.length) return;
    event.preventDefault();
    this.chooseFiles(files, { asReference: this.main !== null && this.refs.length < MAX_REFERENCES });
  }

  #showMain() {
    const source = this.main;
    $("dropzone-empty").hidden = source !== null;
    $("chosen").hidden = source === null;
    if (!source) return;
    const thumb = $("chosen-thumb");
    thumb.src = source.displayUrl;
    thumb.hidden = Boolean(source.previewFailed);
    const several = this.batch.length > 1;
    const names = this.batch.map((item) => item.name).join(", ");
    $("chosen-name").textContent = several ? `${this.batch.length} images` : source.name;
    $("chosen-name").title = several ? names : source.name;
    $("chosen-meta").textContent = several
      ? `One batch: the same edit on each · ${formatBytes(this.batch.reduce((sum, item) => sum + item.bytes, 0))}`
      : describe(source);
    $("chosen-batch").hidden = !several;
    $("chosen-batch").replaceChildren(
      ...(several ? this.batch : []).map((item) => h("li", {}, h("img", { src: item.displayUrl, alt: item.name, title: item.name }))),
    );
  }

  #showRefs() {
    const list = $("refs");
    list.replaceChildren(
      ...this.refs.map((source, index) =>
        h(
          "li",
          {},
          h("img", { src: source.displayUrl, alt: `Reference ${index + 1}: ${source.name}`, title: source.name }),
          h(
            "button",
            {
              type: "button",
              class: "remove",
              "aria-label": `Remove reference ${index + 1}`,
              onclick: () => {
                this.refs.splice(index, 1);
                this.#showRefs();
                this.onChange();
              },
            },
            "×",
          ),
        ),
      ),
    );
    $("refs-add").hidden = this.refs.length >= MAX_REFERENCES;
  }
}

export function describe(source) {
  const parts = [];
  if (source.width) parts.push(`${source.width}×${source.height}`);
  else parts.push("size unknown until the server reads it");
  if (source.format) parts.push(source.format.toUpperCase());
  if (source.bytes) parts.push(formatBytes(source.bytes));
  if (source.kind === "output") parts.push("an earlier result");
  return parts.join(" · ");
}

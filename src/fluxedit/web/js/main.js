// The playground: wires the image inputs, prompt and settings to a run, its result, the edit chain,
// the history and the snippets. Everything goes through the public API (api.js).

import { ApiError, call, onUnauthorized } from "./api.js";
import { BatchView, cancelBatch, createBatch, followBatch } from "./batch.js";
import { EditChain } from "./chain.js";
import { $, formatSeconds, formatUsd, toast } from "./dom.js";
import { FullResolution } from "./full-size.js";
import { History } from "./history.js";
import { KeyField } from "./keys.js";
import { MaskTool } from "./mask-tool.js";
import { OutputView } from "./output.js";
import { ImagePicker } from "./picker.js";
import { wirePrompt } from "./prompt.js";
import { sourceFromReference } from "./restore.js";
import { cancelPrediction, createPrediction, follow, reference } from "./runner.js";
import { SettingsForm } from "./settings.js";
import { megapixelUnits, outputSize, predictionCost } from "./sizes.js";
import { curlSnippet, pythonSnippet, wireSnippetTabs } from "./snippets.js";
import { sourceFromOutput } from "./sources.js";
import { ActualSizeZoom } from "./zoom.js";

const MODEL = "flux-kontext-dev";
let card = null;
let settings = null;
let current = null; // the run in progress: {id, cancelled}, or {batch, cancelled} for a batch
let keys, picker, prompt, output, chain, history, batchView, mask, fullResolution, zoom;

async function start() {
  keys = new KeyField(() => {
    output.dismissFailure(); // a run refused for its key may work now
    history.load();
    loadLoraNames();
    refresh();
  });
  picker = new ImagePicker(refresh);
  mask = new MaskTool(refresh);
  fullResolution = new FullResolution(refresh);
  zoom = new ActualSizeZoom();
  prompt = wirePrompt(refresh, () => $("edit-form").requestSubmit());
  output = new OutputView({ onEdit: editResult, onReuseSeed: reuseSeed });
  batchView = new BatchView();
  chain = new EditChain(openStep);
  history = new History(openPrediction, showAverage);
  onUnauthorized(() => refresh()); // the snippets now show the key header
  wireSnippetTabs();
  wireCopyButtons();
  $("edit-form").addEventListener("submit", (event) => {
    event.preventDefault();
    run();
  });
  // "Write a prompt" and the like are about the form as it was: changing it answers them.
  $("edit-form").addEventListener("input", () => ($("run-error").textContent = ""));
  $("cancel").addEventListener("click", cancel);
  $("batch-cancel").addEventListener("click", cancelTheBatch);
  try {
    card = await call("GET", `/v1/models/${MODEL}`);
  } catch (error) {
    $("run-error").textContent = `The model card could not be loaded: ${error.message}`;
    output.failed(`The page cannot run edits: the model card could not be loaded (${error.message}).`);
    return;
  }
  showModel(card);
  settings = new SettingsForm($("settings-fields"), card.request_schema, refresh);
  refresh();
  loadLoraNames();
  await history.load();
  document.body.dataset.ready = "true"; // the page is wired: tests wait for this
}

// Suggestions only: a server without the LoRA registry (or a missing key) just offers none.
async function loadLoraNames() {
  try {
    const answer = await call("GET", "/v1/loras");
    settings.setLoraNames((answer.data || []).map((lora) => lora.name));
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
  }
}

function showModel(model) {
  $("model-title").textContent = model.title;
  $("model-slug").textContent = model.slug;
  if (model.description) $("model-description").textContent = model.description;
  $("model-price").textContent = `${formatUsd(model.cost.price_per_image)} / image`;
  $("model-price").title = model.cost.rule;
}

function showAverage(seconds, count) {
  $("avg-run-time").textContent = seconds === null ? "–" : formatSeconds(seconds);
  $("avg-run-time").title = count ? `Over your last ${count} successful runs` : "";
}

// Everything that follows the form: price, output size, snippets.
function refresh() {
  if (!settings) return;
  const main = picker.main;
  const format = main?.format ?? null;
  if (settings.inputFormat !== format) settings.setInputFormat(format); // calls refresh again, once
  const values = { ...settings.read().values, ...fullResolution.values() };
  const defaults = card.request_schema.properties;
  const mode = values.resolution_mode ?? defaults.resolution_mode.default;
  const count = values.num_images ?? defaults.num_images.default;
  const size = outputSize(mode, main?.width, main?.height);
  const price = card.cost.price_per_image;
  const imageWord = `${count} image${count > 1 ? "s" : ""}`;
  const batch = picker.batch;
  mask.follow(main, batch.length);
  fullResolution.show(batch.length > 1 ? batch : main ? [main] : [], size);
  if (batch.length > 1) {
    // Each image of the batch is priced as its own prediction: its own output size.
    const sizes = batch.map((source) => outputSize(mode, source.width, source.height));
    const known = sizes.every(Boolean);
    const total = sizes.reduce((sum, one) => sum + predictionCost(...(one || [1024, 1024]), count, price), 0);
    $("run-price").textContent = `${known ? "" : "≈ "}${formatUsd(Math.round(total * 1e6) / 1e6)}`;
    $("run-price-detail").textContent = `${batch.length} images · ${imageWord} each`;
    $("run-price").title = "The sum of each image's price";
  } else if (size) {
    const [width, height] = size;
    $("run-price").textContent = formatUsd(predictionCost(width, height, count, price));
    const full = fullResolution.on && main.width ? `${main.width}×${main.height} · priced as ` : "";
    $("run-price-detail").textContent = `${full}${width}×${height} · ${imageWord}`;
    $("run-price").title = `${megapixelUnits(width, height)} started MP × ${imageWord} × ${formatUsd(price)}`;
  } else {
    $("run-price").textContent = `≈ ${formatUsd(predictionCost(1024, 1024, count, price))}`;
    $("run-price-detail").textContent = main ? "the exact size follows the image" : imageWord;
  }
  const hint = $("set-resolution_mode-hint");
  if (hint) hint.textContent = size ? `The output will be ${size[0]}×${size[1]} pixels.` : "Sized from the input image.";
  const form = {
    origin: location.origin, keyed: keys.keyed, main, refs: picker.refs, prompt: prompt.get(), values,
    masked: mask.masked,
  };
  $("code-curl").textContent = curlSnippet(form);
  $("code-python").textContent = pythonSnippet(form);
}

function problemWithForm() {
  if (!picker.main) {
    $("image-error").textContent = "Choose an image to edit first.";
    return $("image-file");
  }
  if (!prompt.get()) {
    $("run-error").textContent = "Write a prompt: what should change?";
    return $("prompt");
  }
  const maskProblem = mask.problem();
  if (maskProblem) {
    $("mask-error").textContent = maskProblem;
    return $("mask-brush");
  }
  const sizeProblem = fullResolution.problem(picker.batch.length > 1 ? picker.batch : [picker.main]);
  if (sizeProblem) {
    $("run-error").textContent = sizeProblem;
    return $("full-size");
  }
  const { error } = settings.read();
  if (error) {
    $("settings").open = true;
    $("run-error").textContent = error;
    return document.querySelector("#settings-fields [aria-invalid='true']");
  }
  return null;
}

async function run() {
  if (current || !settings) return;
  $("run-error").textContent = "";
  const problem = problemWithForm();
  if (problem) {
    problem.focus();
    return;
  }
  if (picker.batch.length > 1) {
    await runBatch();
    return;
  }
  batchView.hide();
  const main = picker.main;
  const refs = [...picker.refs];
  const values = { ...settings.read().values, ...fullResolution.values() };
  const text = prompt.get();
  const maskUsed = mask.snapshot();
  current = { id: null, cancelled: false };
  const run = current;
  setRunning(true);
  zoom.reset();
  output.running();
  // On a narrow screen the output sits below the form: bring it into view.
  if (matchMedia("(max-width: 980px)").matches) $("output-title").scrollIntoView({ block: "start" });
  const started = performance.now();
  const elapsed = () => (performance.now() - started) / 1000;
  const timer = setInterval(() => output.tick(elapsed()), 100);
  try {
    const input = { prompt: text, image_url: await reference(main) };
    if (refs.length) input.image_urls = await Promise.all(refs.map(reference));
    const maskUrl = await mask.reference();
    if (maskUrl) input.mask_url = maskUrl;
    Object.assign(input, values);
    if (run.cancelled) {
      output.finished({ status: "cancelled" }, null, elapsed());
      return;
    }
    run.id = await createPrediction(input);
    if (run.cancelled) await cancelPrediction(run.id);
    const prediction = await follow(run.id, {
      status: (status) => output.status(status),
      progress: (step, total) => output.progress(step, total),
      preview: (image) => output.preview(image),
    });
    output.tick(elapsed());
    output.finished(prediction, main.displayUrl, elapsed());
    if (prediction.status === "success") {
      const step = chain.record(main, refs, input, prediction);
      chain.steps[step].mask = maskUsed; // reopening the step brings its mask back
      settings.setLastSeed(prediction.seed);
    }
  } catch (error) {
    output.failed(failureMessage(error, run.id));
    if (!(error instanceof ApiError)) throw error;
  } finally {
    clearInterval(timer);
    current = null;
    setRunning(false);
    history.load();
  }
}

// Several images: one batch, with the form's settings (and references) as the template of every image.
async function runBatch() {
  const sources = [...picker.batch];
  const values = { ...settings.read().values, ...fullResolution.values() };
  const template = { prompt: prompt.get(), ...values };
  current = { batch: null, cancelled: false };
  const run = current;
  setRunning(true);
  batchView.start(sources);
  if (matchMedia("(max-width: 980px)").matches) $("output-title").scrollIntoView({ block: "start" });
  try {
    if (picker.refs.length) template.image_urls = await Promise.all(picker.refs.map(reference));
    const created = await createBatch(sources, template, (count) => batchView.uploaded(count, sources.length));
    run.batch = created.id;
    if (run.cancelled) await cancelBatch(run.batch);
    await followBatch(created.id, (view, items) => batchView.update(view, items));
  } catch (error) {
    batchView.failed(failureMessage(error, run.batch));
    if (!(error instanceof ApiError)) throw error;
  } finally {
    current = null;
    setRunning(false);
    history.load();
  }
}

async function cancelTheBatch() {
  const run = current;
  if (!run || !("batch" in run)) return;
  run.cancelled = true;
  $("batch-cancel").disabled = true;
  if (run.batch === null) return; // still uploading: runBatch cancels it once created
  try {
    await cancelBatch(run.batch); // the polling then sees every prediction end
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    $("batch-cancel").disabled = false;
  }
}

async function cancel() {
  const run = current;
  if (!run) return;
  run.cancelled = true;
  $("cancel").disabled = true;
  $("progress-text").textContent = "Cancelling…";
  if (run.id === null) return; // still uploading: run() stops before creating it
  try {
    await cancelPrediction(run.id); // the stream then ends with status "cancelled"
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    if (current !== run) return; // it ended meanwhile: its own outcome is shown
    $("progress-text").textContent = `Could not cancel: ${error.message}`;
    $("cancel").disabled = false;
  }
}

// What the output panel says when a run ends without a prediction to show.
function failureMessage(error, predictionId) {
  const what = predictionId === null ? "The run could not start" : "Following the run failed";
  const reason = error instanceof ApiError ? error.message : `the page hit an error (${error.message})`;
  const fix = error.status === 401 ? " Set a valid API key with the API key button at the top." : "";
  return `${what}: ${reason.replace(/\.$/, "")}.${fix}`;
}

function setRunning(running) {
  $("run").disabled = running;
  $("run").querySelector("span").textContent = running ? "Running…" : "Run";
  document.body.classList.toggle("running", running);
}

function reuseSeed(seed) {
  settings.reuseSeed(seed);
  toast(`Seed ${seed} will be used for the next run.`);
}

// "Edit this result": the output becomes the next input; the chain goes on from its step.
function editResult(prediction, selected) {
  const label = `Result: ${shorten(prediction.input?.prompt ?? "earlier edit")}`;
  const source = sourceFromOutput(prediction.output[selected], prediction.width, prediction.height, label);
  const step = chain.indexOf(prediction.id);
  if (step >= 0) chain.resultSource(source, step, selected);
  mask.carryTo(source);
  picker.setMain(source);
  prompt.set("");
  $("prompt").focus();
  toast("The result is the new input: describe the next change.");
}

function openStep(step, index) {
  batchView.hide();
  zoom.reset();
  mask.restoreWith(step.source, step.mask ?? null);
  picker.setMain(step.source);
  if (index === 0) {
    output.clear();
    return;
  }
  picker.setRefs(step.refs);
  prompt.set(step.input.prompt);
  fullResolution.load(step.input);
  settings.load(step.input); // refreshes the form, full resolution included
  output.show(step.prediction, step.source.displayUrl, step.selected);
}

// A history entry: its result, and its inputs back in the form so it can be re-run or changed.
async function openPrediction(prediction) {
  if (current) {
    toast("A run is going: wait for it or cancel it first.");
    return;
  }
  const input = prediction.input || {};
  let main = null;
  let refs = [];
  let maskPicture = null;
  try {
    main = input.image_url ? await sourceFromReference(input.image_url) : null;
    refs = await Promise.all((input.image_urls || []).map(sourceFromReference));
    if (main && input.mask_url) maskPicture = await mask.pictureFrom(await sourceFromReference(input.mask_url));
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    toast("Its input image is no longer on the server.");
  }
  batchView.hide();
  zoom.reset();
  if (main) mask.restoreWith(main, maskPicture);
  if (main) picker.setMain(main);
  picker.setRefs(refs);
  prompt.set(input.prompt ?? "");
  fullResolution.load(input);
  settings.load(input); // refreshes the form, full resolution included
  if (prediction.status === "success" || prediction.status === "error" || prediction.status === "cancelled") {
    output.show(prediction, main?.displayUrl ?? null);
  }
  $("playground").scrollIntoView({ block: "start" });
}

function shorten(text) {
  return text.length > 48 ? text.slice(0, 46) + "…" : text;
}

function wireCopyButtons() {
  for (const button of document.querySelectorAll("[data-copy]")) {
    button.addEventListener("click", async () => {
      const text = $(button.dataset.copy).textContent;
      try {
        await navigator.clipboard.writeText(text);
        toast("Copied.");
      } catch {
        const range = document.createRange();
        range.selectNodeContents($(button.dataset.copy));
        getSelection().removeAllRanges();
        getSelection().addRange(range);
        toast("Selected: press Ctrl+C to copy.");
      }
    });
  }
}

start();

// The "API & SDK" panel: curl and Python for exactly what the form holds, so a program can repeat it.

import { $ } from "./dom.js";
import { stringifyJson } from "./json.js";

const MARK = "\uE000"; // brackets a shell variable inside the JSON until it is written out
const KEY_HEADER = '-H "Authorization: Bearer $FLUXEDIT_API_KEY"';

// form: {origin, keyed, main, refs, prompt, values, masked}; a painted mask is the file "Save mask.png" saves.
export function curlSnippet(form) {
  const { origin, keyed } = form;
  const lines = [];
  const uploads = [];
  const refFor = (source, variable) => {
    if (!source) return "<choose an image>";
    if (source.kind !== "file") return source.url;
    uploads.push([variable, source.name]);
    return `${MARK}${variable}${MARK}`;
  };
  const input = {
    prompt: form.prompt || "<describe the edit>",
    image_url: refFor(form.main, "FILE"),
    ...(form.refs.length ? { image_urls: form.refs.map((ref, i) => refFor(ref, `REF${i + 1}`)) } : {}),
    ...(form.masked ? { mask_url: refFor({ kind: "file", name: "mask.png" }, "MASK") } : {}),
    ...form.values,
  };
  if (uploads.length) {
    lines.push(`# Upload the local images${form.masked ? " and the mask" : ""} (an image URL can be sent as it is).`);
    for (const [variable, name] of uploads) {
      lines.push(`${variable}=$(curl -s ${origin}/v1/files${keyed ? ` ${KEY_HEADER}` : ""} -F ${shellQuote(`file=@${name}`)} | jq -r .id)`);
    }
    lines.push("");
  }
  let json = stringifyJson({ model: "flux-kontext-dev", input }, 2);
  json = json.replace(/"(data:image\/\w+;base64,)[^"]{40,}"/g, '"$1…(shortened here)"');
  // Unquoted here-document only when it must expand $FILE: then $, ` and \ in the text are escaped.
  const heredoc = uploads.length ? "JSON" : "'JSON'";
  if (uploads.length) json = json.replace(/[\\`$]/g, "\\$&");
  json = json.replace(new RegExp(`${MARK}(\\w+)${MARK}`, "g"), "$$$1");
  lines.push("# Create the prediction: the answer holds its id.");
  lines.push(`ID=$(curl -s ${origin}/v1/prediction \\`);
  if (keyed) lines.push(`  ${KEY_HEADER} \\`);
  lines.push(`  -H "Content-Type: application/json" -d @- <<${heredoc} | jq -r .predictionID`, json, "JSON", ")", "");
  lines.push("# Get the result: the server holds the answer until it is ready (up to 60 s).");
  lines.push(`curl -s "${origin}/v1/prediction/$ID?wait=60"${keyed ? ` ${KEY_HEADER}` : ""} | jq .output`);
  return lines.join("\n");
}

export function pythonSnippet(form) {
  const args = [pyValue(sourceArg(form.main)), pyValue(form.prompt || "<describe the edit>")];
  if (form.refs.length) args.push(`references=${pyValue(form.refs.map(sourceArg))}`);
  if (form.masked) args.push('mask="mask.png"'); // the painted mask, as "Save mask.png" saves it; the SDK uploads it
  for (const [name, value] of Object.entries(form.values)) args.push(`${name}=${name === "seed" ? value : pyValue(value)}`);
  const keyNote = form.keyed ? "# The key comes from $FLUXEDIT_API_KEY (or pass api_key=...)." : "# This server needs no key; with keys, set $FLUXEDIT_API_KEY.";
  return [
    "from fluxedit import Client",
    "",
    keyNote,
    `with Client(${pyValue(form.origin)}) as client:`,
    "    images = client.edit(",
    ...args.map((arg) => `        ${arg},`),
    "    )",
    "    for image in images:",
    '        print(image.url, image.metadata and image.metadata["seed"])',
    '        image.save(".")  # a folder: the file keeps its own name',
  ].join("\n");
}

function sourceArg(source) {
  if (!source) return "<choose an image>";
  if (source.kind === "file") return source.name; // the SDK uploads a path itself
  return source.url.startsWith("data:") ? source.url.slice(0, 40) + "…(shortened here)" : source.url;
}

function pyValue(value) {
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (Array.isArray(value)) return `[${value.map(pyValue).join(", ")}]`;
  if (typeof value === "object") return `{${Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${pyValue(v)}`).join(", ")}}`;
  return JSON.stringify(value); // a JSON string literal is a valid Python string literal
}

function shellQuote(text) {
  return /^[\w@./=:-]+$/.test(text) ? text : `'${text.replace(/'/g, "'\\''")}'`;
}

export function wireSnippetTabs() {
  const tabs = [$("tab-curl"), $("tab-python")];
  const select = (chosen) => {
    for (const tab of tabs) {
      const on = tab === chosen;
      tab.setAttribute("aria-selected", String(on));
      tab.tabIndex = on ? 0 : -1;
      $(tab.getAttribute("aria-controls")).hidden = !on;
    }
  };
  tabs.forEach((tab, index) => {
    tab.addEventListener("click", () => select(tab));
    tab.addEventListener("keydown", (event) => {
      if (event.key !== "ArrowLeft" && event.key !== "ArrowRight") return;
      const next = tabs[(index + (event.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length];
      select(next);
      next.focus();
    });
  });
}

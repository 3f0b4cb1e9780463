// One prediction, from the page's side: upload local images, create it, follow its event stream,
// cancel it. Only public endpoints: POST /v1/files, POST /v1/prediction, GET .../stream, POST .../cancel.

import { ApiError, call } from "./api.js";
import { readEvents } from "./sse.js";

const TERMINAL = new Set(["success", "error", "cancelled"]);

// The string the API takes for a source: an uploaded file's id, or the URL. Uploads happen once.
export async function reference(source) {
  if (source.reference) return source.reference;
  const form = new FormData();
  form.append("file", source.file, source.name);
  const uploaded = await call("POST", "/v1/files", { form });
  source.reference = uploaded.id;
  return source.reference;
}

export async function createPrediction(input) {
  const answer = await call("POST", "/v1/prediction", { json: { model: "flux-kontext-dev", input } });
  return answer.predictionID;
}

export function cancelPrediction(id) {
  return call("POST", `/v1/prediction/${encodeURIComponent(id)}/cancel`);
}

// Follow a prediction to its end; handlers get status, progress and preview events as they come.
export async function follow(id, handlers, signal) {
  const path = `/v1/prediction/${encodeURIComponent(id)}`;
  try {
    const response = await call("GET", `${path}/stream?previews=true`, { raw: true, signal });
    for await (const { event, data } of readEvents(response)) {
      if (event === "status") handlers.status?.(data.status);
      else if (event === "progress") handlers.progress?.(data.step, data.total);
      else if (event === "preview") handlers.preview?.(data.image, data.step);
      else if (event === "output") return data;
    }
  } catch (error) {
    if (error.name === "AbortError" || (error instanceof ApiError && error.status !== 0)) throw error;
    // The stream broke (a proxy, a dropped connection): long-polling gets the same end.
  }
  while (true) {
    const prediction = await call("GET", `${path}?wait=30`, { signal });
    handlers.status?.(prediction.status);
    if (TERMINAL.has(prediction.status)) return prediction;
  }
}

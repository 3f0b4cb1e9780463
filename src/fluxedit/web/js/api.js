// The page's only way to the server: the public HTTP API (docs/api.md), with the key when one is set.

import { parseJson, stringifyJson } from "./json.js";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let apiKey = null;
const unauthorizedListeners = new Set();

export function setApiKey(key) {
  apiKey = key || null;
}

export function hasApiKey() {
  return apiKey !== null;
}

export function onUnauthorized(listener) {
  unauthorizedListeners.add(listener);
}

function authHeaders() {
  // A header, never the URL: keys must not end up in server logs or the browser's history.
  return apiKey ? { Authorization: `Bearer ${apiKey}` } : {};
}

// call("GET", "/v1/prediction") -> the parsed JSON answer, or an ApiError with the server's message.
// With raw: true a successful answer is returned as the Response itself (for streams and blobs).
export async function call(method, path, { json, form, signal, raw = false } = {}) {
  const headers = authHeaders();
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = stringifyJson(json);
  } else if (form) {
    body = form;
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, signal, cache: "no-store" });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "The server could not be reached. Is fluxedit serve still running?");
  }
  if (raw && response.ok) return response;
  const text = await response.text();
  let data = null;
  try {
    data = text ? parseJson(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) throw failure(response, data);
  return data;
}

function failure(response, data) {
  let message = data && (data.error || data.detail || data.message);
  if (typeof message !== "string") message = `The server answered ${response.status} ${response.statusText}.`;
  const error = new ApiError(response.status, message);
  if (response.status === 401) unauthorizedListeners.forEach((listener) => listener(error));
  return error;
}

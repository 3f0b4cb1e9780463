// The API key: asked for when the server answers 401, kept in this browser's local storage,
// and sent only in the Authorization header to this server.

import { onUnauthorized, setApiKey } from "./api.js";
import { $ } from "./dom.js";

const STORAGE_KEY = "fluxedit.apiKey";

export class KeyField {
  constructor(onSaved) {
    this.onSaved = onSaved;
    this.required = false;
    const stored = readStored();
    setApiKey(stored);
    $("api-key").value = stored || "";
    this.#label();
    $("key-toggle").addEventListener("click", () => this.#open($("key-panel").hidden));
    $("key-panel").addEventListener("submit", (event) => {
      event.preventDefault();
      this.save($("api-key").value.trim());
    });
    $("key-forget").addEventListener("click", () => this.save(""));
    onUnauthorized((error) => this.#refused(error));
  }

  get keyed() {
    return this.required || readStored() !== null;
  }

  save(key) {
    try {
      if (key) localStorage.setItem(STORAGE_KEY, key);
      else localStorage.removeItem(STORAGE_KEY);
    } catch {
      // Storage can be off (private windows): the key then lasts until the page is closed.
    }
    setApiKey(key);
    $("api-key").value = key;
    $("key-error").textContent = "";
    this.#label();
    if (key) this.#open(false);
    this.onSaved();
  }

  #refused(error) {
    this.required = true;
    const hasKey = readStored() !== null || $("api-key").value.trim() !== "";
    $("key-error").textContent = hasKey ? `The server refused this key: ${error.message}` : "";
    $("key-message").textContent =
      "This server needs an API key. Paste yours: it is kept in this browser's local storage and sent only to this server.";
    $("key-toggle-label").textContent = hasKey ? "API key refused" : "API key"; // not "set": it does not work
    $("key-toggle").classList.add("needs-key");
    $("key-toggle").classList.remove("has-key");
    this.#open(true);
  }

  #open(open) {
    $("key-panel").hidden = !open;
    $("key-toggle").setAttribute("aria-expanded", String(open));
    if (open) $("api-key").focus();
  }

  #label() {
    const stored = readStored();
    $("key-toggle-label").textContent = stored ? "API key set" : "API key";
    $("key-toggle").classList.toggle("has-key", stored !== null);
    if (stored) $("key-toggle").classList.remove("needs-key");
  }
}

function readStored() {
  try {
    return localStorage.getItem(STORAGE_KEY) || null;
  } catch {
    return null;
  }
}

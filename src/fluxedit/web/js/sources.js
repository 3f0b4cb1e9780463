// An image the user chose (a file, a URL, or an earlier output), checked in the browser before anything
// is sent: the same limits the server applies, so a mistake shows at once and costs no upload.

import { formatBytes } from "./dom.js";

export const MAX_BYTES = 50 * 1024 * 1024;
export const INVALID_URL = "Invalid URL.";
const MAX_URL_CHARS = 8192;
const MAX_PIXELS = 144_000_000;
const MIN_SIDE = 16;
const MAX_ASPECT = 4;
const HOST_NAME = /^[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?$/;
const BAD_URL_CHARS = /[\s\x00-\x1f\x7f\\]/;
const DATA_IMAGE = /^data:image\/(jpeg|png|webp);base64,/i;

export class SourceError extends Error {}

let counter = 0;
const nextId = () => `source-${++counter}`;

export async function sourceFromFile(file) {
  const name = file.name || "pasted image";
  if (file.size > MAX_BYTES) {
    throw new SourceError(`“${name}” is ${formatBytes(file.size)}: the limit is 50 MB per image.`);
  }
  if (file.size === 0) throw new SourceError(`“${name}” is empty.`);
  const head = new Uint8Array(await file.slice(0, 16).arrayBuffer());
  const format = sniffFormat(head);
  if (format === null) throw new SourceError(`“${name}” is not an image. Choose a JPEG, PNG or WebP file.`);
  if (!["jpeg", "png", "webp"].includes(format)) {
    throw new SourceError(`“${name}” is a ${format} image. Only JPEG, PNG and WebP are accepted.`);
  }
  const displayUrl = URL.createObjectURL(file);
  let size;
  try {
    size = await imageSize(displayUrl);
  } catch {
    URL.revokeObjectURL(displayUrl);
    throw new SourceError(`“${name}” could not be read as an image: the file may be damaged.`);
  }
  checkGeometry(size, name);
  return { id: nextId(), kind: "file", file, name, bytes: file.size, format, displayUrl, ...size, reference: null };
}

export async function sourceFromUrl(text) {
  const url = parseImageUrl(text);
  const name = nameFromUrl(url);
  let size = null;
  try {
    size = await imageSize(url);
  } catch {
    // This browser may not reach it (or may be refused); the server fetches it itself, so go on.
  }
  if (size) checkGeometry(size, name);
  return {
    id: nextId(), kind: "url", url, name, format: formatFromName(url), displayUrl: url,
    width: size?.width ?? null, height: size?.height ?? null, reference: url, previewFailed: size === null,
  };
}

// An output of this server as the next input: its size and format are known already.
export function sourceFromOutput(url, width, height, label) {
  return {
    id: nextId(), kind: "output", url, name: label, format: formatFromName(url), displayUrl: url,
    width, height, reference: url,
  };
}

// The same checks as the server's parse_http_url (service/fetch.py), plus image data URIs.
export function parseImageUrl(text) {
  const value = text.trim();
  if (DATA_IMAGE.test(value)) return value;
  if (!value || value.length > MAX_URL_CHARS || BAD_URL_CHARS.test(value) || !/^https?:\/\//i.test(value)) {
    throw new SourceError(INVALID_URL);
  }
  let url;
  try {
    url = new URL(value);
  } catch {
    throw new SourceError(INVALID_URL);
  }
  const host = url.hostname;
  const hostOk = host.startsWith("[") ? host.endsWith("]") : HOST_NAME.test(host);
  if (!["http:", "https:"].includes(url.protocol) || !hostOk) throw new SourceError(INVALID_URL);
  return value;
}

export function sniffFormat(bytes) {
  const starts = (...sig) => sig.every((byte, i) => byte === null || bytes[i] === byte);
  const ascii = (from, to) => String.fromCharCode(...bytes.slice(from, to));
  if (starts(0xff, 0xd8, 0xff)) return "jpeg";
  if (starts(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a)) return "png";
  if (ascii(0, 4) === "RIFF" && ascii(8, 12) === "WEBP") return "webp";
  if (ascii(0, 4) === "GIF8") return "GIF";
  if (ascii(0, 2) === "BM") return "BMP";
  if (ascii(0, 4) === "II*\0" || ascii(0, 4) === "MM\0*") return "TIFF";
  if (ascii(4, 8) === "ftyp") return /avi[fs]/.test(ascii(8, 12)) ? "AVIF" : "HEIC";
  return null;
}

function checkGeometry({ width, height }, name) {
  if (width * height > MAX_PIXELS) {
    throw new SourceError(`“${name}” is ${width}×${height}, more than ${MAX_PIXELS.toLocaleString("en")} pixels.`);
  }
  if (Math.min(width, height) < MIN_SIDE) {
    throw new SourceError(`“${name}” is ${width}×${height}: each side must be at least ${MIN_SIDE} pixels.`);
  }
  const aspect = Math.max(width, height) / Math.min(width, height);
  if (aspect > MAX_ASPECT) {
    throw new SourceError(`“${name}” is ${width}×${height}, wider than 4:1. Crop it first.`);
  }
}

// Decoded by the browser: the size it reports has the EXIF orientation applied, as the server does.
function imageSize(src, timeoutMs = 15000) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    const timer = setTimeout(() => reject(new Error("timeout")), timeoutMs);
    image.onload = () => {
      clearTimeout(timer);
      if (image.naturalWidth && image.naturalHeight) resolve({ width: image.naturalWidth, height: image.naturalHeight });
      else reject(new Error("no size"));
    };
    image.onerror = () => {
      clearTimeout(timer);
      reject(new Error("not an image"));
    };
    image.src = src;
  });
}

function nameFromUrl(url) {
  if (url.startsWith("data:")) return "image from a data URI";
  try {
    const path = new URL(url).pathname;
    return decodeURIComponent(path.slice(path.lastIndexOf("/") + 1)) || new URL(url).host;
  } catch {
    return url;
  }
}

function formatFromName(url) {
  const data = DATA_IMAGE.exec(url);
  if (data) return data[1].toLowerCase();
  const match = /\.(jpe?g|png|webp)(?:[?#]|$)/i.exec(url);
  if (!match) return null;
  const ext = match[1].toLowerCase();
  return ext === "jpg" ? "jpeg" : ext;
}

// Reopening a past prediction: its input images rebuilt from what the server holds (an uploaded
// file's id, a URL), so the same edit can be looked at again, re-run or continued.

import { call } from "./api.js";

let counter = 0;

export async function sourceFromReference(reference) {
  if (/^file_[\w-]+$/.test(reference)) return fromUpload(reference);
  const ownUpload = ownFileId(reference);
  if (ownUpload) return fromUpload(ownUpload);
  const output = /\/outputs\/file_[\w-]+\.(jpg|png|webp)$/.test(reference);
  const format = /\.(jpe?g|png|webp)(?:[?#]|$)/i.exec(reference)?.[1].toLowerCase().replace("jpg", "jpeg") ?? null;
  return {
    id: `restored-${++counter}`, kind: output ? "output" : "url", url: reference, reference, displayUrl: reference,
    name: output ? "an earlier result" : reference.slice(reference.lastIndexOf("/") + 1) || reference,
    format, width: null, height: null,
  };
}

// Views show a stored input (an upload, a data URI sent earlier) as this server's /v1/files/ID/content URL,
// which needs the key: such a URL is reopened as the upload it names.
function ownFileId(reference) {
  let url;
  try {
    url = new URL(reference, location.href);
  } catch {
    return null;
  }
  if (url.origin !== location.origin) return null;
  return /^\/v1\/files\/(file_[\w-]+)(?:\/content)?$/.exec(url.pathname)?.[1] ?? null;
}

// An upload is only readable with the key, so it comes down as a blob for the thumbnail.
async function fromUpload(fileId) {
  const [record, response] = await Promise.all([
    call("GET", `/v1/files/${fileId}`),
    call("GET", `/v1/files/${fileId}/content`, { raw: true }),
  ]);
  const blob = await response.blob();
  const format = { "image/jpeg": "jpeg", "image/png": "png", "image/webp": "webp" }[record.content_type] ?? null;
  const file = new File([blob], record.name, { type: record.content_type });
  return {
    id: `restored-${++counter}`, kind: "file", file, name: record.name, bytes: record.size, format,
    displayUrl: URL.createObjectURL(blob), width: record.width, height: record.height, reference: fileId,
  };
}

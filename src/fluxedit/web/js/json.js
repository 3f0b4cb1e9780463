// Seeds run up to 2^64 - 1, past what a JavaScript number holds exactly. They are kept as decimal
// strings on the page and written back into JSON as bare numbers, so a seed is never rounded.

const BIG_SEED_IN = /("seed"\s*:\s*)(\d{16,})/g;
const SEED_OUT = /("seed"\s*:\s*)"(\d+)"/g;

export function parseJson(text) {
  // Inside a JSON string a quote is escaped (\"), so only real "seed" keys match.
  return JSON.parse(text.replace(BIG_SEED_IN, '$1"$2"'));
}

export function stringifyJson(value, indent) {
  return JSON.stringify(value, null, indent).replace(SEED_OUT, "$1$2");
}

// The prompt box: a character count and example prompts that a click fills in.

import { $, h } from "./dom.js";

// [short label, the prompt it fills in]
const EXAMPLES = [
  ["Sunset beach", "Change the background to a sunset beach, keep the person exactly as they are"],
  ["Watercolour", "Turn it into a watercolour painting with soft paper texture"],
  ["Sign text", 'Replace the text on the sign with "OPEN LATE", same font and colours'],
  ["Red jacket", "Put a red leather jacket on the man, keep his face and pose unchanged"],
  ["Remove people", "Remove the people in the background, keep everything else the same"],
  ["Night time", "Make it night time with warm street lights"],
];

export function wirePrompt(onChange, onSubmit) {
  const box = $("prompt");
  const count = () => {
    $("prompt-count").textContent = `${box.value.length} / ${box.maxLength}`;
    onChange();
  };
  box.addEventListener("input", count);
  box.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      onSubmit();
    }
  });
  $("examples").replaceChildren(
    h("span", { class: "hint" }, "Try:"),
    ...EXAMPLES.map(([label, text]) =>
      h(
        "button",
        {
          type: "button",
          class: "chip",
          title: text,
          "aria-label": `Use the example prompt: ${text}`,
          onclick: () => {
            box.value = text;
            count();
            box.focus();
          },
        },
        label,
      ),
    ),
  );
  count();
  return {
    get: () => box.value.trim(),
    set: (text) => {
      box.value = text;
      count();
    },
  };
}

// Painting on the mask with pointer events, so a mouse, a pen and a finger all paint; a round cursor
// shows the brush's size. The brush size is in screen pixels: the same stroke on any size of picture.

import { stroke } from "./mask.js";

// tool: {diameter() in screen pixels, erasing(), painted() once a stroke ends}
export function wirePainting(canvas, cursor, tool) {
  let last = null;
  const at = (event) => {
    const box = canvas.getBoundingClientRect();
    const scale = canvas.width / box.width;
    const point = { x: (event.clientX - box.left) * scale, y: (event.clientY - box.top) * scale };
    return { point, diameter: tool.diameter() * scale, box };
  };
  canvas.addEventListener("pointerdown", (event) => {
    if (event.pointerType === "mouse" && event.button !== 0) return;
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    const { point, diameter } = at(event);
    stroke(canvas, point, point, diameter, tool.erasing());
    last = point;
  });
  canvas.addEventListener("pointermove", (event) => {
    const { box } = at(event);
    const size = tool.diameter();
    cursor.hidden = false;
    cursor.style.cssText = `width:${size}px;height:${size}px;left:${event.clientX - box.left}px;top:${event.clientY - box.top}px`;
    if (last === null) return;
    // A fast stroke comes as several browser events in one: each becomes a segment, so no gaps.
    for (const one of event.getCoalescedEvents?.() || [event]) {
      const { point, diameter } = at(one);
      stroke(canvas, last, point, diameter, tool.erasing());
      last = point;
    }
  });
  const end = () => {
    if (last === null) return;
    last = null;
    tool.painted();
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  canvas.addEventListener("pointerleave", () => (cursor.hidden = true));
}

// The mask itself: a canvas at the input image's own pixel size, opaque where the edit may change the
// picture and transparent elsewhere. Painting, erasing, inverting and the PNG the API gets are here.

const ON = 255;
const HALF = 128;
// Only the alpha channel is the mask; the colour is how the page shows it over the picture.
const PAINT = [232, 79, 155];
const PAINT_CSS = `rgb(${PAINT.join(" ")})`;

// Masks are read back often (coverage, the PNG): the browser keeps them in memory rather than on the GPU.
const draw = (canvas) => canvas.getContext("2d", { willReadFrequently: true });

// A new, empty mask of width × height pixels.
export function createMask(width, height, canvas = document.createElement("canvas")) {
  canvas.width = width;
  canvas.height = height;
  clearMask(canvas);
  return canvas;
}

export function clearMask(canvas) {
  draw(canvas).clearRect(0, 0, canvas.width, canvas.height);
}

// One stroke segment, in image pixels: a brush adds to the mask, an eraser takes away.
export function stroke(canvas, from, to, diameter, erase) {
  const context = draw(canvas);
  context.save();
  context.globalCompositeOperation = erase ? "destination-out" : "source-over";
  context.strokeStyle = PAINT_CSS;
  context.fillStyle = PAINT_CSS;
  context.lineWidth = diameter;
  context.lineCap = "round";
  context.lineJoin = "round";
  context.beginPath();
  if (from.x === to.x && from.y === to.y) {
    context.arc(to.x, to.y, diameter / 2, 0, 2 * Math.PI); // a tap paints a dot
    context.fill();
  } else {
    context.moveTo(from.x, from.y);
    context.lineTo(to.x, to.y);
    context.stroke();
  }
  context.restore();
}

// Painted and unpainted swap places. Edges are made hard first: the mask is either on or off.
export function invertMask(canvas) {
  const context = draw(canvas);
  const pixels = context.getImageData(0, 0, canvas.width, canvas.height);
  const data = pixels.data;
  const [red, green, blue] = PAINT;
  for (let i = 0; i < data.length; i += 4) {
    data[i] = red;
    data[i + 1] = green;
    data[i + 2] = blue;
    data[i + 3] = data[i + 3] >= HALF ? 0 : ON;
  }
  context.putImageData(pixels, 0, 0);
}

// The share of the image's pixels the edit may change, from 0 to 1.
export function coverage(canvas) {
  const data = draw(canvas).getImageData(0, 0, canvas.width, canvas.height).data;
  let on = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] >= HALF) on++;
  return on / (canvas.width * canvas.height);
}

// The same mask drawn onto another size (the next input after "Edit this result" at the model's size).
export function resizeMask(canvas, width, height) {
  const copy = document.createElement("canvas");
  copy.width = canvas.width;
  copy.height = canvas.height;
  draw(copy).drawImage(canvas, 0, 0);
  createMask(width, height, canvas);
  const context = draw(canvas);
  context.imageSmoothingEnabled = false;
  context.drawImage(copy, 0, 0, width, height);
}

export function copyMask(canvas) {
  const copy = createMask(canvas.width, canvas.height);
  draw(copy).drawImage(canvas, 0, 0);
  return copy;
}

// A picture as the mask (a snapshot, a mask file read back): on where it is both opaque and light.
export function loadMask(canvas, picture) {
  const context = draw(canvas);
  clearMask(canvas);
  context.drawImage(picture, 0, 0, canvas.width, canvas.height);
  const pixels = context.getImageData(0, 0, canvas.width, canvas.height);
  const data = pixels.data;
  const [red, green, blue] = PAINT;
  for (let i = 0; i < data.length; i += 4) {
    const on = data[i + 3] >= HALF && Math.max(data[i], data[i + 1], data[i + 2]) >= HALF;
    data[i] = red;
    data[i + 1] = green;
    data[i + 2] = blue;
    data[i + 3] = on ? ON : 0;
  }
  context.putImageData(pixels, 0, 0);
}

// What the API gets: a PNG the image's size, white and opaque where painted, black and transparent
// elsewhere, so a reader of its grey level and a reader of its alpha agree. No grey edge pixels.
export async function maskPng(canvas) {
  const out = document.createElement("canvas");
  out.width = canvas.width;
  out.height = canvas.height;
  const context = draw(out);
  const pixels = draw(canvas).getImageData(0, 0, canvas.width, canvas.height);
  const data = pixels.data;
  for (let i = 0; i < data.length; i += 4) {
    const value = data[i + 3] >= HALF ? ON : 0;
    data[i] = data[i + 1] = data[i + 2] = data[i + 3] = value;
  }
  context.putImageData(pixels, 0, 0);
  return new Promise((resolve, reject) => {
    out.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("the mask could not be encoded"))), "image/png");
  });
}

// Output sizes and prices, computed as the service computes them (src/fluxedit/resolution.py and
// service/pricing.py), so the price shown before a run is the price charged. A test checks both agree.

export const PREFERRED_SIZES = [
  [672, 1568], [688, 1504], [720, 1456], [752, 1392], [800, 1328], [832, 1248], [880, 1184], [944, 1104],
  [1024, 1024],
  [1104, 944], [1184, 880], [1248, 832], [1328, 800], [1392, 752], [1456, 720], [1504, 688], [1568, 672],
];
export const ASPECT_RATIOS = {
  "1:1": [1, 1], "16:9": [16, 9], "9:16": [9, 16], "4:3": [4, 3], "3:4": [3, 4],
  "3:2": [3, 2], "2:3": [2, 3], "21:9": [21, 9], "9:21": [9, 21],
};
const SIDE_MULTIPLE = 16;
const TARGET_AREA = 1024 * 1024;
export const MEGAPIXEL = 1024 * 1024;

// Python's round(): halves go to the even neighbour, where Math.round would go up.
function roundHalfEven(x) {
  const nearest = Math.round(x);
  return Math.abs(x % 1) === 0.5 && nearest % 2 !== 0 ? nearest - 1 : nearest;
}

function roundSide(side) {
  return Math.max(SIDE_MULTIPLE, roundHalfEven(side / SIDE_MULTIPLE) * SIDE_MULTIPLE);
}

export function nearestPreferredSize(width, height) {
  const aspect = width / height;
  let best = PREFERRED_SIZES[0];
  for (const size of PREFERRED_SIZES) {
    if (Math.abs(aspect - size[0] / size[1]) < Math.abs(aspect - best[0] / best[1])) best = size;
  }
  return best;
}

export function sizeForAspect(aspect, area = TARGET_AREA) {
  return [roundSide(Math.sqrt(area * aspect)), roundSide(Math.sqrt(area / aspect))];
}

// [width, height] of the output, or null when it depends on an input size not known yet.
export function outputSize(mode, inputWidth, inputHeight) {
  if (mode in ASPECT_RATIOS) {
    const [w, h] = ASPECT_RATIOS[mode];
    return sizeForAspect(w / h);
  }
  if (!inputWidth || !inputHeight) return null;
  if (mode === "auto") return sizeForAspect(inputWidth / inputHeight);
  return nearestPreferredSize(inputWidth, inputHeight);
}

export function megapixelUnits(width, height) {
  return Math.max(1, Math.ceil((width * height) / MEGAPIXEL));
}

export function predictionCost(width, height, numImages, pricePerImage) {
  return Math.round(megapixelUnits(width, height) * numImages * pricePerImage * 1e6) / 1e6;
}

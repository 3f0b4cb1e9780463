"""Our engine against plain diffusers FluxKontextPipeline, side by side in one run.

A 1024x1024 edit with a 1024x1024 reference, 4 steps, on the tiny model (CPU)
or any --model. Runs alternate (ours, theirs, ours, ...) after a warm-up so that
drift in machine load hits both; prints the median of each and their ratio
(target: ours / diffusers <= 1.02).

    python bench/engine.py [--model tiny] [--steps 4] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from tests.helpers import pattern

from fluxedit.engine import EditRequest, Engine
from fluxedit.imaging.decode import DecodedImage
from fluxedit.schema import OutputFormat, validated_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--components", default=None, help="the text encoders and VAE of a single-file --model")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    engine = Engine.load(model=args.model, components=args.components)
    image = pattern(1024, 1024)
    request = EditRequest(
        validated_settings(prompt="make it a watercolour", num_inference_steps=args.steps, seed=1),
        [DecodedImage(image, OutputFormat.png)],
    )

    def ours() -> None:
        engine.generate(request)

    def diffusers() -> None:
        engine.pipe(
            image=image,
            prompt="make it a watercolour",
            num_inference_steps=args.steps,
            guidance_scale=2.5,
            height=1024,
            width=1024,
            generator=torch.Generator().manual_seed(1),
            output_type="np",
        )

    ours(), diffusers()  # warm-up: allocator, kernels, caches
    times: dict[str, list[float]] = {"ours": [], "diffusers": []}
    for _ in range(args.repeats):
        for name, run in (("ours", ours), ("diffusers", diffusers)):
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)

    ours_median, theirs_median = (statistics.median(times[k]) for k in ("ours", "diffusers"))
    device = engine.model.placement.device
    print(f"model {args.model} on {device}, 1024x1024 edit with a 1024x1024 reference, {args.steps} steps")
    print(f"{'':12}{'median s':>10}{'min s':>10}")
    for name in ("ours", "diffusers"):
        print(f"{name:12}{statistics.median(times[name]):10.3f}{min(times[name]):10.3f}")
    print(f"ratio ours/diffusers: {ours_median / theirs_median:.3f} (target <= 1.02)")


if __name__ == "__main__":
    main()

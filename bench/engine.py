"""Our engine against plain diffusers FluxKontextPipeline, side by side in one run.

A 1024x1024 edit with a 1024x1024 reference, 4 steps, on the tiny model (CPU)
or any --model. Ours remembers a prompt's embeddings; diffusers encodes it every
call. So ours runs twice: with its prompt cache warm (as a server repeating a
prompt sees it) and cold (cleared before each run: the same work as diffusers,
so the ratio is the loop's own cost). Runs alternate (ours warm, ours cold,
theirs, ...) after a warm-up so that drift in machine load hits all three;
prints the median of each and both ratios (target: cold / diffusers <= 1.02).

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

    def ours_warm() -> None:
        engine.generate(request)

    def ours_cold() -> None:
        engine._prompts.clear()  # the prompt encoded again, as diffusers does on every call
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

    runs = {"ours, prompt cache warm": ours_warm, "ours, prompt cache cold": ours_cold, "diffusers": diffusers}
    for run in runs.values():
        run()  # warm-up: allocator, kernels, caches
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)

    medians = {name: statistics.median(times[name]) for name in runs}
    device = engine.model.placement.device
    print(f"model {args.model} on {device}, 1024x1024 edit with a 1024x1024 reference, {args.steps} steps, "
          f"{args.repeats} alternating repeats")  # fmt: skip
    print("")
    print("| run | median s | min s | / diffusers |")
    print("|---|---|---|---|")
    for name in runs:
        print(f"| {name} | {medians[name]:.3f} | {min(times[name]):.3f} | {medians[name] / medians['diffusers']:.3f} |")
    cold = medians["ours, prompt cache cold"] / medians["diffusers"]
    verdict = "met" if cold <= 1.02 else "missed"
    print(f"\nlike for like (cold cache) ours/diffusers: {cold:.3f} (target <= 1.02: {verdict})")


if __name__ == "__main__":
    main()

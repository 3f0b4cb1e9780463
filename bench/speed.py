"""Acceleration levels and batching on the tiny model (CPU), measured side by side in one run.

For each level: full transformer passes and wall time of a 1024x1024 edit with a
1024x1024 reference, relative to `none`. Then throughput of 4 edits run as one
batch against the same 4 run one by one. The tiny model has the real geometry
(token counts, VAE scale), not the real cost split: on a GPU the transformer
is ~95% of an edit, so skipped passes save more there (see bench/gpu.py).

    python -m bench.speed [--steps 28] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

from tests.helpers import pattern

from fluxedit.engine import EditRequest, Engine
from fluxedit.imaging.decode import DecodedImage
from fluxedit.schema import OutputFormat, validated_settings

LEVELS = ("none", "regular", "high")


def timed(run) -> tuple[float, object]:
    started = time.perf_counter()
    result = run()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()

    engine = Engine.load(model="tiny")
    image = DecodedImage(pattern(1024, 1024), OutputFormat.png)

    def request(level: str, steps: int, seed: int = 1, prompt: str = "make it a watercolour") -> EditRequest:
        fields = {"prompt": prompt, "num_inference_steps": steps, "seed": seed, "acceleration": level}
        return EditRequest(validated_settings(**fields), [image])

    engine.generate(request("none", 1))  # warm-up
    times: dict[str, list[float]] = {level: [] for level in LEVELS}
    passes: dict[str, int] = {}
    for _ in range(args.repeats):
        for level in LEVELS:
            seconds, generation = timed(lambda level=level: engine.generate(request(level, args.steps)))
            times[level].append(seconds)
            passes[level] = generation.transformer_passes
    base = statistics.median(times["none"])
    print(f"tiny model on {engine.device}, 1024x1024 edit + 1024x1024 reference, {args.steps} steps")
    print(f"{'level':10}{'passes':>8}{'median s':>10}{'vs none':>9}")
    for level in LEVELS:
        median = statistics.median(times[level])
        print(f"{level:10}{passes[level]:>8}{median:>10.3f}{median / base:>9.2f}")

    steps = 4
    batch = [request("none", steps, seed=i, prompt=f"edit number {i}") for i in range(args.batch)]
    one_by_one, _ = timed(lambda: [engine.generate(r) for r in batch])
    together, _ = timed(lambda: engine.generate_many(batch))
    print(f"\nbatching {args.batch} edits ({steps} steps each)")
    print(f"one by one: {one_by_one:.3f} s ({args.batch / one_by_one:.2f} edits/s)")
    print(f"one batch:  {together:.3f} s ({args.batch / together:.2f} edits/s), speed-up {one_by_one / together:.2f}x")


if __name__ == "__main__":
    main()

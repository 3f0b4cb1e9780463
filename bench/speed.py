"""Acceleration levels and batching on the tiny model (CPU), measured side by side in one run.

For each level: full transformer passes and wall time of a 1024x1024 edit with a
1024x1024 reference, relative to `none`. Then throughput of 4 edits run as one
batch against the same 4 run one by one. The tiny model has the real geometry
(token counts, VAE scale), not the real cost split: on a GPU the transformer
is ~95% of an edit, so skipped passes save more there (see bench/gpu.py).

Each repeat runs the levels in turn, in the opposite order to the repeat before
(none, regular, high, then high, regular, none, ...), so a drift in machine load
favours none of them; medians of the repeats are printed with the pass-count
floor beside each ratio: passes / passes of none, what the ratio would be if
only the transformer cost anything. Batching is measured twice, with the prompt
cache cold (every prompt encoded) and warm (every prompt already encoded), one
by one against one batch in each case.

    python -m bench.speed [--steps 28] [--repeats 5]
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
    parser.add_argument("--repeats", type=int, default=5)
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
    for repeat in range(args.repeats):
        for level in LEVELS if repeat % 2 == 0 else reversed(LEVELS):
            seconds, generation = timed(lambda level=level: engine.generate(request(level, args.steps)))
            times[level].append(seconds)
            passes[level] = generation.transformer_passes
    base = statistics.median(times["none"])
    print(f"tiny model on {engine.device}, 1024x1024 edit + 1024x1024 reference, {args.steps} steps, "
          f"{args.repeats} repeats in alternating order")  # fmt: skip
    print("")
    print("| level | passes | median s | min s | vs none | pass-count floor |")
    print("|---|---|---|---|---|---|")
    for level in LEVELS:
        median = statistics.median(times[level])
        floor = passes[level] / passes["none"]
        fastest = min(times[level])
        print(f"| {level} | {passes[level]} | {median:.3f} | {fastest:.3f} | {median / base:.2f} | {floor:.2f} |")

    steps = 4
    batch = [request("none", steps, seed=i, prompt=f"edit number {i}") for i in range(args.batch)]
    rows = {}
    for cache in ("cold", "warm"):
        one_by_one, together = [], []
        for repeat in range(max(1, args.repeats // 2)):
            order = [("one by one", one_by_one), ("one batch", together)]
            for name, kept in order if repeat % 2 == 0 else reversed(order):
                if cache == "cold":
                    engine._prompts.clear()  # every prompt encoded inside the timed run
                else:
                    for member in batch:  # every prompt encoded before it
                        engine._encode_prompt(member.settings.prompt, 1)
                run = (lambda: [engine.generate(r) for r in batch]) if name == "one by one" else (
                    lambda: engine.generate_many(batch))  # fmt: skip
                kept.append(timed(run)[0])
        rows[cache] = (statistics.median(one_by_one), statistics.median(together))
    print(f"\nbatching {args.batch} edits ({steps} steps each, different prompts), medians")
    print("")
    print("| prompt cache | one by one s | one batch s | edits/s one by one | edits/s batched | speed-up |")
    print("|---|---|---|---|---|---|")
    for cache, (single, batched) in rows.items():
        print(f"| {cache} | {single:.3f} | {batched:.3f} | {args.batch / single:.2f} | {args.batch / batched:.2f} | "
              f"{single / batched:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()

"""LoRA switching on the tiny model, measured side by side in one run.

- Switching between two adapters that are already loaded (a `set_adapters` call)
  against loading one from disk (read, convert, inject), and their ratio.
- The time of one edit with a LoRA active, against one on a model that never had
  an adapter injected (a second engine: "without a LoRA" is the base model, not
  one whose adapters are disabled), and on the first engine with its adapters
  loaded but none active. Runs alternate, medians.

    python -m bench.lora [--repeats 10]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from tests import lora_builders as build
from tests.helpers import pattern

from fluxedit.engine import EditRequest, Engine
from fluxedit.engine.loras import LoraSpec
from fluxedit.imaging.decode import DecodedImage
from fluxedit.schema import OutputFormat, validated_settings


def timed(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    engine = Engine.load(model="tiny")
    folder = Path(tempfile.mkdtemp())
    first = LoraSpec(str(build.write(build.diffusers_lora(seed=1), folder / "a.safetensors")), 1.0)
    second = LoraSpec(str(build.write(build.diffusers_lora(seed=2), folder / "b.safetensors")), 1.0)
    loads = []
    for index in range(args.repeats):
        fresh = LoraSpec(
            str(build.write(build.diffusers_lora(seed=100 + index), folder / f"n{index}.safetensors")), 1.0
        )
        loads.append(timed(lambda fresh=fresh: engine.loras.activate([fresh])))
    engine.loras.activate([first])
    engine.loras.activate([second])
    switches = [timed(lambda spec=spec: engine.loras.activate([spec])) for spec in [first, second] * args.repeats]

    image = DecodedImage(pattern(1024, 1024), OutputFormat.png)
    settings = validated_settings(prompt="make it a watercolour", num_inference_steps=4, seed=1)
    bare = Engine.load(model="tiny")  # never had an adapter injected
    runs = {
        "no adapter injected": lambda: bare.generate(EditRequest(settings, [image])),
        "adapters loaded, none active": lambda: engine.generate(EditRequest(settings, [image])),
        "a LoRA active": lambda: engine.generate(EditRequest(settings, [image], loras=[first])),
    }
    for run in runs.values():
        run()  # warm-up
    edits: dict[str, list[float]] = {name: [] for name in runs}
    for repeat in range(max(3, args.repeats // 2)):
        for name in runs if repeat % 2 == 0 else reversed(list(runs)):
            edits[name].append(timed(runs[name]))

    load, switch = statistics.median(loads), statistics.median(switches)
    print(f"tiny model on {engine.device}; LoRA rank {build.RANK} on attention layers")
    print(f"load from disk:          {load * 1000:8.2f} ms (median of {len(loads)})")
    print(f"switch between cached:   {switch * 1000:8.2f} ms (median of {len(switches)})")
    print(f"ratio load/switch:       {load / switch:8.1f}x")
    base = statistics.median(edits["no adapter injected"])
    print(f"\nan edit (1024x1024, 4 steps), median of {len(edits['a LoRA active'])} alternating runs")
    print("")
    print("| model | median s | vs no adapter |")
    print("|---|---|---|")
    for name, times in edits.items():
        print(f"| {name} | {statistics.median(times):.3f} | {statistics.median(times) / base:.2f}x |")


if __name__ == "__main__":
    main()

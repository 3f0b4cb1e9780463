"""What the `fluxedit` command costs before and around the work it was asked to do, measured from outside.

1. `fluxedit --help` against `python -c pass` (the interpreter alone) and `python -c "import fluxedit.cli"`:
   what a command that loads no model pays for starting.
2. `fluxedit edit` on the tiny model (a 64x64 PNG, 1 step, a fixed seed): the whole run's wall time, split
   with the times the command itself prints: importing torch and diffusers, loading the model, and the
   engine's own edit (generate + encode). What is left is the interpreter, the CLI, reading the input,
   writing the file and exiting. Beside it, `python -c "import fluxedit.engine.engine"`: the imports
   alone, which every edit needs however small.

Each figure is the median (and the minimum) of --repeats runs, one after another; other load on the
machine moves them, the minimum least.

Measured here (2 CPU cores, 3 runs): `fluxedit --help` 0.11 s against 0.01 s for `python -c pass` (it
was 0.5 s while the CLI imported pydantic, numpy and PIL up front). A 1-step tiny edit took 5.5 s in all:
3.4 s importing torch and diffusers (5.9 s for the same import with the garbage collector on, as the CLI
had it), 1.3 s the engine's edit, 0.7 s the rest (of which 0.3 s exit, 2.3 s before the libraries'
objects were frozen). The same command took 8.1 s before these changes.

    python -m bench.cli_startup [--repeats 5] [--steps 1]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLUXEDIT = str(Path(sys.executable).with_name("fluxedit"))
LOADED = re.compile(r"loaded in ([\d.]+) s, after ([\d.]+) s importing torch and diffusers")
EDITED = re.compile(r"transformer passes \(acceleration \w+\), ([\d.]+) s")


def wall(args: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return elapsed, result


def edit_once(folder: Path, steps: int) -> dict[str, float]:
    args = [FLUXEDIT, "edit", "in.png", "-p", "make it blue", "--model", "tiny", "--steps", str(steps),
            "--seed", "0", "-o", "out.png"]  # fmt: skip
    total, result = wall(args, folder)
    loaded, edited = LOADED.search(result.stderr), EDITED.search(result.stderr)
    if not (loaded and edited):
        raise SystemExit(f"fluxedit edit printed no timings:\n{result.stderr[-2000:]}")
    parts = {"total": total, "imports": float(loaded.group(2)), "load": float(loaded.group(1))}
    parts["edit"] = float(edited.group(1))
    parts["rest"] = total - parts["imports"] - parts["load"] - parts["edit"]
    return parts


def row(label: str, samples: list[float]) -> str:
    return f"| {label} | {statistics.median(samples):.2f} | {min(samples):.2f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=1)
    args = parser.parse_args()

    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        Image.new("RGB", (64, 64), (200, 40, 40)).save(folder / "in.png")
        python = sys.executable
        commands = {
            "`python -c pass`": [python, "-c", "pass"],
            '`python -c "import fluxedit.cli"`': [python, "-c", "import fluxedit.cli"],
            "`fluxedit --help`": [FLUXEDIT, "--help"],
            '`python -c "import fluxedit.engine.engine"` (torch, diffusers, transformers)': [
                python, "-c", "import fluxedit.engine.engine",
            ],
        }  # fmt: skip
        times: dict[str, list[float]] = {label: [] for label in commands}
        edits: list[dict[str, float]] = []
        for _ in range(args.repeats):
            for label, command in commands.items():
                times[label].append(wall(command, folder)[0])
            edits.append(edit_once(folder, args.steps))

    print(f"fluxedit start-up, {args.repeats} runs each (seconds of wall time)\n")
    print("| command | median s | min s |\n| --- | --- | --- |")
    for label, samples in times.items():
        print(row(label, samples))
    print(f"\n`fluxedit edit` on the tiny model, a 64x64 PNG, {args.steps} step(s), seed 0\n")
    print("| part | median s | min s |\n| --- | --- | --- |")
    labels = {
        "total": "total, as the user waits",
        "imports": "importing torch and diffusers (printed by the command)",
        "load": "loading the model (printed)",
        "edit": "the engine's edit: generate + encode (printed)",
        "rest": "the rest: interpreter, CLI, reading the input, writing the file, exit",
    }
    for key, label in labels.items():
        print(row(label, [parts[key] for parts in edits]))
    overhead = [parts["total"] - parts["edit"] for parts in edits]
    print(f"\noverhead on top of the engine's edit: median {statistics.median(overhead):.2f} s")


if __name__ == "__main__":
    main()

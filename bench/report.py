"""Write docs/performance.md from the benchmarks' own saved output, and say on which machine it was taken.

Each benchmark prints its tables; save them under build/bench/NAME.txt, then run this:

    mkdir -p build/bench
    python -m bench.engine > build/bench/engine.txt     # likewise speed, lora, service
    python -m bench.report --note "shared with other test runs"

The library warnings torch and torchao print are left out. A benchmark with no saved output keeps its
section as the document had it. bench/gpu.py --write-docs fills its own section, which is kept as it is.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import textwrap
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "docs" / "performance.md"
SAVED = ROOT / "build" / "bench"
GPU_MARKER = "<!-- bench/gpu.py writes below this line -->"
NOISE = re.compile(r"^(W\d{4} |Failed to load|Unable to import|.*kernels-community|precision auto:|rc=)")

SECTIONS = {
    "engine": (
        "The engine against plain diffusers: `bench/engine.py`",
        "Ours with its prompt cache warm and cold (cleared before each run, as diffusers encodes the prompt on "
        "every call) beside `FluxKontextPipeline`, alternating runs after a warm-up. The cold row is the like-for-"
        "like one: the loop's own cost.",
    ),
    "speed": (
        "Acceleration levels and batching: `bench/speed.py`",
        "The level order alternates each repeat; the pass-count floor is the ratio if only the transformer cost "
        "anything (passes / 28). Batching is timed with every prompt encoded inside the run (cold) and before it "
        "(warm). On the tiny model the transformer is a smaller share of an edit than on the real one (~95% "
        "there), so the gap to the floor is larger here than on a GPU.",
    ),
    "lora": (
        "LoRAs: `bench/lora.py`",
        "Switching between loaded adapters against loading one from disk; then an edit with a LoRA active "
        "against one on an engine that never had an adapter injected.",
    ),
    "service": (
        "The service against the bare engine: `bench/service.py`",
        "The figure held against the 25 ms target is the service's own cost: each service run's total minus "
        "the engine time its worker reports (the side-by-side difference also holds the worker's engine "
        "running slower than the benchmark's own on a shared machine).",
    ),
}


def output_of(name: str) -> str | None:
    path = SAVED / f"{name}.txt"
    if not path.exists():
        return None
    lines = [line for line in path.read_text().splitlines() if not NOISE.match(line)]
    text = "\n".join(lines).strip()
    return text or None


def machine(note: str | None) -> str:
    cpu = platform.processor() or platform.machine()
    info = Path("/proc/cpuinfo")
    if info.exists():
        names = re.findall(r"^model name\s*:\s*(.+)$", info.read_text(), re.M)
        cpu = names[0] if names else cpu
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    said = f" {note.rstrip('.')}." if note else ""
    return f"{os.cpu_count()} CPU cores ({cpu}), {gpu}, torch {torch.__version__}.{said}"


def sections_of(text: str) -> dict[str, str]:
    """The document's `## ` sections by title, each with its body."""
    parts = re.split(r"^## ", text, flags=re.M)
    return {part.split("\n", 1)[0].strip(): part.split("\n", 1)[1] if "\n" in part else "" for part in parts[1:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--note", help="what else ran on the machine meanwhile, said beside its description")
    args = parser.parse_args()
    old = sections_of(REPORT.read_text()) if REPORT.exists() else {}
    intro = (
        "Every benchmark lives in `bench/` and prints its figures measured side by side in one run. The sections "
        "with a block of output are that output as saved (`python -m bench.report` writes them); training and "
        "load are figures of earlier runs, and the GPU table is written by `bench/gpu.py --write-docs`. Run them "
        "from the repository root with the project's environment (`.venv/bin/python -m bench.NAME`). The tiny "
        "model has the real geometry and random weights."
    )
    lines = [
        "# Performance",
        "",
        textwrap.fill(intro, 110),
        "",
        textwrap.fill(f"Machine of the saved output: {machine(args.note)}", 110),
        "",
    ]
    titles = [title for title, _ in SECTIONS.values()]
    for name, (title, intro) in SECTIONS.items():
        output = output_of(name)
        if output is None:
            lines += [f"## {title}", "", old.get(title, "Not measured yet.").strip("\n"), ""]
        else:
            lines += [f"## {title}", "", textwrap.fill(intro, 110), "", "```", output, "```", ""]
    for title, body in old.items():  # training, load, GPU: written by hand or by their own scripts
        if title not in titles:
            lines += [f"## {title}", "", body.strip("\n"), ""]
    text = "\n".join(lines).rstrip() + "\n"
    if GPU_MARKER not in text:
        text += f"\n## GPU: bench/gpu.py\n\n{GPU_MARKER}\n"
    REPORT.write_text(text)
    print(f"wrote {REPORT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

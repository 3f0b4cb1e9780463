"""The full-size FLUX.1 Kontext transformer on a GPU: seconds per step and per edit, for each level.

Random bf16 weights (the cost does not depend on their values), a 1024x1024
output with a 1024x1024 reference and 512 text tokens: 8,704 tokens per pass.
For each acceleration level and memory mode it runs our denoising loop
(28 steps by default) and reports seconds per full pass, seconds per edit
(transformer only: the text encoders and the VAE add ~0.3 s on an H100),
peak GPU memory and achieved TFLOP/s against the GPU's bf16 peak.

Then, side by side, one row per precision (--quantize none, fp8, int8, nf4), quantized in place by the
engine's own quantize_module: the transformer's weight memory (GPU memory allocated by it, measured), the
weight bytes `--quantize auto` computes for it (precision_choice.weight_bytes), the peak GPU memory of an
edit at the `none` level (max_memory_allocated, reset for each row), seconds per step, and each against
`none`. A precision this GPU or this build cannot run is printed as skipped, with the reason. Off CUDA
(--small) the weight column counts the bytes the quantized tensors hold instead.

The tables go to docs/performance.md only when asked (--write-docs), never from a --small run. Without a
CUDA GPU the full size is not attempted (it needs ~48 GB of CPU memory just to build): the script says so.

    python -m bench.gpu --write-docs                        # on a GPU: the real size, into the docs
    python -m bench.gpu --small --steps 4 --device cpu      # anywhere: a reduced size, to know the script works
    python -m bench.gpu --small --device cpu --memory "" --precisions none,int8   # the precision rows only
"""

from __future__ import annotations

import argparse
import copy
import gc
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import FluxTransformer2DModel

from fluxedit.engine.acceleration import plan_steps
from fluxedit.engine.denoise import DenoiseInputs, denoise
from fluxedit.engine.fast_paths import FastTransformer
from fluxedit.engine.precision_choice import weight_bytes
from fluxedit.engine.quantize import describe, has_fp8_compute, quantize_module, quantizes
from fluxedit.engine.tokens import grid_ids

FULL = {"num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128, "num_attention_heads": 24}
SMALL = {"num_layers": 1, "num_single_layers": 2, "attention_head_dim": 32, "num_attention_heads": 4}
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "RTX 4090": 165.0}
TEXT_TOKENS = 512
PRECISIONS = ("none", "fp8", "int8", "nf4")
REPORT = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
MARKER = "<!-- bench/gpu.py writes below this line -->"


def pass_tflop(config: dict, tokens: int) -> float:
    """Matmul FLOPs of one transformer pass (linear layers and attention; norms and rope are negligible)."""
    width = config["attention_head_dim"] * config["num_attention_heads"]
    blocks = config["num_layers"] + config["num_single_layers"]
    linear = 2 * 12 * width * width * tokens  # per block: q,k,v,out (4 D^2) + MLP (8 D^2), as multiply-adds
    attention = 4 * tokens * tokens * width  # QK^T and AV
    return blocks * (linear + attention) / 1e12


def build(config: dict, device: torch.device, dtype: torch.dtype) -> FluxTransformer2DModel:
    with torch.device("meta"):
        model = FluxTransformer2DModel(
            patch_size=1, in_channels=64, joint_attention_dim=4096, pooled_projection_dim=768,
            guidance_embeds=True, axes_dims_rope=_rope_axes(config["attention_head_dim"]), **config,
        )  # fmt: skip
    model = model.to_empty(device="cpu")
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter, std=0.02)
    return model.to(dtype).eval()


def _rope_axes(head_dim: int) -> list[int]:
    return [16, 56, 56] if head_dim == 128 else [head_dim // 4, head_dim * 3 // 8, head_dim * 3 // 8]


def inputs_for(side: int, device: torch.device, dtype: torch.dtype) -> DenoiseInputs:
    grid = side // 16  # 8x VAE, then 2x2 patches
    generator = torch.Generator("cpu").manual_seed(0)

    def noise(*shape):
        return torch.randn(*shape, generator=generator).to(device, dtype)

    output_ids = grid_ids(grid, grid)
    reference_ids = grid_ids(grid, grid, index=1)
    return DenoiseInputs(
        noise=noise(1, grid * grid, 64),
        reference_tokens=noise(1, grid * grid, 64),
        position_ids=torch.cat([output_ids, reference_ids]).to(device, dtype),
        text_embeddings=noise(1, TEXT_TOKENS, 4096),
        pooled_embeddings=noise(1, 768),
        text_ids=torch.zeros(TEXT_TOKENS, 3, device=device, dtype=dtype),
        guidance=2.5,
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_edit(model, inputs: DenoiseInputs, steps: int, level: str, device: torch.device) -> tuple[float, int]:
    sigmas = torch.linspace(1.0, 0.0, steps + 1, device=device)
    plan = plan_steps(level, steps)
    synchronize(device)
    started = time.perf_counter()
    with torch.inference_mode():
        _, passes = denoise(model, inputs, sigmas, plan=plan)
    synchronize(device)
    return time.perf_counter() - started, passes


def place(model, mode: str, device: torch.device):
    if mode == "gpu" or device.type != "cuda":
        return model.to(device)
    model.enable_group_offload(onload_device=device, offload_type="block_level", num_blocks_per_group=1,
                               use_stream=True)  # fmt: skip
    return model


def gpu_peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


@dataclass
class PrecisionRow:
    precision: str
    what: str
    weight_gib: float | None = None  # measured on CUDA (allocated), counted elsewhere
    computed_gib: float | None = None  # what `--quantize auto` assumes
    peak_gib: float | None = None
    per_step: float | None = None
    skipped: str | None = None


def precision_rows(
    master, precisions: list[str], inputs: DenoiseInputs, steps: int, repeats: int, device: torch.device, dtype
) -> list[PrecisionRow]:
    """One row per precision, each on its own copy of `master` (kept on the CPU, in `dtype`)."""
    counts = linear_counts(master)
    rows = []
    for precision in precisions:
        reason = precision_unavailable(precision, device)
        if reason:
            rows.append(PrecisionRow(precision, describe(precision, device), skipped=reason))
            continue
        try:
            rows.append(measure_precision(master, precision, inputs, steps, repeats, device, dtype))
        except Exception as error:  # a library or kernel this build lacks, out of memory: a row says which
            rows.append(PrecisionRow(precision, describe(precision, device), skipped=_one_line(error)))
        release(device)
        if dtype == torch.bfloat16 and not rows[-1].skipped:
            rows[-1].computed_gib = weight_bytes(counts, precision) / 2**30
    return rows


def precision_unavailable(precision: str, device: torch.device) -> str | None:
    if precision == "fp8" and device.type == "cuda" and not has_fp8_compute(device):
        major, minor = torch.cuda.get_device_capability(device)
        return f"this GPU (compute capability {major}.{minor}) has no fp8 matmuls; auto takes int8 here"
    return None


def measure_precision(master, precision, inputs, steps, repeats, device, dtype) -> PrecisionRow:
    release(device)
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    model = copy.deepcopy(master).to(device)
    quantize_module(model, precision, device, dtype)  # the engine's own path, in place
    release(device)
    if device.type == "cuda":
        weights = (torch.cuda.memory_allocated(device) - before) / 2**30
    else:
        weights = sum(stored_bytes(t) for t in [*model.parameters(), *model.buffers()]) / 2**30
    run_edit(model, inputs, 1, "none", device)  # warm-up (fp8 and int8 kernels pick their paths on first use)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timings = [run_edit(model, inputs, steps, "none", device) for _ in range(repeats)]
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    per_step = statistics.median(seconds / passes for seconds, passes in timings)
    del model
    return PrecisionRow(precision, describe(precision, device), weights, None, peak, per_step)


def linear_counts(model) -> tuple[int, int]:
    """(parameters in the linear layers quantize_module quantizes, all others), as precision_choice counts them."""
    linear = sum(m.weight.numel() for n, m in model.named_modules() if type(m) is torch.nn.Linear and quantizes(n))
    return linear, sum(p.numel() for p in model.parameters()) - linear


def stored_bytes(tensor: torch.Tensor) -> int:
    """Bytes a weight holds: torchao's tensors through their inner tensors, bitsandbytes' 4-bit ones with the
    tensors of their quantization state (the block scales)."""
    if hasattr(tensor, "__tensor_flatten__"):
        names, _ = tensor.__tensor_flatten__()
        inner = [getattr(tensor, name) for name in names]
        return sum(stored_bytes(t) for t in inner if isinstance(t, torch.Tensor))
    total = tensor.numel() * tensor.element_size()
    state = getattr(tensor, "quant_state", None)
    if state is not None:
        parts = state.as_dict(packed=True).values()
        total += sum(t.numel() * t.element_size() for t in parts if isinstance(t, torch.Tensor))
    return total


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split()) or "no message"
    return f"{type(error).__name__}: {text[:200]}"


def precision_table(rows: list[PrecisionRow], device: torch.device, dtype: torch.dtype, steps: int) -> list[str]:
    base = next((row for row in rows if row.precision == "none" and not row.skipped), None)
    weight_source = "allocated on the GPU" if device.type == "cuda" else "counted from the tensors"
    lines = [
        f"\nPrecisions (`--quantize`, quantized in place by the engine's quantize_module; level none, {steps} "
        f"steps; none is {str(dtype).removeprefix('torch.')}; weights {weight_source}; "
        "computed: the weight bytes `--quantize auto` assumes; x none: the ratio to the none row)",
        "",
        "| precision | what | weights GiB | x none | computed GiB | peak GiB | x none | s/step | x none |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row.skipped:
            lines.append(f"| {row.precision} | {row.what} | skipped: {row.skipped} | | | | | | |")
            continue
        cells = [
            row.precision,
            row.what,
            _figure(row.weight_gib, 3),
            _ratio(row.weight_gib, base and base.weight_gib),
            _figure(row.computed_gib, 3),
            _figure(row.peak_gib, 3),
            _ratio(row.peak_gib, base and base.peak_gib),
            _figure(row.per_step, 3),
            _ratio(row.per_step, base and base.per_step),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _figure(value: float | None, digits: int) -> str:
    return f"{value:.{digits}g}" if value is not None else "-"


def _ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}" if value is not None and base else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="a reduced model at 256x256 (runs on a CPU)")
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--levels", default="none,regular,high")
    parser.add_argument("--memory", default="gpu,group-offload", help="memory modes; empty: no level rows")
    parser.add_argument("--precisions", default=",".join(PRECISIONS), help="--quantize values; empty: none")
    parser.add_argument("--precision-steps", type=int, default=8, help="steps timed for each precision row")
    parser.add_argument("--device", default="auto", help="auto (CUDA when there is one), cuda or cpu")
    parser.add_argument("--write-docs", action="store_true", help="write the table into docs/performance.md")
    args = parser.parse_args()
    if args.write_docs and args.small:
        parser.error("--write-docs publishes the full-size figures: it cannot be combined with --small")
    unknown = sorted(set(_names(args.precisions)) - set(PRECISIONS))
    if unknown:
        parser.error(f"--precisions takes {', '.join(PRECISIONS)} (got {', '.join(unknown)})")

    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if args.device == "auto" else args.device)
    if not args.small and (device.type != "cuda" or not torch.cuda.is_available()):
        print(
            "no CUDA GPU here: the full-size transformer is measured on a GPU only (building it takes ~48 GB of "
            "CPU memory); `python -m bench.gpu --small --device cpu` runs a reduced size to check the script"
        )
        sys.exit(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    config, side = (SMALL, 256) if args.small else (FULL, 1024)
    tokens = 2 * (side // 16) ** 2 + TEXT_TOKENS
    flop = pass_tflop(config, tokens)
    peak = gpu_peak_tflops(device)
    inputs = inputs_for(side, device, dtype)
    rows = []
    for mode in _names(args.memory):
        model = place(build(config, device, dtype), mode, device)
        fast = FastTransformer(model, device)
        for level in _names(args.levels):
            runner = model
            notes = []
            if level == "high":
                runner, notes = fast.get()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            run_edit(runner, inputs, 2, level, device)  # warm-up (and compilation for high)
            timings = [run_edit(runner, inputs, args.steps, level, device) for _ in range(args.repeats)]
            seconds = statistics.median(t for t, _ in timings)
            passes = timings[0][1]
            peak_memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
            rows.append((mode, level, passes, seconds / passes, seconds, peak_memory, flop * passes / seconds, notes))
        del model, fast
        if device.type == "cuda":
            torch.cuda.empty_cache()

    precisions = _names(args.precisions)
    quantized = []
    if precisions:
        master = build(config, device, dtype)
        quantized = precision_rows(master, precisions, inputs, args.precision_steps, args.repeats, device, dtype)
        del master

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lines = [
        f"{'full-size' if not args.small else 'reduced (--small)'} transformer on {name}, {side}x{side} output with a "
        f"{side}x{side} reference, {tokens} tokens, {flop:.3g} TFLOP per pass"
        + (f", {args.steps} steps" if rows else ""),
    ]
    if rows:
        lines += [
            "",
            "| memory | level | passes | s/pass | s/edit | peak GiB | TFLOP/s | of peak |",
            "|---|---|---|---|---|---|---|---|",
        ]
    for mode, level, passes, per_pass, per_edit, memory, achieved, _ in rows:
        share = f"{achieved / peak:.0%}" if peak else "-"
        memory_text = f"{memory:.1f}" if memory is not None else "-"
        cells = [mode, level, passes, f"{per_pass:.3f}", f"{per_edit:.2f}", memory_text, f"{achieved:.3g}", share]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    notes = sorted({note for row in rows for note in row[7]})
    lines += [f"\n{note}" for note in notes]
    if quantized:
        lines += precision_table(quantized, device, dtype, args.precision_steps)
    table = "\n".join(lines)
    print(table)
    if args.write_docs:
        write_report(table)
        print(f"\nwritten to {REPORT.relative_to(REPORT.parent.parent)}")


def _names(option: str) -> list[str]:
    return [name.strip() for name in option.split(",") if name.strip()]


def write_report(table: str) -> None:
    """Replace what is between the marker and the next section (the sections after it stay)."""
    text = REPORT.read_text() if REPORT.exists() else "# Performance\n"
    if MARKER not in text:
        text = text.rstrip() + "\n\n## GPU: bench/gpu.py\n\n" + MARKER + "\n"
    head, _, rest = text.partition(MARKER)
    following = rest.find("\n## ")
    tail = rest[following:] if following >= 0 else "\n"
    REPORT.write_text(head + MARKER + "\n\n" + table + "\n" + tail)


if __name__ == "__main__":
    main()

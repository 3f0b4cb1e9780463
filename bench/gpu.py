"""The full-size FLUX.1 Kontext transformer on a GPU: seconds per step and per edit, for each level.

Random bf16 weights (the cost does not depend on their values), a 1024x1024
output with a 1024x1024 reference and 512 text tokens: 8,704 tokens per pass.
For each acceleration level and memory mode it runs our denoising loop
(28 steps by default) and reports seconds per full pass, seconds per edit
(transformer only: the text encoders and the VAE add ~0.3 s on an H100),
peak GPU memory and achieved TFLOP/s against the GPU's bf16 peak. The table goes
to docs/performance.md only when asked (--write-docs), never from a --small run.

    python -m bench.gpu --write-docs                        # on a GPU: the real size, into the docs
    python -m bench.gpu --small --steps 4 --device cpu      # anywhere: a reduced size, to know the script works
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from diffusers import FluxTransformer2DModel

from fluxedit.engine.acceleration import plan_steps
from fluxedit.engine.denoise import DenoiseInputs, denoise
from fluxedit.engine.fast_paths import FastTransformer
from fluxedit.engine.tokens import grid_ids

FULL = {"num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128, "num_attention_heads": 24}
SMALL = {"num_layers": 1, "num_single_layers": 2, "attention_head_dim": 32, "num_attention_heads": 4}
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "RTX 4090": 165.0}
TEXT_TOKENS = 512
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="a reduced model at 256x256 (runs on a CPU)")
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--levels", default="none,regular,high")
    parser.add_argument("--memory", default="gpu,group-offload")
    parser.add_argument("--device", default="auto", help="auto (CUDA when there is one), cuda or cpu")
    parser.add_argument("--write-docs", action="store_true", help="write the table into docs/performance.md")
    args = parser.parse_args()
    if args.write_docs and args.small:
        parser.error("--write-docs publishes the full-size figures: it cannot be combined with --small")

    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if args.device == "auto" else args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    config, side = (SMALL, 256) if args.small else (FULL, 1024)
    tokens = 2 * (side // 16) ** 2 + TEXT_TOKENS
    flop = pass_tflop(config, tokens)
    peak = gpu_peak_tflops(device)
    inputs = inputs_for(side, device, dtype)
    rows = []
    for mode in args.memory.split(","):
        model = place(build(config, device, dtype), mode, device)
        fast = FastTransformer(model, device)
        for level in args.levels.split(","):
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

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lines = [
        f"{'full-size' if not args.small else 'reduced (--small)'} transformer on {name}, {side}x{side} output with a "
        f"{side}x{side} reference, {tokens} tokens, {flop:.3g} TFLOP per pass, {args.steps} steps",
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
    table = "\n".join(lines)
    print(table)
    if args.write_docs:
        write_report(table)
        print(f"\nwritten to {REPORT.relative_to(REPORT.parent.parent)}")


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

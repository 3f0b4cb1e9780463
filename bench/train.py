"""LoRA training speed and memory.

- Tiny model on this machine: steps per second and peak memory (RSS) of a short run at 256x256.
- On a GPU, when one is lent: the peak GPU memory of one training step of the full-size transformer
  (random bf16 weights) at 1024x1024 with a 1024x1024 reference, for each memory option
  (gradient checkpointing off/on, AdamW or 8-bit AdamW).

    python -m bench.train [--steps 30]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import torch
from peft import LoraConfig
from PIL import ImageOps
from tests.helpers import pattern

from bench.gpu import FULL, build, inputs_for
from fluxedit.engine.tiny import build_tiny_pipeline
from fluxedit.training.dataset import load_pairs
from fluxedit.training.trainer import ATTENTION, TrainConfig, Trainer


def tiny_run(steps: int) -> None:
    folder = Path(tempfile.mkdtemp())
    for i in range(4):
        pattern(256, 256, seed=i).save(folder / f"p{i}_start.png")
        ImageOps.invert(pattern(256, 256, seed=i)).save(folder / f"p{i}_end.png")
    pairs = load_pairs(folder, default_caption="invert the colours")
    config = TrainConfig(steps=steps, rank=16, resolution=256, checkpoint_every=0)
    trainer = Trainer(build_tiny_pipeline(), torch.device("cpu"), pairs, config, folder / "out")
    trainer.prepare()
    started = time.perf_counter()
    trainer.run()
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"tiny model, CPU, 256x256 pairs, rank 16: {steps / seconds:.2f} steps/s, peak RSS {peak:.0f} MiB")


def gpu_step_memory(checkpointing: bool, optimizer_name: str) -> float:
    device = torch.device("cuda")
    model = build(FULL, device, torch.bfloat16).to(device)
    model.requires_grad_(False)
    model.add_adapter(LoraConfig(r=16, lora_alpha=16, target_modules=ATTENTION), adapter_name="bench")
    if checkpointing:
        model.enable_gradient_checkpointing()
    parameters = [p for p in model.parameters() if p.requires_grad]
    if optimizer_name == "adamw8bit":
        import bitsandbytes

        optimizer = bitsandbytes.optim.AdamW8bit(parameters, lr=1e-4)
    else:
        optimizer = torch.optim.AdamW(parameters, lr=1e-4)
    inputs = inputs_for(1024, device, torch.bfloat16)
    torch.cuda.reset_peak_memory_stats(device)
    prediction = model(
        hidden_states=torch.cat([inputs.noise, inputs.reference_tokens], dim=1),
        timestep=torch.full((1,), 0.5, device=device, dtype=torch.bfloat16),
        guidance=torch.full((1,), 1.0, device=device),
        pooled_projections=inputs.pooled_embeddings,
        encoder_hidden_states=inputs.text_embeddings,
        txt_ids=inputs.text_ids,
        img_ids=inputs.position_ids,
        return_dict=False,
    )[0]
    prediction.float().pow(2).mean().backward()
    optimizer.step()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    del model, optimizer, prediction
    torch.cuda.empty_cache()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    tiny_run(args.steps)
    if not torch.cuda.is_available():
        print("no GPU here: the full-size memory table needs one (python -m bench.train on a GPU machine)")
        return
    print(f"full-size transformer on {torch.cuda.get_device_name()}, 1024x1024 + 1024x1024 reference, LoRA rank 16")
    print("| gradient checkpointing | optimizer | peak GiB |\n|---|---|---|")
    for checkpointing in (False, True):
        for optimizer_name in ("adamw", "adamw8bit"):
            try:
                peak = f"{gpu_step_memory(checkpointing, optimizer_name):.1f}"
            except (ImportError, torch.cuda.OutOfMemoryError) as error:
                peak = f"n/a ({type(error).__name__})"
            print(f"| {'on' if checkpointing else 'off'} | {optimizer_name} | {peak} |")


if __name__ == "__main__":
    main()

"""Train a LoRA on the Kontext transformer from before/after pairs.

The loss is rectified-flow matching with the input image's tokens appended
after the noisy target tokens, exactly as the engine runs them at inference:
the images, the captions and the transformer call go through engine/kontext.py,
as an edit's do.
Text embeddings and latents are computed once. A fixed seed fixes everything:
the LoRA's initial weights, the order of the pairs, the noise and the caption
dropout; a run stopped at a checkpoint and resumed ends with the same weights
as an uninterrupted one.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from ..engine import kontext
from ..engine.lora_formats import diffusers_lora_to_bfl
from ..engine.tokens import pack
from ..resolution import PREFERRED_SIZES, nearest_preferred_size
from ..schema import EditCancelled
from ..training_options import TrainingOptions
from .dataset import Pair

ADAPTER = "fluxedit_training"  # not "train": that name clashes with nn.Module.train
ATTENTION = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]
# targets="all" adds the MLPs and the projections in and out of the token stream.
MLPS = ["ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2", "proj_mlp", "proj_out", "x_embedder"]


TrainConfig = TrainingOptions  # the name the worker still uses; the options are defined in training_options


@dataclass
class TrainProgress:
    step: int
    total: int
    loss: float
    seconds_left: float


@dataclass
class TrainResult:
    lora_path: Path
    comfyui_path: Path
    losses: list[float] = field(default_factory=list)
    steps: int = 0
    validation_images: list[Path] = field(default_factory=list)


@dataclass
class Example:
    name: str
    output_tokens: torch.Tensor  # (1, N, 64): the wanted result, clean
    reference_tokens: torch.Tensor  # (1, N_ref, 64): the input image
    position_ids: torch.Tensor
    caption: str


def bucket_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """The preferred Kontext size for this aspect, scaled to `resolution`^2 pixels, sides multiples of 16."""
    preferred = nearest_preferred_size(width, height)
    if resolution == 1024:
        return preferred
    scale = resolution / 1024
    return tuple(max(16, round(side * scale / 16) * 16) for side in preferred)


class Trainer:
    def __init__(self, pipe, device: torch.device, pairs: list[Pair], config: TrainingOptions, out_dir: Path):
        self.pipe = pipe
        self.device = device
        self.config = config
        self.out_dir = Path(out_dir)
        self.transformer = pipe.transformer
        held_out = min(config.validation_pairs, max(0, len(pairs) - 1))
        self.validation = pairs[len(pairs) - held_out :] if held_out else []
        self.pairs = pairs[: len(pairs) - held_out] if held_out else pairs
        self.generator = torch.Generator("cpu").manual_seed(config.seed)
        self.losses: list[float] = []
        self.step = 0

    # ---- preparation --------------------------------------------------------------------

    @torch.no_grad()
    def prepare(self) -> None:
        """Encode every caption and every image once; add the LoRA with seeded initial weights."""
        self.examples = [self._example(pair) for pair in self.pairs]
        captions = {pair.caption for pair in self.pairs} | {""}
        self.embeddings = {caption: self._encode_text(caption) for caption in captions}
        for module in (self.pipe.vae, self.pipe.text_encoder, self.pipe.text_encoder_2):
            module.requires_grad_(False)
        self.transformer.requires_grad_(False)
        torch.manual_seed(self.config.seed)
        targets = ATTENTION + (MLPS if self.config.targets == "all" else [])
        config = LoraConfig(
            r=self.config.rank,
            lora_alpha=self.config.alpha or self.config.rank,
            target_modules=targets,
            init_lora_weights="gaussian",
        )
        self.transformer.add_adapter(config, adapter_name=ADAPTER)
        self.transformer.set_adapter(ADAPTER)
        self.parameters = [p for p in self.transformer.parameters() if p.requires_grad]
        for parameter in self.parameters:
            parameter.data = parameter.data.float()  # LoRA weights train in fp32 even on a bf16 model
        checkpointing = self.config.gradient_checkpointing
        if checkpointing or (checkpointing is None and self.device.type == "cuda"):
            self.transformer.enable_gradient_checkpointing()
        self.optimizer = self._optimizer()

    def _example(self, pair: Pair) -> Example:
        """The pair as an edit sees it: the start image is the reference, the end image the output, both at the
        bucket's size (the output's grid and the reference's are the same)."""
        width, height = bucket_size(pair.start.image.width, pair.start.image.height, self.config.resolution)
        start = kontext.encode_latent(self.pipe, pair.start.image, width, height, self.device)
        end = kontext.encode_latent(self.pipe, pair.end.image, width, height, self.device)
        positions = kontext.position_ids(kontext.latent_grid(end), [kontext.latent_grid(start)])
        dtype = self.transformer.dtype
        return Example(pair.name, pack(end), pack(start), positions.to(self.device, dtype), pair.caption)

    def _encode_text(self, caption: str) -> kontext.PromptEmbeddings:
        return kontext.encode_prompt(self.pipe, caption, self.device)

    def _optimizer(self) -> torch.optim.Optimizer:
        if self.config.optimizer == "adamw8bit":
            import bitsandbytes

            return bitsandbytes.optim.AdamW8bit(self.parameters, lr=self.config.learning_rate)
        return torch.optim.AdamW(self.parameters, lr=self.config.learning_rate, weight_decay=1e-4)

    # ---- the loop -----------------------------------------------------------------------

    def run(
        self,
        progress: Callable[[TrainProgress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        stop_after: int | None = None,
        output: Path | None = None,
    ) -> TrainResult:
        """Train to `config.steps` (resuming from the newest checkpoint), save the LoRA at `output`."""
        self.resume()
        started, first_step = time.perf_counter(), self.step
        validation_images: list[Path] = []
        self.transformer.train()
        while self.step < self.config.steps:
            if should_stop is not None and should_stop():
                raise EditCancelled(f"training cancelled at step {self.step} of {self.config.steps}")
            loss = self._train_step()
            self.step += 1
            self.losses.append(loss)
            if self.config.checkpoint_every and self.step % self.config.checkpoint_every == 0:
                self.save_checkpoint()
            if self.config.validate_every and self.validation and self.step % self.config.validate_every == 0:
                validation_images += self.validate()
            if progress is not None:
                rate = (time.perf_counter() - started) / max(1, self.step - first_step)
                progress(TrainProgress(self.step, self.config.steps, loss, rate * (self.config.steps - self.step)))
            if stop_after is not None and self.step >= stop_after:
                break
        self.transformer.eval()
        lora, comfyui = self.save_lora(output or self.out_dir / "lora.safetensors")
        return TrainResult(lora, comfyui, list(self.losses), self.step, validation_images)

    def _train_step(self) -> float:
        example = self.examples[self._example_index(self.step)]
        noise = torch.randn(example.output_tokens.shape, generator=self.generator).to(self.device)
        sigma = torch.sigmoid(torch.randn(1, generator=self.generator)).item()  # logit-normal noise levels
        dropped = torch.rand(1, generator=self.generator).item() < self.config.caption_dropout
        prompt = self.embeddings["" if dropped else example.caption]
        clean = example.output_tokens.float()
        dtype = self.transformer.dtype
        noisy = ((1 - sigma) * clean + sigma * noise).to(dtype)
        velocity = noise - clean
        prediction = kontext.predict(
            self.transformer,
            noisy,
            example.reference_tokens,
            kontext.timesteps(sigma, 1, dtype, self.device),
            torch.full((1,), self.config.guidance, device=self.device, dtype=torch.float32),
            prompt,
            example.position_ids,
        )
        loss = torch.nn.functional.mse_loss(prediction.float(), velocity)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()

    def _example_index(self, step: int) -> int:
        """A fresh permutation per epoch, from the seed and the epoch alone (so resuming sees the same order)."""
        count = len(self.examples)
        epoch, position = divmod(step, count)
        order = torch.randperm(count, generator=torch.Generator("cpu").manual_seed(self.config.seed * 7919 + epoch))
        return int(order[position])

    def activate(self) -> None:
        """Make this training's adapter the model's only active one (predictions may have run in between)."""
        self.pipe.enable_lora()
        self.transformer.set_adapter(ADAPTER)
        for parameter in self.parameters:
            parameter.requires_grad_(True)

    def remove(self) -> None:
        """Take the adapter off the model: it is the base model again (the LoRA lives on in its file)."""
        self.transformer.eval()
        self.transformer.delete_adapters(ADAPTER)
        if self.transformer.is_gradient_checkpointing:
            self.transformer.disable_gradient_checkpointing()

    # ---- checkpoints ---------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """Write a checkpoint whole or not at all (a crash mid-write leaves only a partial-* folder), then delete
        all but the newest `keep_checkpoints`: resuming always finds a complete one."""
        checkpoints = self.out_dir / "checkpoints"
        folder = checkpoints / f"step-{self.step:06d}"
        partial = checkpoints / f"partial-step-{self.step:06d}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        state = get_peft_model_state_dict(self.transformer, adapter_name=ADAPTER)
        save_file(
            {k: v.detach().float().contiguous().cpu() for k, v in state.items()}, str(partial / "lora.safetensors")
        )
        torch.save(self.optimizer.state_dict(), partial / "optimizer.pt")
        torch.save(self.generator.get_state(), partial / "generator.pt")
        (partial / "state.json").write_text(
            json.dumps({"step": self.step, "losses": self.losses, **self.config.model_dump()})
        )
        shutil.rmtree(folder, ignore_errors=True)  # a re-run of the same step replaces it
        partial.rename(folder)
        for old in self.checkpoints()[: -max(1, self.config.keep_checkpoints)]:
            shutil.rmtree(old, ignore_errors=True)
        return folder

    def checkpoints(self) -> list[Path]:
        """The complete checkpoints, oldest first."""
        return sorted((self.out_dir / "checkpoints").glob("step-*"))

    def latest_checkpoint(self) -> Path | None:
        folders = self.checkpoints()
        return folders[-1] if folders else None

    def resume(self) -> None:
        folder = self.latest_checkpoint()
        if folder is None or self.step:
            return
        state = json.loads((folder / "state.json").read_text())
        weights = load_file(str(folder / "lora.safetensors"), device=str(self.device))
        set_peft_model_state_dict(self.transformer, weights, adapter_name=ADAPTER)
        self.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
        self.generator.set_state(torch.load(folder / "generator.pt", weights_only=True))
        self.step, self.losses = state["step"], state["losses"]

    # ---- outputs --------------------------------------------------------------------------

    def lora_state_dict(self) -> dict[str, torch.Tensor]:
        """The trained LoRA in diffusers layout, alpha/rank folded into the up matrices."""
        scale = (self.config.alpha or self.config.rank) / self.config.rank
        state = get_peft_model_state_dict(self.transformer, adapter_name=ADAPTER)
        result = {}
        for key, tensor in state.items():
            tensor = tensor.detach().float().cpu()
            result[f"transformer.{key}"] = tensor * scale if ".lora_B." in key else tensor
        return result

    def save_lora(self, path: Path) -> tuple[Path, Path]:
        """Write the LoRA in diffusers layout at `path`, and in ComfyUI's (BFL) layout beside it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        state = self.lora_state_dict()
        metadata = {"format": "pt", "fluxedit": json.dumps({"steps": self.step, "rank": self.config.rank})}
        save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=metadata)
        comfyui = path.with_name(path.stem + "-comfyui.safetensors")
        widths = {
            name: module.out_features
            for name, module in self.transformer.named_modules()
            if hasattr(module, "out_features")
        }
        bfl = diffusers_lora_to_bfl(state, widths)
        save_file({k: v.contiguous() for k, v in bfl.items()}, str(comfyui), metadata=metadata)
        return path, comfyui

    @torch.no_grad()
    def validate(self) -> list[Path]:
        """Edit each held-out pair's input with the LoRA as it is now; save the results."""
        from PIL import Image

        from ..engine.devices import Placement
        from ..engine.engine import EditRequest, Engine
        from ..engine.loading import LoadedModel
        from ..schema import validated_settings

        self.transformer.eval()
        engine = Engine(LoadedModel(self.pipe, None, Placement(self.device, self.transformer.dtype, "gpu")))
        folder = self.out_dir / "validation"
        folder.mkdir(parents=True, exist_ok=True)
        saved = []
        for pair in self.validation:
            settings = validated_settings(prompt=pair.caption, num_inference_steps=20, seed=self.config.seed)
            pixels = engine.generate(EditRequest(settings, [pair.start])).pixels[0]
            path = folder / f"step-{self.step:06d}-{pair.name}.png"
            Image.fromarray((pixels * 255).round().astype("uint8")).save(path)
            saved.append(path)
        self.transformer.train()
        return saved


def preferred_area_sizes(resolution: int) -> list[tuple[int, int]]:
    """The bucket sizes a resolution gives (for documentation and tests)."""
    return sorted({bucket_size(w, h, resolution) for w, h in PREFERRED_SIZES})


def loss_drop(losses: list[float], window: int = 20) -> float:
    """Mean loss of the last `window` steps over that of the first `window`: below 0.5 means halved."""
    window = max(1, min(window, len(losses) // 2))
    return (sum(losses[-window:]) / window) / (sum(losses[:window]) / window)

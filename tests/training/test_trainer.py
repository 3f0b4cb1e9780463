"""Training on the tiny model: the loss falls, the LoRA moves edits towards the targets, resuming is exact."""

import numpy as np
import pytest
import torch
from PIL import ImageOps
from safetensors.torch import load_file

from fluxedit.engine import EditRequest, Engine
from fluxedit.engine.loras import LoraSpec
from fluxedit.engine.tiny import build_tiny_pipeline
from fluxedit.imaging.decode import DecodedImage
from fluxedit.schema import OutputFormat
from fluxedit.training.dataset import load_pairs
from fluxedit.training.trainer import Trainer, bucket_size, loss_drop
from fluxedit.training_options import TrainingOptions
from tests.helpers import pattern, settings

FAST = {"resolution": 256, "caption_dropout": 0.0, "rank": 32, "targets": "all", "learning_rate": 3e-3}


@pytest.fixture(scope="module")
def inverted_pairs(tmp_path_factory):
    """Pairs whose target is the colour-inverted input."""
    folder = tmp_path_factory.mktemp("inverted")
    for i in range(4):
        picture = pattern(256, 256, seed=i)
        picture.save(folder / f"p{i}_start.png")
        ImageOps.invert(picture).save(folder / f"p{i}_end.png")
    return load_pairs(folder, default_caption="invert the colours")


def train(pairs, out_dir, **config):
    trainer = Trainer(build_tiny_pipeline(), torch.device("cpu"), pairs, TrainingOptions(**config), out_dir)
    trainer.prepare()
    return trainer


@pytest.fixture(scope="module")
def trained(inverted_pairs, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    trainer = train(inverted_pairs, out, steps=200, checkpoint_every=0, **FAST)
    return trainer.run(output=out / "invert.safetensors")


def test_the_loss_falls_by_half_within_200_steps(trained):
    assert trained.steps == 200
    assert loss_drop(trained.losses) < 0.5


def test_the_lora_moves_edits_towards_the_targets(trained, inverted_pairs):
    engine = Engine.load(model="tiny", device="cpu")
    pair = inverted_pairs[0]
    target = np.asarray(pair.end.image.resize((1024, 1024)), dtype=np.float32) / 255
    request = dict(settings=settings(prompt="invert the colours", num_inference_steps=8, resolution_mode="1:1"))
    base = engine.generate(EditRequest(images=[pair.start], **request)).pixels[0]
    tuned = engine.generate(
        EditRequest(images=[pair.start], loras=[LoraSpec(str(trained.lora_path), 1.0)], **request)
    ).pixels[0]
    assert np.mean((tuned - target) ** 2) < np.mean((base - target) ** 2)


def test_the_comfyui_copy_acts_as_the_diffusers_one(trained, inverted_pairs):
    engine = Engine.load(model="tiny", device="cpu")
    image = DecodedImage(pattern(256, 256, seed=9), OutputFormat.png)
    request = dict(settings=settings(num_inference_steps=2, resolution_mode="1:1"), images=[image])
    diffusers_layout = engine.generate(EditRequest(loras=[LoraSpec(str(trained.lora_path), 1.0)], **request)).pixels
    comfyui_layout = engine.generate(EditRequest(loras=[LoraSpec(str(trained.comfyui_path), 1.0)], **request)).pixels
    assert any(
        key.startswith("diffusion_model.double_blocks.0.img_attn.qkv") for key in load_file(trained.comfyui_path)
    )
    assert np.abs(diffusers_layout - comfyui_layout).max() < 1e-4


def test_stop_and_resume_ends_with_the_weights_of_an_uninterrupted_run(inverted_pairs, tmp_path):
    config = dict(steps=12, checkpoint_every=4, seed=3, **FAST)
    straight = train(inverted_pairs, tmp_path / "straight", **config).run(output=tmp_path / "straight.safetensors")
    train(inverted_pairs, tmp_path / "resumed", **config).run(stop_after=6)  # stopped after step 6; last checkpoint: 4
    resumed = train(inverted_pairs, tmp_path / "resumed", **config).run(output=tmp_path / "resumed.safetensors")
    assert resumed.losses == straight.losses
    first, second = load_file(straight.lora_path), load_file(resumed.lora_path)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_validation_edits_are_saved_as_images(inverted_pairs, tmp_path):
    trainer = train(inverted_pairs, tmp_path, steps=4, checkpoint_every=0, validate_every=2, validation_pairs=1, **FAST)
    result = trainer.run(output=tmp_path / "v.safetensors")
    assert len(trainer.pairs) == 3 and len(trainer.validation) == 1
    assert [p.name for p in result.validation_images] == ["step-000002-p3.png", "step-000004-p3.png"]


def test_buckets_keep_the_kontext_aspect_ratios():
    assert bucket_size(640, 480, 1024) == (1184, 880)
    assert bucket_size(640, 480, 512) == (592, 448)
    assert bucket_size(300, 300, 256) == (256, 256)

"""A tiny, randomly initialised NSFW image classifier built in code, for offline tests.

Its classifier weights are zeroed and its bias set, so the verdict does not
depend on the image: it flags everything or nothing, whatever the random
backbone makes of the pixels.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

TINY_SAFETY_SEED = 0
TINY_SAFETY_SIZE = 32
TINY_SAFETY_LABELS = {0: "normal", 1: "nsfw"}
VERDICT_LOGIT = 10.0  # softmax([0, 10]) puts 0.99995 on the winning label


def build_tiny_safety_model(flag_everything: bool, seed: int = TINY_SAFETY_SEED) -> ViTForImageClassification:
    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=TINY_SAFETY_SIZE,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        id2label=TINY_SAFETY_LABELS,
        label2id={label: index for index, label in TINY_SAFETY_LABELS.items()},
    )
    model = ViTForImageClassification(config).eval()
    winner = 1 if flag_everything else 0
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        model.classifier.bias[winner] = VERDICT_LOGIT
    return model


def write_tiny_safety_model(folder: str | Path, flag_everything: bool) -> Path:
    """Save the tiny classifier and its image processor to `folder` and return the folder."""
    folder = Path(folder)
    build_tiny_safety_model(flag_everything).save_pretrained(folder)
    size = {"height": TINY_SAFETY_SIZE, "width": TINY_SAFETY_SIZE}
    ViTImageProcessor(size=size).save_pretrained(folder)
    return folder

"""An optional NSFW check on the edited images, with any Hugging Face image classifier.

The operator picks the classifier (`--safety-model`); we only need its labels
to say which classes count as unsafe. A flagged image is replaced by a black
one of the same size, so the response keeps its shape and the caller learns
which images were withheld from `has_nsfw_concepts`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING

from ..schema import ModelUnavailable

DEFAULT_FLAGGED_LABELS = ("nsfw", "porn", "hentai", "sexy", "explicit", "unsafe")


class SafetyChecker:
    def __init__(
        self,
        model: torch.nn.Module,
        processor,
        threshold: float = 0.5,
        flagged_labels: Sequence[str] = DEFAULT_FLAGGED_LABELS,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"the safety threshold must be in (0, 1], got {threshold}")
        wanted = {label.lower() for label in flagged_labels}
        labels = {int(index): str(label) for index, label in model.config.id2label.items()}
        self.flagged_indices = sorted(index for index, label in labels.items() if label.lower() in wanted)
        if not self.flagged_indices:
            # A checker that can never flag anything would silently turn the safety check off.
            raise ModelUnavailable(
                f"none of the safety model's labels ({', '.join(labels.values())}) is a flagged label "
                f"({', '.join(flagged_labels)}): choose an NSFW classifier or name its unsafe labels"
            )
        self.model = model.eval()
        self.processor = processor
        self.threshold = threshold
        self.flagged_labels = tuple(flagged_labels)

    @classmethod
    def load(
        cls,
        source: str,
        device: str | torch.device = "cpu",
        threshold: float = 0.5,
        flagged_labels: Sequence[str] = DEFAULT_FLAGGED_LABELS,
    ) -> SafetyChecker:
        """Load an image classifier from a local folder or a hub repo id, or say why it cannot be used."""
        path = Path(source).expanduser()
        if path.is_dir():
            location, kwargs = str(path), {"local_files_only": True}
        elif path.exists() or source.startswith(("/", ".", "~")):
            raise ModelUnavailable(
                f"safety model {source} is not a folder: point --safety-model at a folder holding config.json, "
                "preprocessor_config.json and model.safetensors, or at a hub repo id"
            )
        else:
            location, kwargs = source, {}
        try:
            config = AutoConfig.from_pretrained(location, **kwargs)
        except (OSError, ValueError) as error:
            raise ModelUnavailable(f"could not load the safety model config from {source}: {error}") from None
        if type(config) not in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING:
            raise ModelUnavailable(
                f"safety model {source} is a {config.model_type!r} model, not an image classifier: "
                "--safety-model needs an image-classification model (e.g. a ViT NSFW detector)"
            )
        try:
            # safetensors only: pickled weights can run code when opened.
            model = AutoModelForImageClassification.from_pretrained(location, use_safetensors=True, **kwargs)
            processor = AutoImageProcessor.from_pretrained(location, **kwargs)
        except (OSError, ValueError) as error:
            raise ModelUnavailable(f"could not load the safety model from {source}: {error}") from None
        return cls(model.to(device), processor, threshold, flagged_labels)

    def flags(self, images: list[Image.Image]) -> list[bool]:
        """Whether each image is unsafe, all of them classified in one forward pass."""
        if not images:
            return []
        inputs = self.processor(images=[image.convert("RGB") for image in images], return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.model.device, self.model.dtype)
        with torch.inference_mode():
            logits = self.model(pixel_values=pixels).logits.float()
        flagged = logits[:, self.flagged_indices]
        if self.model.config.problem_type == "multi_label_classification":
            # Independent sigmoids do not add up to a probability: take the surest unsafe label.
            scores = flagged.sigmoid().amax(dim=-1)
        else:
            scores = logits.softmax(dim=-1)[:, self.flagged_indices].sum(dim=-1)
        return [bool(score >= self.threshold) for score in scores]

    def apply(self, images: list[Image.Image]) -> tuple[list[Image.Image], list[bool]]:
        """The images with the flagged ones blacked out, and which ones were flagged."""
        flags = self.flags(images)
        kept = [Image.new("RGB", image.size) if flag else image for image, flag in zip(images, flags, strict=True)]
        return kept, flags

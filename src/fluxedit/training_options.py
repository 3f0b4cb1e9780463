"""The options of a LoRA training, defined once: `fluxedit train`, the API's /v1/trainings and the trainer
read these models. Torch-free, so the API validates a training without loading a model.

Two layers: what a training's caller chooses wherever it runs (TrainingHyperparameters, the API's input with
`name`), and how one process runs it (TrainingOptions: checkpoints, validation edits, optimizer, memory). The
server decides the second part itself (it checkpoints every slice and keeps its own number of checkpoints), so
the API refuses those fields as unknown, as it always has.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .schema import MAX_PROMPT_CHARS, MAX_SEED, InputError, input_error_from, refuse_booleans, refuse_numbers

Model = TypeVar("Model", bound=BaseModel)


class TrainingHyperparameters(BaseModel):
    """What shapes the LoRA: chosen by the caller, on the command line or through the API."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(1000, ge=1, le=100_000, description="Training steps.")
    learning_rate: float = Field(1e-4, gt=0, le=1, description="AdamW learning rate.")
    rank: int = Field(16, ge=1, le=256, description="LoRA rank.")
    alpha: float | None = Field(None, gt=0, allow_inf_nan=False, description="LoRA alpha (default: the rank).")
    targets: str = Field(
        "attention", pattern="^(attention|all)$", description="attention, or all (attention, MLPs, projections)."
    )
    resolution: int = Field(
        1024, ge=128, le=1024, description="Bucket side: 1024 trains at the Kontext sizes, 512 at a quarter."
    )
    default_caption: str | None = Field(
        None, max_length=MAX_PROMPT_CHARS, description="Caption for pairs without a NAME.txt."
    )
    trigger_word: str | None = Field(None, max_length=100, description="A word put before every caption.")
    caption_dropout: float = Field(0.05, ge=0, lt=1, description="Share of steps trained with an empty caption.")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Fixes everything: same seed, same weights.")

    @field_validator("steps", "learning_rate", "rank", "alpha", "resolution", "caption_dropout", "seed", mode="before")
    @classmethod
    def _numbers(cls, value: object) -> object:
        return refuse_booleans(value)  # "steps": true is not one step


class TrainingInput(TrainingHyperparameters):
    """A training as the API takes it (the data itself comes as a zip beside it)."""

    name: str | None = Field(None, description="The name the LoRA is registered under (default: training-<id>).")


class TrainingOptions(TrainingHyperparameters):
    """Everything the trainer reads: the hyperparameters and how this process runs them."""

    guidance: float = Field(
        1.0, ge=0, le=20, allow_inf_nan=False, description="The distilled guidance the transformer sees in training."
    )
    checkpoint_every: int = Field(250, ge=0, description="Save a resumable checkpoint every N steps (0: never).")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept (the newest; older ones are deleted).")
    validate_every: int = Field(0, ge=0, description="Edit the held-out pairs every N steps (0: never).")
    validation_pairs: int = Field(0, ge=0, description="Pairs held out for validation edits.")
    optimizer: str = Field(
        "adamw", pattern="^(adamw|adamw8bit)$", description="adamw, or adamw8bit (bitsandbytes, CUDA)."
    )
    gradient_checkpointing: bool | None = Field(
        None, description="Recompute activations in the backward pass: less memory, slower (default: on for CUDA)."
    )

    @field_validator("guidance", "checkpoint_every", "keep_checkpoints", "validate_every", "validation_pairs",
                     mode="before")  # fmt: skip
    @classmethod
    def _run_numbers(cls, value: object) -> object:
        return refuse_booleans(value)

    @field_validator("gradient_checkpointing", mode="before")
    @classmethod
    def _switch(cls, value: object) -> object:
        return refuse_numbers(value)


def validated_training_input(fields: dict) -> TrainingInput:
    """The API's input, or an InputError naming `input.<field>` and the limit."""
    return _validated(TrainingInput, fields, prefix="input.")


def validated_training_options(fields: dict) -> TrainingOptions:
    """The trainer's options (from `fluxedit train`), or an InputError naming the field and the limit."""
    return _validated(TrainingOptions, fields, prefix="")


def _validated(model: type[Model], fields: dict, prefix: str) -> Model:
    try:
        return model(**fields)
    except ValidationError as error:
        problem = input_error_from(error)
        raise InputError(prefix + problem.field, problem.problem) from None

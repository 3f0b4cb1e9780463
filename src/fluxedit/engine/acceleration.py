"""Which denoising steps run the transformer in full, for each acceleration level.

- none: every step.
- regular: the first two steps, the last, and every second step between; the
  others extrapolate the model output to first order from the last two full
  passes (as TaylorSeer does). 15 full passes of 28.
- high: the first three, the last, and every third step between: 12 of 28.
  On capable GPUs it also uses fp8 linear layers and compiled blocks.

The adaptive mode (First-Block-Cache) instead runs the first block on every
step and skips the rest when its residual barely changed. A threshold of 0
switches caching off in both modes: every step in full, exactly as `none`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LEVELS = ("none", "regular", "high")
CACHE_MODES = ("schedule", "adaptive")
# (full steps at the start, interval of full steps after them) per level in schedule mode
SCHEDULES = {"regular": (2, 2), "high": (3, 3)}
# First-Block-Cache thresholds per level in adaptive mode (relative change of the first block's residual)
ADAPTIVE_THRESHOLDS = {"regular": 0.05, "high": 0.08}


@dataclass(frozen=True)
class StepPlan:
    level: str
    mode: str  # "full", "schedule" or "adaptive"
    full_steps: frozenset[int]  # schedule mode: the steps that run the transformer
    threshold: float = 0.0  # adaptive mode


def plan_steps(level: str, steps: int, mode: str = "schedule", threshold: float | None = None) -> StepPlan:
    """The plan for `steps` denoising steps at `level`; threshold 0 means no caching at all."""
    if level not in LEVELS:
        raise ValueError(f"acceleration must be one of {', '.join(LEVELS)} (got {level!r})")
    if mode not in CACHE_MODES:
        raise ValueError(f"cache mode must be one of {', '.join(CACHE_MODES)} (got {mode!r})")
    every_step = frozenset(range(steps))
    if level == "none" or threshold == 0:
        return StepPlan(level, "full", every_step)
    if mode == "adaptive":
        return StepPlan(level, "adaptive", every_step, threshold or ADAPTIVE_THRESHOLDS[level])
    warmup, interval = SCHEDULES[level]
    full = set(range(min(warmup, steps))) | {steps - 1}
    full |= {i for i in range(warmup, steps - 1) if (i - warmup) % interval == interval - 1}
    return StepPlan(level, "schedule", frozenset(full))


class VelocityExtrapolator:
    """First-order extrapolation of the model output in sigma from the last two full passes."""

    def __init__(self) -> None:
        self.history: list[tuple[float, torch.Tensor]] = []

    def record(self, sigma: float, velocity: torch.Tensor) -> None:
        self.history = [*self.history[-1:], (sigma, velocity)]

    def predict(self, sigma: float) -> torch.Tensor:
        if len(self.history) == 1:
            return self.history[0][1]
        (sigma_a, velocity_a), (sigma_b, velocity_b) = self.history
        slope = (velocity_b - velocity_a) / (sigma_b - sigma_a)
        return velocity_b + slope * (sigma - sigma_b)

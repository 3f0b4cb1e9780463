"""The adaptive step cache: diffusers' First-Block-Cache hook, with a count of the full passes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from diffusers.hooks import FirstBlockCacheConfig


@dataclass
class PassCounter:
    full_passes: int = 0


@contextmanager
def first_block_cache(transformer: torch.nn.Module, threshold: float) -> Iterator[PassCounter]:
    """Within the block, a call whose first-block residual changed less than `threshold` skips the rest."""
    counter = PassCounter()

    def count(*_args) -> None:
        counter.full_passes += 1

    # The cache hook wraps the blocks' forward, so a hook on the block itself fires even when skipped;
    # a layer inside the last block runs only when the pass really ran.
    handle = transformer.single_transformer_blocks[-1].proj_out.register_forward_hook(count)
    transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
    try:
        with transformer.cache_context("fluxedit-edit"):
            yield counter
    finally:
        transformer.disable_cache()
        handle.remove()

"""Latents as transformer tokens: 2x2 packing and the position ids of each image.

Position ids are (index, row, column) per token. The output image has index 0.
Every reference image has index 1 and, with several references, each one sits
beside the previous ones as if the images were stitched into one canvas (the
"offset" method that works with the released weights): along the width or the
height, whichever keeps that canvas squarer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) latents -> (B, H/2 * W/2, C*4) tokens."""
    batch, channels, height, width = latents.shape
    patches = latents.view(batch, channels, height // 2, 2, width // 2, 2)
    patches = patches.permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(batch, (height // 2) * (width // 2), channels * 4)


def unpack(tokens: torch.Tensor, latent_height: int, latent_width: int) -> torch.Tensor:
    """(B, N, C*4) tokens -> (B, C, H, W) latents; the inverse of `pack`."""
    batch, _, packed_channels = tokens.shape
    channels = packed_channels // 4
    patches = tokens.view(batch, latent_height // 2, latent_width // 2, channels, 2, 2)
    patches = patches.permute(0, 3, 1, 4, 2, 5)
    return patches.reshape(batch, channels, latent_height, latent_width)


def grid_ids(rows: int, cols: int, index: int = 0, row_offset: int = 0, col_offset: int = 0) -> torch.Tensor:
    """Position ids (rows*cols, 3) of a token grid, row-major."""
    ids = torch.zeros(rows, cols, 3)
    ids[..., 0] = index
    ids[..., 1] = torch.arange(rows)[:, None] + row_offset
    ids[..., 2] = torch.arange(cols)[None, :] + col_offset
    return ids.reshape(rows * cols, 3)


@dataclass(frozen=True)
class Placement:
    """Where one reference image's token grid sits in position space."""

    rows: int
    cols: int
    row_offset: int
    col_offset: int


def place_references(grids: list[tuple[int, int]]) -> list[Placement]:
    """Place reference token grids (rows, cols) with the offset method."""
    placements = []
    canvas_rows = canvas_cols = 0
    for rows, cols in grids:
        row_offset = col_offset = 0
        # Extend the canvas in the direction that keeps it closer to square.
        if rows + canvas_rows > cols + canvas_cols:
            col_offset = canvas_cols
        else:
            row_offset = canvas_rows
        canvas_rows = max(canvas_rows, rows + row_offset)
        canvas_cols = max(canvas_cols, cols + col_offset)
        placements.append(Placement(rows, cols, row_offset, col_offset))
    return placements


def reference_ids(grids: list[tuple[int, int]]) -> torch.Tensor:
    """Position ids of all reference tokens, in order, each reference with index 1."""
    parts = [grid_ids(p.rows, p.cols, 1, p.row_offset, p.col_offset) for p in place_references(grids)]
    return torch.cat(parts, dim=0)

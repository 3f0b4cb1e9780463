"""`--quantize auto`: the largest precision that fits the GPU's free memory, computed from weight bytes.

Weight bytes per precision (the blocks' linear layers hold over 99% of the parameters):
- none: 2 bytes a parameter (bf16);
- fp8, int8: 1 byte a linear weight (plus one scale a row, negligible), 2 for the rest;
- nf4: half a byte a linear weight plus a 4-byte scale per 64, 2 for the rest.
Headroom for the activations of a 1024x1024 edit with a 1024x1024 reference: devices.ACTIVATION_HEADROOM.
Off CUDA, auto quantizes nothing: memory is not what limits the CPU or MPS.
"""

from __future__ import annotations

from dataclasses import dataclass

from .devices import ACTIVATION_HEADROOM, GIB
from .quantize import NF4_BLOCK

# FLUX.1 Kontext [dev]: (parameters in quantized linear layers, other parameters), counted on the real
# configurations built on the meta device (a test checks these against diffusers' and transformers' classes).
REAL_TRANSFORMER = (11_834_425_344, 66_982_976)
REAL_T5 = (4_630_511_616, 263_395_328)
REAL_OTHERS_BYTES = 246_000_000 + 168_000_000  # CLIP-L and the VAE, kept in bf16


@dataclass(frozen=True)
class PrecisionChoice:
    transformer: str
    text_encoder: str
    reason: str


def weight_bytes(counts: tuple[int, int], precision: str) -> int:
    linear, other = counts
    per_linear = {"none": 2.0, "fp8": 1.0, "int8": 1.0, "nf4": 0.5 + 4 / NF4_BLOCK}[precision]
    return int(linear * per_linear + other * 2)


def choose_precision(
    requested: str,
    requested_text: str,
    free_bytes: int | None,
    fp8_capable: bool,
    transformer: tuple[int, int] = REAL_TRANSFORMER,
    t5: tuple[int, int] | None = REAL_T5,
    others_bytes: int = REAL_OTHERS_BYTES,
) -> PrecisionChoice:
    """Resolve `auto` for the transformer and T5. free_bytes None: not on CUDA. t5 None: T5 stays on the CPU."""
    if requested != "auto" and requested_text != "auto":
        return PrecisionChoice(requested, requested_text, "as asked")
    if free_bytes is None:
        return PrecisionChoice(
            "none" if requested == "auto" else requested,
            "none" if requested_text == "auto" else requested_text,
            "not on a CUDA GPU: auto quantizes only to fit GPU memory",
        )
    eight = "fp8" if fp8_capable else "int8"
    options = ["none", eight, "nf4"] if requested == "auto" else [requested]
    text_options = ["none", "int8"] if requested_text == "auto" else [requested_text]
    free_gib = free_bytes / GIB
    for precision in options:
        for text in text_options:
            total = weight_bytes(transformer, precision) + others_bytes + ACTIVATION_HEADROOM
            total += weight_bytes(t5, text) if t5 is not None else 0
            if total <= free_bytes:
                return PrecisionChoice(
                    precision,
                    text,
                    f"{free_gib:.1f} GiB free: the transformer in {precision}, T5 in {text}, all on the GPU "
                    f"({total / GIB:.1f} GiB with the activations' headroom)",
                )
    # Nothing fits whole: the largest transformer that fits alone (model offload moves the rest in turn).
    for precision in options:
        alone = weight_bytes(transformer, precision) + ACTIVATION_HEADROOM
        if alone <= free_bytes:
            text = text_options[-1]
            return PrecisionChoice(
                precision,
                text,
                f"{free_gib:.1f} GiB free: not everything fits; the transformer in {precision} "
                f"({alone / GIB:.1f} GiB with headroom) and T5 in {text}, moved to the GPU in turn",
            )
    return PrecisionChoice(
        options[-1],
        text_options[-1],
        f"{free_gib:.1f} GiB free: even the {options[-1]} transformer does not fit; its blocks stream to the GPU",
    )

"""A tiny, randomly initialised FLUX.1 Kontext pipeline built in code.

It has the real geometry (8x VAE, 16 latent channels, 2x2 patches, the same
text-encoder classes and tokenizer classes) but a few thousand parameters, so
the whole stack runs offline on a CPU. Its images are noise: it exists for
tests and for trying the service without a GPU. Built deterministically from
a seed; `write_tiny_model` saves it in diffusers layout so the local-folder
loading path is exercised too.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxKontextPipeline,
    FluxTransformer2DModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

TINY_SEED = 0
TEXT_WIDTH = 32
CLIP_MAX_LENGTH = 77


def _byte_level_alphabet() -> list[str]:
    """The 256 printable characters GPT-2-style byte-level BPE maps bytes to."""
    printable = list(range(ord("!"), ord("~") + 1))
    printable += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def tiny_clip_tokenizer() -> CLIPTokenizer:
    # One token per byte (and its end-of-word form): no merges needed.
    specials = ["<|startoftext|>", "<|endoftext|>"]
    alphabet = _byte_level_alphabet()
    pieces = specials + alphabet + [c + "</w>" for c in alphabet]
    vocab = {piece: index for index, piece in enumerate(pieces)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=CLIP_MAX_LENGTH)


def tiny_t5_tokenizer() -> T5Tokenizer:
    # One piece per printable ASCII character, plus the word-start marker.
    characters = ["▁"] + [chr(c) for c in range(32, 127)]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(c, -float(i)) for i, c in enumerate(characters)]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


TINY_TRANSFORMER_CONFIG = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 1,
    "num_single_layers": 1,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": TEXT_WIDTH,
    "pooled_projection_dim": TEXT_WIDTH,
    "guidance_embeds": True,
    "axes_dims_rope": [4, 4, 8],
}
TINY_VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": (4, 4, 4, 4),
    "layers_per_block": 1,
    "latent_channels": 16,
    "norm_num_groups": 1,
    "sample_size": 32,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    "shift_factor": 0.1159,
    "scaling_factor": 0.3611,
}
# FLUX's own scheduler settings (the real model's scheduler config holds these same values).
FLUX_SCHEDULER_CONFIG = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 4096,
    "max_shift": 1.15,
    "shift": 3.0,
    "use_dynamic_shifting": True,
}


def tiny_clip_config(tokenizer: CLIPTokenizer) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_WIDTH,
        intermediate_size=37,
        num_hidden_layers=5,
        num_attention_heads=4,
        max_position_embeddings=CLIP_MAX_LENGTH,
        projection_dim=TEXT_WIDTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def tiny_t5_config(tokenizer: T5Tokenizer) -> T5Config:
    return T5Config(
        vocab_size=len(tokenizer),
        d_model=TEXT_WIDTH,
        d_kv=8,
        d_ff=37,
        num_layers=5,
        num_heads=4,
        relative_attention_num_buckets=8,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )


def build_tiny_pipeline(seed: int = TINY_SEED) -> FluxKontextPipeline:
    """Build the tiny pipeline on the CPU in float32, same weights for the same seed."""
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(**TINY_TRANSFORMER_CONFIG)
    vae = AutoencoderKL(**TINY_VAE_CONFIG)
    clip_tokenizer = tiny_clip_tokenizer()
    text_encoder = CLIPTextModel(tiny_clip_config(clip_tokenizer))
    t5_tokenizer = tiny_t5_tokenizer()
    text_encoder_2 = T5EncoderModel(tiny_t5_config(t5_tokenizer))
    scheduler = FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER_CONFIG)
    return FluxKontextPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder.eval(),
        tokenizer=clip_tokenizer,
        text_encoder_2=text_encoder_2.eval(),
        tokenizer_2=t5_tokenizer,
        transformer=transformer.eval(),
    )


def write_tiny_model(folder: str | Path, seed: int = TINY_SEED) -> Path:
    """Save the tiny pipeline to `folder` in diffusers layout and return the folder."""
    folder = Path(folder)
    build_tiny_pipeline(seed).save_pretrained(folder)
    return folder


def write_tiny_bfl_checkpoint(path: str | Path, seed: int = TINY_SEED) -> Path:
    """Save the tiny transformer as a BFL single-file checkpoint (the layout ComfyUI users have)."""
    from safetensors.torch import save_file

    from .bfl_checkpoint import diffusers_to_bfl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = diffusers_to_bfl(build_tiny_pipeline(seed).transformer.state_dict())
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path

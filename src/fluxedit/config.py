"""One Settings object for the whole program: FLUXEDIT_* environment variables, overridden by CLI flags."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "black-forest-labs/FLUX.1-Kontext-dev"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLUXEDIT_", extra="ignore")

    model: str = DEFAULT_MODEL
    """A hub repo id, a diffusers folder, a BFL single-file .safetensors, or "tiny"."""
    components: str = DEFAULT_MODEL
    """Where the text encoders, VAE and configs come from when `model` is a single file."""
    device: str = "auto"
    """auto, cuda, cuda:N, mps or cpu."""
    dtype: str = "auto"
    """auto (bf16 on CUDA, fp32 on CPU), bfloat16, float16 or float32."""
    memory: str = "auto"
    """auto, gpu, model-offload, group-offload or sequential-offload (docs/engine.md)."""

    def engine_options(self) -> dict[str, str]:
        return {
            "model": self.model,
            "components": self.components,
            "device": self.device,
            "dtype": self.dtype,
            "memory_mode": self.memory,
        }

"""fluxedit: a self-hosted image-editing service for FLUX.1 Kontext [dev]."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .client import Client

__all__ = ["Client", "__version__"]


def __getattr__(name: str):
    # Lazy: `import fluxedit` (the CLI, the workers) must not pay for httpx and pydantic until Client is used.
    if name == "Client":
        from .client import Client

        return Client
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The model layer: load FLUX.1 Kontext from any source and run edits. Only here (and in
training/) is torch imported, so the layers above start without loading a model."""

import os

# transformers announces optional backends at import; keep the CLI's output for our users.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

__all__ = ["EditRequest", "EditResult", "Engine", "Progress"]


def __getattr__(name: str):
    # Loaded on first use, so light submodules (sources) are importable without torch: the CLI checks a
    # --model value at once, before paying seconds of imports.
    if name in __all__:
        from importlib import import_module

        return getattr(import_module(".engine", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The model layer: load FLUX.1 Kontext from any source and run edits. Only here (and in
training/) is torch imported, so the layers above start without loading a model."""

import os

# transformers announces optional backends at import; keep the CLI's output for our users.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from .engine import EditRequest, EditResult, Engine, Progress

__all__ = ["EditRequest", "EditResult", "Engine", "Progress"]

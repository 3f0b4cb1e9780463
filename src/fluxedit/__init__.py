"""fluxedit: a self-hosted image-editing service for FLUX.1 Kontext [dev]."""

__version__ = "0.1.0"

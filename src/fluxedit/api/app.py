"""The FastAPI application: routers of every dialect over one set of services."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from .. import __version__
from ..config import Settings
from ..imaging.decode import configure_decoding
from ..mcp.http import mount_mcp
from ..service.services import Services
from . import health
from .body_limit import install_body_limits
from .docs import documented_app
from .errors import install_error_handlers
from .openai import errors as openai_errors
from .openai import images as openai_images
from .playground import mount_playground
from .replicate import errors as replicate_errors
from .replicate import predictions as replicate_predictions
from .replicate import webhooks as replicate_webhooks
from .seed import batches, files, loras, models, predictions, trainings, usage, webhook_log


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        services = Services.build(settings)
        services.runner.webhooks.register(
            replicate_predictions.WEBHOOK_FORMAT, replicate_webhooks.webhook_format(services)
        )
        app.state.services = services
        await services.start()
        try:
            yield
        finally:
            await services.stop()

    app = documented_app(  # /docs and /redoc work offline
        title="fluxedit",
        version=__version__,
        description="Self-hosted image editing with FLUX.1 Kontext [dev].",
        lifespan=lifespan,
    )
    install_error_handlers(app, [replicate_errors.ERROR_SHAPE, openai_errors.ERROR_SHAPE])
    install_body_limits(app, settings)  # every body counted while it streams: 413 past its endpoint's limit
    configure_decoding(settings.max_input_pixels, settings.decode_memory_bytes, settings.decode_concurrency)
    dialects = (replicate_predictions, replicate_webhooks, openai_images)  # Replicate's and OpenAI's clients
    for module in (predictions, batches, webhook_log, files, loras, trainings, models, usage, health, *dialects):
        app.include_router(module.router)
    mount_playground(app)
    mount_mcp(app, settings)  # /mcp: the MCP tools over streamable HTTP, with the same API keys
    return app

"""The FastAPI application: routers of every dialect over one set of services."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from .. import __version__
from ..config import Settings
from ..service.services import Services
from . import health
from .errors import install_error_handlers
from .seed import files, models, predictions, usage


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        services = Services.build(settings)
        app.state.services = services
        await services.start()
        try:
            yield
        finally:
            await services.stop()

    app = FastAPI(
        title="fluxedit",
        version=__version__,
        description="Self-hosted image editing with FLUX.1 Kontext [dev].",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    for module in (predictions, files, models, usage, health):
        app.include_router(module.router)
    return app

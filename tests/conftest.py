import pytest

from fluxedit.imaging.decode import DecodedImage
from fluxedit.schema import OutputFormat
from tests.helpers import pattern


@pytest.fixture(scope="session")
def tiny_engine():
    from fluxedit.engine import Engine

    return Engine.load(model="tiny")


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    from fluxedit.engine.tiny import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny-kontext")


@pytest.fixture
def landscape():
    """A 4:3 input image, decoded as the engine receives it."""
    return DecodedImage(pattern(640, 480), OutputFormat.png)

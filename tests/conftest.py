import os

import pytest

from fluxedit.imaging.decode import DecodedImage
from fluxedit.schema import OutputFormat
from tests.helpers import pattern

# The tiny model's tests compare against fp32 references, messages and placements of the CPU: every engine the
# suite builds (in this process, and in the `fluxedit` processes it starts, which read FLUXEDIT_DEVICE) runs on
# the CPU, on a GPU machine too. tests/engine/test_gpu.py asks for CUDA explicitly.
os.environ["FLUXEDIT_DEVICE"] = "cpu"


@pytest.fixture(scope="session")
def tiny_engine():
    from fluxedit.engine import Engine

    return Engine.load(model="tiny", device="cpu")


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    from fluxedit.engine.tiny import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny-kontext")


@pytest.fixture
def landscape():
    """A 4:3 input image, decoded as the engine receives it."""
    return DecodedImage(pattern(640, 480), OutputFormat.png)

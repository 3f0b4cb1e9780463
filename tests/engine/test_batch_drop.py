"""A cancelled member of a batch leaves it at the next step: the others go on unchanged and cost no more."""

import numpy as np
import pytest

from fluxedit.engine import EditRequest, Engine
from fluxedit.engine.engine import EngineOptions
from fluxedit.schema import EditCancelled
from tests.helpers import settings


def _requests(landscape):
    # regular: steps 0, 1 and 3 run the transformer, step 2 extrapolates from the history of the batch
    common = {"num_inference_steps": 4, "acceleration": "regular"}
    return [
        EditRequest(settings(prompt="make it blue", seed=1, **common), [landscape]),
        EditRequest(settings(prompt="make it red", seed=2, num_images=2, **common), [landscape]),
    ]


class RowCounter:
    """The batch size of every transformer pass."""

    def __init__(self, transformer):
        self.rows: list[int] = []
        self.handle = transformer.register_forward_pre_hook(self._seen, with_kwargs=True)

    def _seen(self, _module, _args, kwargs):
        self.rows.append(kwargs["hidden_states"].shape[0])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_a_dropped_request_leaves_the_batch_and_the_others_equal_their_run_alone(tiny_engine, landscape):
    requests = _requests(landscape)
    progress = []
    with RowCounter(tiny_engine.pipe.transformer) as counter:
        # the two-image request is dropped before step 3 (after two full passes)
        results = tiny_engine.generate_many(
            requests,
            progress=lambda index, p: progress.append((index, p.step)),
            should_drop=lambda index: index == 1 and len(counter.rows) >= 2,
        )
    assert counter.rows == [3, 3, 1]  # its two rows left before step 3; the last pass ran the survivor alone
    assert results[1] is None
    assert sorted(step for index, step in progress if index == 1) == [1, 2]  # no progress once dropped
    assert sorted(step for index, step in progress if index == 0) == [1, 2, 3, 4]
    alone = tiny_engine.generate(requests[0])
    assert results[0].seed == alone.seed
    assert np.abs(results[0].pixels - alone.pixels).max() < 1e-4


def test_dropping_under_the_adaptive_cache_starts_a_fresh_cache_for_the_rest(tiny_engine, landscape):
    adaptive = Engine(tiny_engine.model, options=EngineOptions(cache_mode="adaptive"))
    with RowCounter(tiny_engine.pipe.transformer) as counter:
        results = adaptive.edit_many(_requests(landscape), should_drop=lambda index: index == 0 and counter.rows)
    assert results[0] is None
    assert len(results[1].images) == 2


def test_dropping_every_request_cancels_the_batch(tiny_engine, landscape):
    with pytest.raises(EditCancelled):
        tiny_engine.generate_many(_requests(landscape), should_drop=lambda index: True)

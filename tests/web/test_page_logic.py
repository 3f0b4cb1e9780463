"""The page's own arithmetic, run in the browser against the service's: sizes, prices, big seeds."""

from __future__ import annotations

import random

from fluxedit.resolution import RESOLUTION_MODES, output_size
from fluxedit.service.pricing import prediction_cost
from tests.web.conftest import open_playground

SIZES_IN_JS = """async (cases) => {
  const sizes = await import('/web/js/sizes.js');
  return cases.map(([mode, w, h, n]) => {
    const [width, height] = sizes.outputSize(mode, w, h);
    return [width, height, sizes.predictionCost(width, height, n, 0.025)];
  });
}"""


def test_output_size_and_price_match_the_service(page, server):
    rng = random.Random(4)
    inputs = [(640, 480), (480, 640), (1000, 1000), (16, 64), (64, 16), (1920, 1080), (1234, 567), (4000, 1001)]
    inputs += [(rng.randint(16, 6000), rng.randint(16, 6000)) for _ in range(150)]
    inputs = [(w, h) for w, h in inputs if max(w, h) / min(w, h) <= 4]
    cases = [(mode, w, h, rng.randint(1, 4)) for w, h in inputs for mode in RESOLUTION_MODES]
    open_playground(page, server)
    in_browser = page.evaluate(SIZES_IN_JS, cases)
    for (mode, w, h, n), (width, height, cost) in zip(cases, in_browser, strict=True):
        expected = output_size(mode, w, h)
        assert (width, height) == expected, (mode, w, h)
        assert cost == prediction_cost(*expected, n, 0.025), (mode, w, h, n)


def test_seeds_past_2_to_the_53_are_kept_exact(page, server):
    open_playground(page, server)
    seed = str(2**64 - 1)
    round_trip = page.evaluate(
        """async (text) => {
          const json = await import('/web/js/json.js');
          const parsed = json.parseJson(text);
          const written = json.stringifyJson({prompt: 'a "seed": "1"', seed: parsed.seed});
          return [typeof parsed.seed, parsed.seed, parsed.input.seed, written];
        }""",
        f'{{"seed": {seed}, "input": {{"seed": {seed}, "prompt": "x"}}}}',
    )
    assert round_trip[:3] == ["string", seed, seed]
    assert round_trip[3] == f'{{"prompt":"a \\"seed\\": \\"1\\"","seed":{seed}}}'

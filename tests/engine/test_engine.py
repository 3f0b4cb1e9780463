import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from fluxedit.engine import EditRequest, Progress
from fluxedit.imaging.decode import DecodedImage
from fluxedit.imaging.encode import read_metadata
from fluxedit.schema import EditCancelled, InputError, OutputFormat
from tests.helpers import pattern, settings


def run_diffusers(pipe, image, width, height, seeds, steps=2, guidance=2.5, prompt="make it blue"):
    """Plain FluxKontextPipeline, told the exact size (it would otherwise pick 1024x1024)."""
    return pipe(
        image=image,
        prompt=prompt,
        num_inference_steps=steps,
        guidance_scale=guidance,
        height=height,
        width=width,
        max_area=width * height,
        generator=[torch.Generator().manual_seed(s) for s in seeds],
        num_images_per_prompt=len(seeds),
        output_type="np",
    ).images


def test_single_reference_equals_diffusers_pipeline(tiny_engine, landscape):
    generation = tiny_engine.generate(EditRequest(settings(guidance_scale=3.0), [landscape]))
    pixels, seed, (width, height) = generation.pixels, generation.seed, generation.size
    assert (width, height) == (1184, 880)
    reference = run_diffusers(tiny_engine.pipe, landscape.image, width, height, [seed], guidance=3.0)
    assert pixels.shape == reference.shape == (1, 880, 1184, 3)
    assert np.abs(pixels - reference).max() < 1e-4


def test_a_batch_matches_diffusers_batch(tiny_engine, landscape):
    generation = tiny_engine.generate(EditRequest(settings(num_images=2), [landscape]))
    pixels, seed, (width, height) = generation.pixels, generation.seed, generation.size
    reference = run_diffusers(tiny_engine.pipe, landscape.image, width, height, [seed, seed + 1])
    # We decode one image at a time (less GPU memory); the VAE's batched convolutions round differently.
    assert np.abs(pixels - reference).max() < 2e-3


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tiny_engine, landscape):
    first = tiny_engine.edit(EditRequest(settings(seed=7), [landscape]))
    again = tiny_engine.edit(EditRequest(settings(seed=7), [landscape]))
    other = tiny_engine.edit(EditRequest(settings(seed=8), [landscape]))
    assert first.images == again.images
    assert first.images != other.images


def test_random_seed_is_reported_and_reproduces_the_image(tiny_engine, landscape):
    random_run = tiny_engine.edit(EditRequest(settings(seed=None), [landscape]))
    assert 0 <= random_run.seed < 2**64
    replay = tiny_engine.edit(EditRequest(settings(seed=random_run.seed), [landscape]))
    assert replay.images == random_run.images


def test_image_k_of_a_batch_is_reproducible_alone_with_seed_plus_k(tiny_engine, landscape):
    batch = tiny_engine.generate(EditRequest(settings(seed=100, num_images=3), [landscape])).pixels
    alone = tiny_engine.generate(EditRequest(settings(seed=102), [landscape])).pixels
    assert batch.shape[0] == 3
    assert np.abs(batch[2] - alone[0]).max() < 2e-3
    assert np.abs(batch[0] - batch[1]).max() > 0.01


def test_largest_seed_is_accepted(tiny_engine, landscape):
    result = tiny_engine.edit(EditRequest(settings(seed=2**64 - 1, num_images=2), [landscape]))
    assert result.seed == 2**64 - 1 and len(result.images) == 2


@pytest.mark.parametrize(
    ("mode", "input_size", "expected"),
    [("match_input", (480, 640), (880, 1184)), ("16:9", (640, 480), (1360, 768)), ("auto", (500, 500), (1024, 1024))],
)
def test_output_has_exactly_the_resolved_size(tiny_engine, mode, input_size, expected):
    decoded = DecodedImage(pattern(*input_size), OutputFormat.png)
    result = tiny_engine.edit(EditRequest(settings(resolution_mode=mode, num_inference_steps=1), [decoded]))
    assert (result.width, result.height) == expected
    assert Image.open(io.BytesIO(result.images[0])).size == expected


def test_output_format_defaults_to_the_input_format(tiny_engine):
    jpeg_input = DecodedImage(pattern(640, 480), OutputFormat.jpeg)
    result = tiny_engine.edit(EditRequest(settings(num_inference_steps=1), [jpeg_input]))
    assert result.format is OutputFormat.jpeg
    assert Image.open(io.BytesIO(result.images[0])).format == "JPEG"
    asked = tiny_engine.edit(EditRequest(settings(num_inference_steps=1, output_format="webp"), [jpeg_input]))
    assert Image.open(io.BytesIO(asked.images[0])).format == "WEBP"


def test_output_carries_prompt_seed_and_settings(tiny_engine, landscape):
    result = tiny_engine.edit(EditRequest(settings(seed=5, num_images=2, prompt="a red jacket"), [landscape]))
    first, second = (read_metadata(data) for data in result.images)
    assert first["prompt"] == "a red jacket" and first["num_inference_steps"] == 2
    assert (first["seed"], second["seed"]) == (5, 6)  # each image's own seed
    assert first["model"] == "tiny" and (first["width"], first["height"]) == (1184, 880)
    bare = tiny_engine.edit(EditRequest(settings(write_metadata=False), [landscape]))
    assert read_metadata(bare.images[0]) is None


def test_progress_reports_every_step_with_optional_previews(tiny_engine, landscape):
    seen: list[Progress] = []
    tiny_engine.edit(EditRequest(settings(num_inference_steps=3), [landscape]), progress=seen.append)
    assert [(p.step, p.total) for p in seen] == [(1, 3), (2, 3), (3, 3)]
    assert all(p.preview is None for p in seen)
    previews: list[Progress] = []
    tiny_engine.edit(EditRequest(settings(num_inference_steps=2), [landscape]), progress=previews.append, previews=True)
    assert all(p.preview.size == (1184 // 8, 880 // 8) and p.preview.mode == "RGB" for p in previews)


def test_cancel_stops_within_one_step(tiny_engine, landscape):
    cancel = threading.Event()
    steps_done = []

    def on_progress(update: Progress) -> None:
        steps_done.append(update.step)
        if update.step == 2:
            cancel.set()  # as if a user pressed cancel during step 2

    with pytest.raises(EditCancelled, match="before step 3 of 10"):
        tiny_engine.edit(
            EditRequest(settings(num_inference_steps=10), [landscape]), progress=on_progress, should_stop=cancel.is_set
        )
    assert steps_done == [1, 2]


def _captured_position_ids(engine, request):
    captured = {}

    def hook(_module, _args, kwargs):
        captured["img_ids"] = kwargs["img_ids"].clone()
        captured["tokens"] = kwargs["hidden_states"].shape[1]

    handle = engine.pipe.transformer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        engine.generate(request)
    finally:
        handle.remove()
    return captured


def test_several_references_are_placed_side_by_side_with_index_one(tiny_engine):
    main = DecodedImage(pattern(512, 512, seed=1), OutputFormat.png)  # 1024x1024 -> 64x64 tokens
    wide = DecodedImage(pattern(640, 480, seed=2), OutputFormat.png)  # 1184x880 -> 55x74 tokens
    request = EditRequest(settings(num_inference_steps=1, resolution_mode="1:1"), [main, wide, main])
    captured = _captured_position_ids(tiny_engine, request)
    ids = captured["img_ids"]
    output_tokens = 64 * 64
    assert captured["tokens"] == ids.shape[0] == output_tokens + 64 * 64 + 55 * 74 + 64 * 64
    assert set(ids[:output_tokens, 0].tolist()) == {0.0}
    references = ids[output_tokens:]
    assert set(references[:, 0].tolist()) == {1.0}
    first, second, third = torch.split(references, [64 * 64, 55 * 74, 64 * 64])
    assert (first[:, 1].min(), first[:, 2].min()) == (0, 0)
    assert (second[:, 1].min(), second[:, 2].min()) == (64, 0)  # below the first (tie goes down)
    assert (third[:, 1].min(), third[:, 2].min()) == (0, 74)  # right of the 119x74 canvas


def test_more_references_change_the_result(tiny_engine, landscape):
    extra = DecodedImage(pattern(512, 512, seed=9), OutputFormat.png)
    alone = tiny_engine.generate(EditRequest(settings(), [landscape])).pixels
    together = tiny_engine.generate(EditRequest(settings(), [landscape, extra])).pixels
    assert alone.shape == together.shape
    assert np.abs(alone - together).max() > 1e-3


def test_at_most_three_references(tiny_engine, landscape):
    with pytest.raises(InputError, match="image_urls: at most 3 reference images"):
        tiny_engine.edit(EditRequest(settings(), [landscape] * 5))


def test_a_batch_of_edits_equals_the_same_edits_one_by_one(tiny_engine, landscape):
    other = DecodedImage(pattern(640, 480, seed=4), OutputFormat.jpeg)
    requests = [
        EditRequest(settings(prompt="make it blue", seed=1), [landscape]),
        EditRequest(settings(prompt="make it red", seed=2, num_images=2), [other]),
        EditRequest(settings(prompt="a hat", seed=3), [landscape]),
    ]
    progress = []
    batched = tiny_engine.generate_many(requests, progress=lambda index, p: progress.append((index, p.step)))
    assert sorted(progress) == [(i, s) for i in range(3) for s in (1, 2)]
    for request, together in zip(requests, batched, strict=True):
        alone = tiny_engine.generate(request)
        assert together.pixels.shape == alone.pixels.shape
        assert together.seed == alone.seed
        assert np.abs(together.pixels - alone.pixels).max() < 1e-4


def test_edits_of_different_sizes_cannot_share_a_batch(tiny_engine, landscape):
    tall = DecodedImage(pattern(480, 640), OutputFormat.png)
    with pytest.raises(ValueError, match="must share output size"):
        tiny_engine.generate_many([EditRequest(settings(), [landscape]), EditRequest(settings(), [tall])])

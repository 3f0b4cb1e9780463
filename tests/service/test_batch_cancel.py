"""Cancelling one prediction of a batch ends only that one: the others finish as they would have alone."""

import io

import httpx
import numpy as np
from PIL import Image

from tests.helpers import encoded, pattern
from tests.service.server import Server, create, upload, wait_done
from tests.service.test_lifecycle import wait_for_status

PHOTO = encoded(pattern(640, 480), "PNG")


def test_cancelling_one_of_a_batch_spares_the_others_and_the_worker(tmp_path):
    # A grace far shorter than one step: a worker killed for the cancel would take its batch-mate with it.
    env = {"FLUXEDIT_BATCH_MAX": "2", "FLUXEDIT_CANCEL_GRACE": "0.05"}
    with Server(tmp_path / "data", env=env) as server, server.client() as client:
        photo = upload(client, PHOTO)["id"]
        blocker = create(client, image_url=photo, num_inference_steps=1)  # the two below queue up behind it
        kept = create(client, image_url=photo, num_inference_steps=5, seed=1, output_format="png")
        cancelled = create(client, image_url=photo, num_inference_steps=5, seed=2, output_format="png")
        wait_done(client, blocker)
        wait_for_status(client, cancelled, {"processing"})
        assert client.post(f"/v1/prediction/{cancelled}/cancel").status_code == 200

        assert wait_done(client, cancelled)["status"] == "cancelled"
        together = wait_done(client, kept)
        assert together["status"] == "success", together
        assert "in a batch of 2" in together["logs"]
        alone = wait_done(client, create(client, image_url=photo, num_inference_steps=5, seed=1, output_format="png"))
        assert "batch" not in alone["logs"]
        pixels = [np.asarray(Image.open(io.BytesIO(httpx.get(r["output"][0]).content)), int) for r in (together, alone)]
        assert np.abs(pixels[0] - pixels[1]).max() <= 1  # the same image, up to float rounding at the last bit
        health = httpx.get(server.url + "/health").json()
        assert health["workers"][0]["restarts"] == 0

"""Retention and `fluxedit gc`: what expired goes (records first, bytes after a grace), what work needs stays."""

import os
import secrets
import subprocess
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select

from fluxedit.service.loras import LoraStore
from fluxedit.service.retention import Retention
from fluxedit.service.training_files import TrainingFiles
from fluxedit.store.database import open_database
from fluxedit.store.files import FileStore
from fluxedit.store.models import Prediction, StoredFile, Training
from tests import lora_builders as build
from tests.helpers import encoded, pattern
from tests.service.server import FLUXEDIT, Server, create, upload, wait_done

DAY = 86400.0
PHOTO = encoded(pattern(640, 480), "PNG")


# ---- the component, on a real database and folder, with the clock moved forward ----------------


@pytest.fixture
def store(tmp_path):
    sessions = open_database(f"sqlite:///{tmp_path / 'fluxedit.db'}")
    return sessions, FileStore(tmp_path / "files", sessions)


def retention(tmp_path, store, inputs=30 * DAY, outputs=30 * DAY, trainings=7 * DAY) -> Retention:
    sessions, files = store
    return Retention(
        sessions, files, tmp_path / "trainings", tmp_path / "loras",
        retain_inputs=inputs, retain_outputs=outputs, retain_trainings=trainings,
    )  # fmt: skip


def put(files: FileStore, purpose: str) -> str:
    data = secrets.token_bytes(64)  # distinct bytes: inputs are content-addressed
    return files.put(data, purpose=purpose, content_type="image/png", filename="x.png", owner_key_id=None).id


def add_prediction(sessions, status: str, input_files: list[str], created_at: datetime | None = None) -> None:
    with sessions.begin() as session:
        session.add(
            Prediction(
                id=secrets.token_hex(12), model="flux-kontext-dev", version="1.0", status=status, input={},
                input_files=input_files, created_at=created_at or datetime.now(UTC),
            )
        )  # fmt: skip


def exists(sessions, file_id: str) -> bool:
    with sessions() as session:
        return session.get(StoredFile, file_id) is not None


def test_expired_files_go_but_never_one_that_queued_or_running_work_needs(tmp_path, store):
    sessions, files = store
    old_output, old_input = put(files, "output"), put(files, "upload")
    queued_input, running_input = put(files, "input"), put(files, "output")  # an output used as the next input
    recently_used = put(files, "upload")
    later = datetime.now(UTC) + timedelta(days=31)
    add_prediction(sessions, "created", [queued_input])
    add_prediction(sessions, "processing", [running_input])
    add_prediction(sessions, "success", [recently_used], created_at=later - timedelta(days=1))

    expired = retention(tmp_path, store).expire(later)

    assert (expired.report.outputs, expired.report.inputs) == (1, 1)
    assert not exists(sessions, old_output) and not exists(sessions, old_input)  # views say data_removed now
    assert all(exists(sessions, f) for f in (queued_input, running_input, recently_used))
    assert sorted(expired.file_ids) == sorted([old_output, old_input])
    gone = [files.path(old_output), files.path(old_input)]
    assert all(path.is_file() for path in gone)  # a reader that found the record a moment ago still opens it
    retention(tmp_path, store).remove(expired)
    assert not any(path.exists() for path in gone)
    assert files.path(queued_input).is_file() and files.path(running_input).is_file()


def test_an_input_sent_again_counts_from_then(tmp_path, store):
    sessions, files = store
    data = secrets.token_bytes(64)
    stored = [files.put(data, purpose="upload", content_type="image/png", filename="a.png", owner_key_id=None).id]
    stored.append(put(files, "upload"))
    forty_days_ago = datetime.now(UTC) - timedelta(days=40)
    with sessions.begin() as session:
        for file_id in stored:
            session.get(StoredFile, file_id).created_at = forty_days_ago
            os.utime(files.path(file_id), (forty_days_ago.timestamp(), forty_days_ago.timestamp()))
    again = files.put(data, purpose="upload", content_type="image/png", filename="a.png", owner_key_id=None)
    assert again.id == stored[0]  # the same bytes are the same file (content addressing)

    assert retention(tmp_path, store).sweep(grace=0).inputs == 1
    assert exists(sessions, stored[0]) and not exists(sessions, stored[1])


def test_a_dry_run_reports_and_removes_nothing(tmp_path, store):
    sessions, files = store
    output = put(files, "output")
    report = retention(tmp_path, store).sweep(datetime.now(UTC) + timedelta(days=31), dry_run=True, grace=0)
    assert report.outputs == 1 and report.bytes_freed == 64 and "would remove 1 outputs" in report.summary()
    assert exists(sessions, output) and files.path(output).is_file()


def test_retention_off_keeps_everything(tmp_path, store):
    sessions, files = store
    output, upload_id = put(files, "output"), put(files, "upload")
    kept = retention(tmp_path, store, inputs=None, outputs=None, trainings=None)
    assert kept.sweep(datetime.now(UTC) + timedelta(days=3650), grace=0).removed == 0
    assert exists(sessions, output) and exists(sessions, upload_id)


def make_training(tmp_path, sessions, status: str, completed_days_ago: float | None) -> tuple[str, object]:
    training_id = "training_" + secrets.token_hex(8)
    root = tmp_path / "trainings" / training_id
    for part in (
        "data/pairs/p0_start.png",
        "work/checkpoints/step-000010/lora.safetensors",
        "work/validation/step-000010-p0.png",
        "work/lora.safetensors",
        "work/lora-comfyui.safetensors",
    ):
        (root / part).parent.mkdir(parents=True, exist_ok=True)
        (root / part).write_bytes(b"x" * 100)  # fmt: skip
    completed = datetime.now(UTC) - timedelta(days=completed_days_ago) if completed_days_ago is not None else None
    with sessions.begin() as session:
        session.add(
            Training(
                id=training_id, status=status, input={"steps": 10}, data_dir=str(root / "data"),
                work_dir=str(root / "work"), lora_name=training_id, completed_at=completed,
            )
        )  # fmt: skip
    return training_id, root


def test_an_ended_training_loses_its_pairs_and_checkpoints_and_keeps_its_lora(tmp_path, store):
    sessions, _ = store
    _, ended = make_training(tmp_path, sessions, "success", completed_days_ago=8)
    _, recent = make_training(tmp_path, sessions, "error", completed_days_ago=1)
    _, running = make_training(tmp_path, sessions, "processing", completed_days_ago=None)

    report = retention(tmp_path, store).sweep(grace=0)

    assert report.trainings == 1 and report.bytes_freed == 300
    assert not (ended / "data").exists() and not (ended / "work" / "checkpoints").exists()
    assert not (ended / "work" / "validation").exists()
    assert (ended / "work" / "lora.safetensors").is_file() and (ended / "work" / "lora-comfyui.safetensors").is_file()
    for untouched in (recent, running):
        assert (untouched / "data" / "pairs" / "p0_start.png").is_file()
        assert (untouched / "work" / "checkpoints" / "step-000010" / "lora.safetensors").is_file()


def test_an_ended_training_loses_its_stored_pairs_and_checkpoints_and_keeps_its_stored_lora(tmp_path, store):
    sessions, files = store
    stored = TrainingFiles(files)
    trainings = {}
    for status, days in (("success", 8), ("processing", None)):
        training_id, _ = make_training(tmp_path, sessions, status, completed_days_ago=days)
        with sessions() as session:
            training = session.get(Training, training_id)
        zip_path = tmp_path / f"{training_id}.zip"
        zip_path.write_bytes(secrets.token_bytes(500))
        kept = (
            stored.store_data(training_id, None, zip_path),
            stored.store_checkpoint(training, 10, secrets.token_bytes(200)),
            stored.store_lora(training, "lora.safetensors", secrets.token_bytes(50)),
        )
        trainings[status] = kept

    dry = retention(tmp_path, store).sweep(grace=0, dry_run=True)
    assert dry.bytes_freed == 300 + 700 and all(exists(sessions, r.id) for kept in trainings.values() for r in kept)
    report = retention(tmp_path, store).sweep(grace=0)

    data, checkpoint, lora = trainings["success"]
    assert report.trainings == 1 and report.bytes_freed == 300 + 700  # the old folders' 300, the stored 500 + 200
    assert not exists(sessions, data.id) and not exists(sessions, checkpoint.id)
    assert not files.objects.exists(files.key(data.id)) and not files.objects.exists(files.key(checkpoint.id))
    assert exists(sessions, lora.id) and files.objects.exists(files.key(lora.id))
    assert all(exists(sessions, r.id) for r in trainings["processing"])  # a running training keeps everything


def test_leftovers_of_interrupted_writes_go_once_they_are_a_day_old(tmp_path, store):
    _, files = store
    two_days_ago = time.time() - 2 * DAY
    (tmp_path / "loras").mkdir()
    (tmp_path / "trainings" / "training_00000000deadbeef" / "data").mkdir(parents=True)  # a create that died
    leftovers = [
        files.folder / "ab" / "file_aaaaaaaaaaaaaaaaaaaaab.partial",  # bytes being written when it crashed
        files.folder / "cd" / "file_bbbbbbbbbbbbbbbbbbbbcd",  # bytes whose record was never written
        tmp_path / "loras" / "tmpx1y2.partial",  # a LoRA download cut short
        tmp_path / "trainings" / "upload-140234.zip",  # a training upload whose request never ended
    ]
    fresh = [  # the same, still being written
        files.folder / "ab" / "file_cccccccccccccccccccccab.partial",
        files.folder / "cd" / "file_dddddddddddddddddddcd",
        tmp_path / "loras" / "tmpz9w8.partial",
        tmp_path / "trainings" / "upload-150000.zip",
        tmp_path / "trainings" / "training_00000000feedf00d" / "data" / "p0_start.png",
    ]
    for path in leftovers + fresh:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 10)
    for path in [*leftovers, tmp_path / "trainings" / "training_00000000deadbeef"]:
        os.utime(path, (two_days_ago, two_days_ago))
    recorded = put(files, "output")
    os.utime(files.path(recorded), (two_days_ago, two_days_ago))

    report = retention(tmp_path, store).sweep(grace=0)

    assert report.leftovers == 5
    assert not any(path.exists() for path in leftovers)
    assert not (tmp_path / "trainings" / "training_00000000deadbeef").exists()
    assert all(path.is_file() for path in fresh)  # maybe still being written
    assert files.path(recorded).is_file()  # it has its record


def test_the_lora_cache_never_evicts_a_lora_that_queued_work_was_resolved_to(tmp_path, store):
    sessions, _ = store
    cache = LoraStore(tmp_path / "loras", sessions, max_bytes=2**30, cache_bytes=2**30)
    needed, size = cache.add(build.write(build.diffusers_lora(seed=1), tmp_path / "a.partial"), "lora", kept=False)
    cache.cache_bytes = size  # room for one: the next download pushes the older one out
    with sessions.begin() as session:
        session.add(
            Prediction(
                id=secrets.token_hex(12), model="flux-kontext-dev", version="1.0", status="created", input={},
                lora_files=[{"path": str(cache.path(needed)), "digest": needed, "scale": 1.0, "field": "x"}],
            )
        )  # fmt: skip
    other, _ = cache.add(build.write(build.diffusers_lora(seed=2), tmp_path / "b.partial"), "lora", kept=False)
    assert cache.path(needed).is_file()  # the queued prediction will load it
    assert not cache.path(other).exists()  # the cache is over its size: what nobody needs goes


# ---- the server and `fluxedit gc`, over HTTP -------------------------------------------------------


def wait_until(check, timeout: float = 60, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.2)
    raise TimeoutError(f"{what} never held")


def test_the_server_sweeps_expired_files_and_spares_those_queued_work_needs(tmp_path):
    env = {"FLUXEDIT_RETAIN_OUTPUTS": "3s", "FLUXEDIT_RETAIN_INPUTS": "3s", "FLUXEDIT_RETENTION_SWEEP_INTERVAL": "0.5"}
    with Server(tmp_path / "data", env=env) as server, server.client() as client:
        photo = upload(client, PHOTO)["id"]
        first = wait_done(client, create(client, image_url=photo, seed=1))
        output_url = first["output"][0]
        # The photo and the first output are soon old enough to go, but a long prediction uses the photo
        # and a queued one uses the output: both must outlive their retention until that work is done.
        running = create(client, image_url=photo, num_inference_steps=50)  # far longer than the wait below
        queued = create(client, image_url=output_url, seed=2)
        wait_until(lambda: client.get(f"/v1/prediction/{running}").json()["status"] == "processing", what="it runs")
        time.sleep(4)  # past their retention, several sweeps later
        assert client.get(f"/v1/prediction/{running}").json()["status"] == "processing"  # still in use, then:
        assert httpx.get(output_url).status_code == 200
        assert client.get(f"/v1/files/{photo}").status_code == 200
        client.post(f"/v1/prediction/{running}/cancel")
        assert wait_done(client, running)["status"] == "cancelled"
        finished = wait_done(client, queued)
        assert finished["status"] == "success", finished

        view = wait_until(
            lambda: (v := client.get(f"/v1/prediction/{first['id']}").json())["output"] == [] and v,
            what="the first output expired",
        )
        assert view["status"] == "success" and view["data_removed"] is True
        assert httpx.get(output_url).status_code == 404
        wait_until(lambda: client.get(f"/v1/files/{photo}").status_code == 404, what="the photo expired")
        files = server.data_dir / "files"
        wait_until(lambda: not any(files.glob(f"*/{photo}")), what="the photo's bytes removed", timeout=30)


def test_gc_while_the_server_runs_removes_what_expired_and_nothing_queued_work_needs(tmp_path):
    data = tmp_path / "data"
    with Server(data, env={"FLUXEDIT_RETENTION_SWEEP_INTERVAL": "off"}) as server, server.client() as client:
        photo = upload(client, PHOTO)["id"]
        done = wait_done(client, create(client, image_url=photo, seed=1))
        used = wait_done(client, create(client, image_url=photo, seed=2))
        time.sleep(1.5)
        running = create(client, image_url=photo, num_inference_steps=12)
        queued = create(client, image_url=used["output"][0], seed=3)

        result = subprocess.run(
            [FLUXEDIT, "gc", "--data-dir", str(data), "--retain-outputs", "1s", "--retain-inputs", "1s"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert f"data folder {data.resolve()}" in result.stderr
        assert "removed 1 outputs, 0 inputs" in result.stderr  # `done`'s output; the photo and `used`'s are in use

        assert wait_done(client, running)["status"] == "success"
        assert wait_done(client, queued)["status"] == "success"
        assert client.get(f"/v1/prediction/{done['id']}").json()["data_removed"] is True
        assert httpx.get(done["output"][0]).status_code == 404
        assert client.get(f"/v1/prediction/{used['id']}").json()["data_removed"] is False


def test_gc_refuses_a_folder_without_fluxedit_data(tmp_path):
    result = subprocess.run([FLUXEDIT, "gc", "--data-dir", str(tmp_path / "nothing")], capture_output=True, text=True)
    assert result.returncode == 2
    assert "no fluxedit data in" in result.stderr and "--data-dir" in result.stderr
    bad = subprocess.run([FLUXEDIT, "gc", "--retain-outputs", "soon"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--retain-outputs (FLUXEDIT_RETAIN_OUTPUTS): 'soon' is not a duration" in bad.stderr


def test_ended_webhook_deliveries_go_with_the_outputs_and_pending_ones_stay(tmp_path, store):
    from fluxedit.service.webhook_outbox import WebhookOutbox
    from fluxedit.store.models import WebhookDelivery

    sessions, _ = store
    outbox = WebhookOutbox(sessions)
    delivered, given_up, pending = (outbox.add(f"p{i}", "https://example.com/hook", "{}", None, None, "success")
                                    for i in range(3))  # fmt: skip
    now = datetime.now(UTC)
    with sessions.begin() as session:
        session.get(WebhookDelivery, delivered).delivered_at = now
        session.get(WebhookDelivery, given_up).given_up_at = now
    assert retention(tmp_path, store).expire(now + timedelta(days=29)).report.webhooks == 0  # not old enough

    report = retention(tmp_path, store).expire(now + timedelta(days=31)).report

    assert report.webhooks == 2 and "2 ended webhook deliveries" in report.summary()
    with sessions() as session:
        assert [d.id for d in session.scalars(select(WebhookDelivery))] == [pending]  # still to be sent

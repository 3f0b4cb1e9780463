"""A training keeps only its newest checkpoints, and always resumes from a complete one."""

import pytest
import torch
from PIL import ImageOps
from safetensors.torch import load_file

from fluxedit.engine.tiny import build_tiny_pipeline
from fluxedit.training.dataset import load_pairs
from fluxedit.training.trainer import Trainer
from fluxedit.training_options import TrainingOptions
from tests.helpers import pattern

CONFIG = {"steps": 10, "checkpoint_every": 2, "keep_checkpoints": 2, "seed": 5, "resolution": 256, "rank": 4}


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pairs")
    for i in range(3):
        picture = pattern(256, 256, seed=i)
        picture.save(folder / f"p{i}_start.png")
        ImageOps.invert(picture).save(folder / f"p{i}_end.png")
    return load_pairs(folder, default_caption="invert the colours")


def trainer(pairs, out_dir, **overrides):
    made = Trainer(build_tiny_pipeline(), torch.device("cpu"), pairs, TrainingOptions(**CONFIG | overrides), out_dir)
    made.prepare()
    return made


def steps_kept(out_dir) -> list[str]:
    return sorted(path.name for path in (out_dir / "checkpoints").iterdir())


def trained_steps(made) -> list[int]:
    """Spy on the trainer: the step number of every optimisation step it takes, in order."""
    taken: list[int] = []
    real_step = made._train_step

    def counted():
        taken.append(made.step)
        return real_step()

    made._train_step = counted
    return taken


def test_only_the_newest_checkpoints_are_kept_and_resuming_from_them_is_exact(pairs, tmp_path):
    straight = trainer(pairs, tmp_path / "straight")
    straight_steps = trained_steps(straight)
    straight_result = straight.run(output=tmp_path / "straight.safetensors")
    assert straight_steps == list(range(10))
    assert steps_kept(tmp_path / "straight") == ["step-000008", "step-000010"]
    straight_order = [straight._example_index(step) for step in range(10)]
    assert len(set(straight_order[:3])) == 3  # each epoch visits every pair once: the order matters

    trainer(pairs, tmp_path / "resumed").run(stop_after=7)
    assert steps_kept(tmp_path / "resumed") == ["step-000004", "step-000006"]
    resumed = trainer(pairs, tmp_path / "resumed")
    resumed_steps = trained_steps(resumed)
    reported: list[int] = []
    resumed_result = resumed.run(
        progress=lambda update: reported.append(update.step), output=tmp_path / "resumed.safetensors"
    )
    # The resumed run starts where the newest checkpoint stopped (step 6, not 0 and not 7): four steps, not ten.
    assert resumed_steps == [6, 7, 8, 9]
    assert reported == [7, 8, 9, 10]
    assert resumed_result.steps == 10
    # It sees the pairs in the order the straight run saw them at those steps, and continues the noise
    # stream: its own four losses are the straight run's last four (a restart from the checkpoint's weights
    # with a fresh generator or optimizer would give different ones).
    assert [resumed._example_index(step) for step in resumed_steps] == straight_order[6:]
    assert resumed_result.losses[6:] == straight_result.losses[6:]
    assert resumed_result.losses == straight_result.losses
    first, second = load_file(straight_result.lora_path), load_file(resumed_result.lora_path)
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_a_checkpoint_cut_short_by_a_full_disk_is_never_resumed_from(pairs, tmp_path, monkeypatch):
    interrupted = trainer(pairs, tmp_path / "run", keep_checkpoints=1)
    real_save = torch.save

    def disk_full_at_step_6(obj, path, *args, **kwargs):
        if "step-000006" in str(path):
            raise OSError(28, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_full_at_step_6)
    with pytest.raises(OSError, match="No space"):
        interrupted.run()
    monkeypatch.undo()
    assert steps_kept(tmp_path / "run") == ["partial-step-000006", "step-000004"]  # the complete one survived

    again = trainer(pairs, tmp_path / "run", keep_checkpoints=1)
    result = again.run(output=tmp_path / "run.safetensors")
    assert result.steps == 10 and len(result.losses) == 10
    assert steps_kept(tmp_path / "run") == ["step-000010"]

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from fluxedit.engine.safety import SafetyChecker
from fluxedit.engine.tiny_safety import write_tiny_safety_model
from fluxedit.schema import ModelUnavailable
from tests.helpers import pattern


@pytest.fixture(scope="module")
def flag_all_folder(tmp_path_factory):
    return write_tiny_safety_model(tmp_path_factory.mktemp("safety") / "flag-all", flag_everything=True)


@pytest.fixture(scope="module")
def flag_none_folder(tmp_path_factory):
    return write_tiny_safety_model(tmp_path_factory.mktemp("safety") / "flag-none", flag_everything=False)


def pictures() -> list[Image.Image]:
    # Different sizes and modes in one call: the processor resizes them all to one batch.
    return [pattern(640, 480), pattern(33, 97, seed=1), pattern(256, 256, seed=2).convert("RGBA")]


def test_a_flag_everything_checker_blacks_out_every_image(flag_all_folder):
    images = pictures()
    kept, flags = SafetyChecker.load(str(flag_all_folder)).apply(images)
    assert flags == [True, True, True]
    for original, black in zip(images, kept, strict=True):
        assert black.mode == "RGB" and black.size == original.size
        assert not np.asarray(black).any()


def test_a_flag_nothing_checker_leaves_images_untouched(flag_none_folder):
    images = pictures()
    before = [image.tobytes() for image in images]
    kept, flags = SafetyChecker.load(str(flag_none_folder)).apply(images)
    assert flags == [False, False, False]
    assert [image.tobytes() for image in kept] == before
    assert [image.mode for image in kept] == ["RGB", "RGB", "RGBA"]


def test_no_images_need_no_forward_pass(flag_all_folder):
    assert SafetyChecker.load(str(flag_all_folder)).apply([]) == ([], [])


def test_the_threshold_compares_with_the_summed_flagged_probability(flag_all_folder):
    checker = SafetyChecker.load(str(flag_all_folder), threshold=0.7)
    with torch.no_grad():
        checker.model.classifier.bias.copy_(torch.tensor([0.0, math.log(3.0)]))  # p(nsfw) = 0.75
    assert checker.flags([pattern(64, 64)]) == [True]
    checker.threshold = 0.8
    assert checker.flags([pattern(64, 64)]) == [False]
    # Every label flagged: the probabilities sum to 1, which meets any threshold.
    everything = SafetyChecker.load(str(flag_all_folder), threshold=1.0, flagged_labels=("normal", "nsfw"))
    with torch.no_grad():
        everything.model.classifier.bias.copy_(torch.tensor([0.0, math.log(3.0)]))
    assert everything.flags([pattern(64, 64)]) == [True]


def test_flagged_labels_are_matched_case_insensitively(flag_none_folder):
    checker = SafetyChecker.load(str(flag_none_folder), flagged_labels=("NORMAL",))
    assert checker.flags([pattern(40, 30), pattern(30, 40)]) == [True, True]


def test_labels_that_match_nothing_are_refused(flag_all_folder):
    with pytest.raises(ModelUnavailable, match=r"labels \(normal, nsfw\).*flagged label"):
        SafetyChecker.load(str(flag_all_folder), flagged_labels=("gore",))


def test_a_threshold_outside_zero_to_one_is_refused(flag_all_folder):
    with pytest.raises(ValueError, match="threshold"):
        SafetyChecker.load(str(flag_all_folder), threshold=1.5)


def test_an_empty_folder_is_refused(tmp_path):
    with pytest.raises(ModelUnavailable, match="could not load the safety model config"):
        SafetyChecker.load(str(tmp_path))


def test_a_folder_of_another_model_type_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ModelUnavailable, match="'gpt2' model, not an image classifier"):
        SafetyChecker.load(str(tmp_path))


def test_a_classifier_folder_without_weights_is_refused(tmp_path, flag_all_folder):
    (tmp_path / "config.json").write_text((flag_all_folder / "config.json").read_text())
    with pytest.raises(ModelUnavailable, match="could not load the safety model from"):
        SafetyChecker.load(str(tmp_path))


def test_a_path_that_is_not_a_folder_is_refused(tmp_path):
    with pytest.raises(ModelUnavailable, match="is not a folder"):
        SafetyChecker.load(str(tmp_path / "missing"))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelUnavailable, match="is not a folder"):
        SafetyChecker.load(str(tmp_path / "model.safetensors"))


def test_a_multi_label_classifier_uses_its_surest_unsafe_label(flag_none_folder):
    checker = SafetyChecker.load(str(flag_none_folder), threshold=0.6)
    checker.model.config.problem_type = "multi_label_classification"
    assert checker.flags([pattern(32, 32)]) == [False]  # sigmoid(0) = 0.5 on "nsfw"
    checker.threshold = 0.5
    assert checker.flags([pattern(32, 32)]) == [True]

"""A training step feeds the transformer what an edit of the same pair feeds it: the reference tokens of the
start image, the position ids, the caption's embeddings and the guidance (both go through engine/kontext.py)."""

import torch
from PIL import ImageOps

from fluxedit.engine import EditRequest, Engine
from fluxedit.engine.devices import Placement
from fluxedit.engine.loading import LoadedModel
from fluxedit.engine.tiny import build_tiny_pipeline
from fluxedit.imaging.decode import DecodedImage
from fluxedit.schema import OutputFormat
from fluxedit.training.dataset import Pair
from fluxedit.training.trainer import Trainer
from fluxedit.training_options import TrainingOptions
from tests.helpers import pattern, settings

FIELDS = ("img_ids", "encoder_hidden_states", "pooled_projections", "txt_ids", "guidance")


def _first_call(transformer, run) -> dict:
    """The keyword arguments of the first transformer call that `run()` makes."""
    calls = []

    def hook(_module, _args, kwargs):
        calls.append({name: value.detach().clone() for name, value in kwargs.items() if torch.is_tensor(value)})

    handle = transformer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        run()
    finally:
        handle.remove()
    return calls[0]


def test_a_training_step_sees_the_reference_ids_and_caption_an_edit_of_the_pair_sees(tmp_path):
    pipe = build_tiny_pipeline()
    start = pattern(640, 480, seed=4)  # 4:3, at 1184x880 both as the edit's reference and as the training bucket
    pair = Pair("p0", DecodedImage(start, OutputFormat.png), DecodedImage(ImageOps.invert(start), OutputFormat.png),
                "invert the colours")  # fmt: skip
    engine = Engine(LoadedModel(pipe, None, Placement(torch.device("cpu"), pipe.transformer.dtype, "gpu")))
    request = EditRequest(settings(prompt=pair.caption, num_inference_steps=1, guidance_scale=1.0), [pair.start])
    edit = _first_call(pipe.transformer, lambda: engine.generate(request))

    options = TrainingOptions(steps=1, resolution=1024, caption_dropout=0.0, checkpoint_every=0, guidance=1.0)
    trainer = Trainer(pipe, torch.device("cpu"), [pair], options, tmp_path)
    trainer.prepare()
    step = _first_call(pipe.transformer, lambda: trainer.run(output=tmp_path / "lora.safetensors"))

    output_tokens = 880 // 16 * (1184 // 16)
    for call in (edit, step):
        assert call["hidden_states"].shape[1] == call["img_ids"].shape[0] == 2 * output_tokens
    assert torch.equal(edit["hidden_states"][:, output_tokens:], step["hidden_states"][:, output_tokens:])
    for name in FIELDS:
        assert torch.equal(edit[name], step[name]), name

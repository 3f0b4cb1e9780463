import pytest
import torch

from fluxedit.engine.bfl_checkpoint import COMFY_PREFIX, bfl_to_diffusers, diffusers_to_bfl
from fluxedit.engine.tiny import build_tiny_pipeline


@pytest.fixture(scope="module")
def diffusers_state():
    return build_tiny_pipeline().transformer.state_dict()


def test_bfl_layout_has_the_released_checkpoint_key_names(diffusers_state):
    bfl = diffusers_to_bfl(diffusers_state)
    for key in (
        "img_in.weight",
        "txt_in.bias",
        "time_in.in_layer.weight",
        "vector_in.out_layer.bias",
        "guidance_in.in_layer.weight",
        "double_blocks.0.img_attn.qkv.weight",
        "double_blocks.0.txt_attn.norm.key_norm.scale",
        "double_blocks.0.img_mlp.2.bias",
        "single_blocks.0.linear1.weight",
        "single_blocks.0.linear2.weight",
        "single_blocks.0.modulation.lin.weight",
        "final_layer.adaLN_modulation.1.weight",
    ):
        assert key in bfl, key
    inner = bfl["img_in.weight"].shape[0]
    assert bfl["double_blocks.0.img_attn.qkv.weight"].shape[0] == 3 * inner
    assert bfl["single_blocks.0.linear1.weight"].shape[0] == 3 * inner + 4 * inner  # q, k, v and the MLP


def test_round_trip_is_exact(diffusers_state):
    back = bfl_to_diffusers(diffusers_to_bfl(diffusers_state))
    assert back.keys() == diffusers_state.keys()
    for key, tensor in diffusers_state.items():
        assert torch.equal(back[key], tensor), key


def test_final_modulation_halves_are_swapped(diffusers_state):
    bfl = diffusers_to_bfl(diffusers_state)
    scale, shift = diffusers_state["norm_out.linear.weight"].chunk(2)
    assert torch.equal(bfl["final_layer.adaLN_modulation.1.weight"], torch.cat([shift, scale]))


def test_comfyui_prefixed_keys_are_accepted(diffusers_state):
    prefixed = {COMFY_PREFIX + k: v for k, v in diffusers_to_bfl(diffusers_state).items()}
    assert bfl_to_diffusers(prefixed).keys() == diffusers_state.keys()


def test_a_non_flux_file_is_refused():
    with pytest.raises(ValueError, match="not a FLUX transformer checkpoint"):
        bfl_to_diffusers({"conv_in.weight": torch.zeros(1)})

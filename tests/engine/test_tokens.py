import torch

from fluxedit.engine.tokens import grid_ids, pack, place_references, reference_ids, unpack


def test_unpack_inverts_pack():
    latents = torch.randn(2, 16, 12, 20)
    tokens = pack(latents)
    assert tokens.shape == (2, 6 * 10, 64)
    assert torch.equal(unpack(tokens, 12, 20), latents)


def test_pack_groups_each_2x2_patch_into_one_token():
    latents = torch.arange(16 * 4 * 4, dtype=torch.float32).reshape(1, 16, 4, 4)
    first_token = pack(latents)[0, 0].reshape(16, 2, 2)
    assert torch.equal(first_token, latents[0, :, :2, :2])


def test_grid_ids_are_index_row_column_in_row_major_order():
    ids = grid_ids(2, 3, index=1, row_offset=10, col_offset=20)
    assert ids.tolist() == [
        [1, 10, 20], [1, 10, 21], [1, 10, 22],
        [1, 11, 20], [1, 11, 21], [1, 11, 22],
    ]  # fmt: skip


def test_first_reference_sits_at_the_origin():
    (only,) = place_references([(52, 74)])
    assert (only.row_offset, only.col_offset) == (0, 0)


def test_references_are_stitched_keeping_the_canvas_square():
    square, wide, tall = (64, 64), (41, 78), (78, 41)
    placements = place_references([square, square, square, wide])
    offsets = [(p.row_offset, p.col_offset) for p in placements]
    # 2nd: canvas 64x64, tie -> below (row 64). 3rd: canvas 128x64 is tall -> right (col 64).
    # 4th: canvas 128x128, 41+128 < 78+128 -> below the whole canvas (row 128).
    assert offsets == [(0, 0), (64, 0), (0, 64), (128, 0)]
    placements = place_references([wide, tall])
    # canvas 41x78 (wide); a tall image next: 78+41 > 41+78? no, equal -> below.
    assert [(p.row_offset, p.col_offset) for p in placements] == [(0, 0), (41, 0)]


def test_reference_ids_all_have_index_one_and_their_offsets():
    ids = reference_ids([(2, 2), (2, 2), (2, 2)])
    assert ids.shape == (12, 3)
    assert set(ids[:, 0].tolist()) == {1.0}
    assert ids[:4, 1:].tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert ids[4:8, 1:].tolist() == [[2, 0], [2, 1], [3, 0], [3, 1]]  # below the first
    assert ids[8:, 1:].tolist() == [[0, 2], [0, 3], [1, 2], [1, 3]]  # right of both

"""Region pooling: boxes mapped through preprocessing onto patch tokens, checked by hand."""
import torch
from hypothesis import given, settings, strategies as st

from mmdiag.models.regions import map_box, patch_mask, region_states


def test_crop_geometry_maps_a_wide_image_box():
    # 896x448 image -> short side to 224 (scale 0.5) -> 448x224, whose centre crop drops 112 px on the left
    assert map_box((448, 0, 896, 224), (896, 448), ("crop", (224, 224))) == (112.0, 0.0, 224.0, 112.0)
    assert map_box((224, 0, 448, 112), (448, 224), ("crop", (224, 224))) == (112.0, 0.0, 224.0, 112.0)
    # a box left of the crop is clipped to an empty strip at x = 0
    x0, _, x1, _ = map_box((0, 0, 100, 50), (448, 224), ("crop", (224, 224)))  # 0..100 -> -112..-12
    assert x0 == x1 == 0.0


def test_resize_geometry_scales_each_axis():
    assert map_box((10, 20, 30, 40), (100, 200), ("resize", (50, 50))) == (5.0, 5.0, 15.0, 10.0)


def test_patch_mask_marks_overlapping_patches():
    # 4x4 grid on a 32x32 input, 8-px patches; box x in [4, 12), y in [0, 8) hits columns 0-1 of row 0
    mask = patch_mask((4, 0, 12, 8), (4, 4), (32, 32)).reshape(4, 4)
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[0, 0] = expected[0, 1] = True
    assert torch.equal(mask, expected)


@settings(max_examples=40, deadline=None)
@given(st.floats(0, 31), st.floats(0, 31), st.floats(0.5, 32), st.floats(0.5, 32))
def test_patch_mask_matches_brute_force(x, y, w, h):
    box = (x, y, min(x + w, 32.0), min(y + h, 32.0))
    mask = patch_mask(box, (4, 4), (32, 32)).reshape(4, 4)
    for r in range(4):
        for c in range(4):
            overlap_w = min(box[2], (c + 1) * 8) - max(box[0], c * 8)
            overlap_h = min(box[3], (r + 1) * 8) - max(box[1], r * 8)
            assert bool(mask[r, c]) == (overlap_w > 0 and overlap_h > 0)


def test_region_states_are_means_of_their_patches_after_the_root():
    hidden = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)  # CLS + 4 patches
    pooled = hidden[:, 0]
    masks = [torch.tensor([[True, True, False, False], [False, False, False, True]]), None]
    states, counts = region_states(hidden, pooled, masks, patch_offset=1)
    assert counts == [3, 0]
    assert torch.allclose(states[0], hidden[0, 0])
    assert torch.allclose(states[1], hidden[0, 1:3].mean(0))
    assert torch.allclose(states[2], hidden[0, 4])

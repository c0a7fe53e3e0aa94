"""Dual encoders run the image tower once per distinct image of a batch (several captions per image)."""
import numpy as np
import pytest
import torch
from PIL import Image

from mmdiag.data.types import Sample
from mmdiag.models.dual import distinct_images
from mmdiag.models.load import load_adapter
from mmdiag.record import record


def _samples(keys):
    rng = np.random.default_rng(0)
    pictures = {k: Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for k in set(keys)}
    return [Sample(uid=f"s{i}", image=pictures[k], caption=f"caption number {i} of {k}", meta={"image_key": k})
            for i, k in enumerate(keys)]


def test_distinct_images_groups_by_key_within_the_batch():
    samples = _samples(["a", "a", "b", "a", "c"])
    samples[4].meta.clear()
    assert distinct_images(samples) == ([0, 2, 4], [0, 0, 1, 0, 2])


@pytest.mark.parametrize("preset", ["random:tiny-clip", "random:tiny-siglip"])
def test_shared_images_are_encoded_once_with_the_same_results(preset):
    adapter = load_adapter(preset, "cpu")
    shared = _samples(["a", "a", "a", "b", "b", "c"])
    alone = [Sample(uid=s.uid, image=s.image, caption=s.caption) for s in shared]  # no key: every image encoded
    rows = []
    original = adapter.run_vision
    adapter.run_vision = lambda pixels, trace: (rows.append(pixels.shape[0]), original(pixels, trace))[1]
    try:
        once = record(adapter, shared, 6, words=True)
        assert rows == [3]
        every = record(adapter, alone, 6, words=True)
        assert rows == [3, 6]
    finally:
        adapter.run_vision = original
    torch.testing.assert_close(once.embeds["image"], every.embeds["image"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(once.embeds["text"], every.embeds["text"], rtol=0, atol=0)
    for a, b in zip(once.pooled["image"], every.pooled["image"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for a, b in zip(once.mean_tokens["image"], every.mean_tokens["image"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_shared_images_give_the_same_attention_statistics():
    adapter = load_adapter("random:tiny-clip", "cpu")
    shared = _samples(["a", "a", "b", "b"])
    alone = [Sample(uid=s.uid, image=s.image, caption=s.caption) for s in shared]
    once, every = record(adapter, shared, 4, attentions=True), record(adapter, alone, 4, attentions=True)
    assert set(once.attention) == set(every.attention) and "image" in once.attention
    np.testing.assert_allclose(once.attention["image"].count, every.attention["image"].count)
    np.testing.assert_allclose(once.attention["image"].share_total, every.attention["image"].share_total,
                               rtol=1e-5, atol=1e-6, equal_nan=True)

"""Synthetic scenes with deferred images: the same pixels, captions, trees and fingerprint key as eager ones, and a
run's samples hold no decoded image."""
import numpy as np

from mmdiag.data.images import open_image
from mmdiag.data.load import data_fingerprint, load_samples
from mmdiag.data.synthetic import SceneImage, make_synthetic
from mmdiag.data.types import DeferredImage


def test_deferred_scenes_render_the_eager_pixels():
    eager, deferred = make_synthetic(6, seed=3), make_synthetic(6, seed=3, deferred=True)
    for e, d in zip(eager, deferred):
        assert isinstance(d.image, SceneImage) and isinstance(d.image, DeferredImage)
        assert (d.caption, d.tree, d.phrases, d.scene_parents) == (e.caption, e.tree, e.phrases, e.scene_parents)
        np.testing.assert_array_equal(np.asarray(open_image(d.image)), np.asarray(e.image))
        np.testing.assert_array_equal(np.asarray(d.image.render()), np.asarray(d.image.render()))  # every call


def test_a_run_loads_deferred_scenes_and_the_fingerprint_names_them():
    samples = load_samples("synthetic", 4, seed=1)
    assert all(isinstance(s.image, SceneImage) for s in samples)
    assert data_fingerprint(samples) == data_fingerprint(load_samples("synthetic", 4, seed=1))
    assert data_fingerprint(samples) != data_fingerprint(load_samples("synthetic", 4, seed=2))
    other_size = make_synthetic(4, seed=1, image_size=64, deferred=True)
    assert data_fingerprint(samples) != data_fingerprint(other_size)

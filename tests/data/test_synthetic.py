"""Tests for the built-in synthetic dataset (mmdiag.data.synthetic)."""
from __future__ import annotations

import re
import time
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from mmdiag.data.scene_tree import phrase_head, scene_parents
from mmdiag.data.synthetic import COLOURS, SHAPES, SYNTHETIC_VOCAB, make_synthetic
from mmdiag.data.trees import depths, parents_to_heads, validate_heads
from mmdiag.data.types import DepTree, Sample

UPOS = {"DET", "ADJ", "NOUN", "VERB", "AUX", "ADP", "CCONJ", "PUNCT", "PRON"}
DEPRELS = {"det", "amod", "nsubj", "obj", "obl", "nmod", "case", "fixed", "cc", "conj",
           "punct", "root", "cop", "expl", "acl:relcl"}
SIZE_WORDS = {"small": "small", "tiny": "small", "large": "large", "big": "large"}


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    return make_synthetic(100, seed=0)


def test_basic_shape_of_samples(samples):
    assert len(samples) == 100
    for i, s in enumerate(samples):
        assert s.uid == f"synthetic-{i:06d}"
        assert isinstance(s.image, Image.Image)
        assert s.image.mode == "RGB" and s.image.size == (224, 224)
        assert isinstance(s.tree, DepTree)
        assert s.token_ids is None
        assert 2 <= len(s.meta["shapes"]) <= 4
    assert len({s.uid for s in samples}) == 100


def test_words_and_trees(samples):
    vocab = set(SYNTHETIC_VOCAB)
    for s in samples:
        t = s.tree
        validate_heads(t.heads)
        assert len(s.words) == len(t.heads) == len(t.upos) == len(t.deprels) == len(t.words)
        assert t.words == s.words
        assert s.caption == " ".join(s.words)
        assert set(s.words) <= vocab, set(s.words) - vocab
        assert all(w == w.lower() for w in s.words)
        assert set(t.upos) <= UPOS and set(t.deprels) <= DEPRELS
        root = t.heads.index(0)
        assert t.deprels[root] == "root"
        assert t.deprels.count("root") == 1
        # final "." is a PUNCT attached to the root
        assert s.words[-1] == "." and t.upos[-1] == "PUNCT"
        assert t.heads[-1] == root + 1 and t.deprels[-1] == "punct"
        # UD sanity: function words are leaves and point at the right kind of word
        children = Counter(h for h in t.heads)
        for i, (u, rel) in enumerate(zip(t.upos, t.deprels)):
            if rel in ("det", "amod", "case", "cc", "punct", "cop", "expl", "fixed"):
                assert children[i + 1] == (1 if rel == "case" and s.words[i] == "next" else 0)
            if rel in ("det", "amod"):
                assert t.upos[t.heads[i] - 1] == "NOUN"
            if rel == "det":
                assert u == "DET"
            if rel == "cop":
                assert s.words[i] == "is" and u == "AUX"


def test_vocab_is_exactly_what_the_grammar_uses():
    used = set()
    for s in make_synthetic(300, seed=5, image_size=64):
        used.update(s.words)
    vocab = set(SYNTHETIC_VOCAB)
    assert len(SYNTHETIC_VOCAB) == len(vocab)
    assert {".", ","} <= vocab
    assert used <= vocab
    # every word in the vocabulary actually occurs in a large enough sample
    assert vocab - used == set(), vocab - used


def _colour_mask(img: Image.Image, colour) -> np.ndarray:
    arr = np.asarray(img)
    return np.all(arr == np.asarray(colour, dtype=np.uint8), axis=-1)


def test_phrases_are_grounded_in_the_rendered_shapes(samples):
    for s in samples:
        shapes_by_box = {tuple(sh["box"]): sh for sh in s.meta["shapes"]}
        assert len(s.phrases) >= 1
        for p in s.phrases:
            words = s.words[p.start:p.end]
            # a base noun phrase: determiner, adjectives, shape noun
            assert s.tree.upos[p.start] == "DET"
            assert s.tree.upos[p.end - 1] == "NOUN" and words[-1] in SHAPES
            assert p.label == " ".join(words)
            assert phrase_head(s.tree, p) == p.end - 1
            x0, y0, x1, y1 = p.box
            assert 0 <= x0 < x1 <= 224 and 0 <= y0 < y1 <= 224
            sh = shapes_by_box[tuple(p.box)]
            assert sh["shape"] == words[-1]
            for w in words[1:-1]:
                assert w == sh["colour"] or SIZE_WORDS.get(w) == sh["size"]
            # the box holds the shape's colour and is tight around it
            mask = _colour_mask(s.image, COLOURS[sh["colour"]])
            inside = mask[int(y0):int(y1), int(x0):int(x1)]
            assert inside.mean() > 0.3
            assert inside[0].any() and inside[-1].any()
            assert inside[:, 0].any() and inside[:, -1].any()


def _subject_of(t: DepTree, anchor: int):
    """The word a spatial PP headed by ``anchor`` says something about."""
    rel = t.deprels[anchor]
    kids = {t.deprels[j]: j for j in range(len(t.heads)) if t.heads[j] == anchor + 1}
    if rel in ("nmod", "acl:relcl"):          # "X above Y", "X that is above Y"
        return t.heads[anchor] - 1
    if "cop" in kids:                         # "X is above Y"
        return kids["nsubj"]
    if rel == "obl":                          # "X sits above Y"
        verb = t.heads[anchor] - 1
        return next(j for j in range(len(t.heads))
                    if t.heads[j] == verb + 1 and t.deprels[j] == "nsubj")
    raise AssertionError(f"unexpected PP attachment {rel!r} in {t.words}")


def test_spatial_relations_are_true(samples):
    """above/below/under/left/right, read off the tree, agree with the scene."""
    checked = 0
    for s in samples:
        t, w = s.tree, s.words
        centre = {tuple(sh["box"]): sh["center"] for sh in s.meta["shapes"]}
        centre_of = {p.end - 1: centre[tuple(p.box)] for p in s.phrases}
        for i, word in enumerate(w):
            if word in ("above", "below", "under"):
                anchor = obj = t.heads[i] - 1
            elif word in ("left", "right"):
                anchor = i
                obj = next(j for j in range(len(w))
                           if t.heads[j] == i + 1 and t.deprels[j] == "nmod")
            else:
                continue
            subj = _subject_of(t, anchor)
            if subj not in centre_of or obj not in centre_of:   # "it"
                continue
            (xs, ys), (xo, yo) = centre_of[subj], centre_of[obj]
            ok = {"above": ys < yo, "below": ys > yo, "under": ys > yo,
                  "left": xs < xo, "right": xs > xo}[word]
            assert ok, (s.caption, word, w[subj], w[obj])
            checked += 1
    assert checked >= 50


def test_scene_trees(samples):
    for s in samples:
        assert s.scene_parents == scene_parents(s.tree, s.phrases)
        assert len(s.scene_parents) == len(s.phrases) + 1
        assert s.scene_parents[0] == -1
        parents_to_heads(s.scene_parents)   # a valid tree rooted at the image
    # the image has more than one child somewhere and phrases nest somewhere
    assert any(s.scene_parents[1:].count(0) >= 2 for s in samples)
    assert any(p > 0 for s in samples for p in s.scene_parents[1:])


def test_determinism_by_seed():
    a = make_synthetic(6, seed=3)
    b = make_synthetic(6, seed=3)
    for x, y in zip(a, b):
        assert x.caption == y.caption and x.tree == y.tree and x.phrases == y.phrases
        assert x.image.tobytes() == y.image.tobytes()
    # prefix property: sample i depends only on (seed, i)
    c = make_synthetic(3, seed=3)
    assert [s.caption for s in c] == [s.caption for s in a[:3]]
    assert all(x.image.tobytes() == y.image.tobytes() for x, y in zip(c, a))
    d = make_synthetic(6, seed=4)
    assert [s.caption for s in d] != [s.caption for s in a]
    assert all(x.image.tobytes() != y.image.tobytes() for x, y in zip(d, a))


def test_lengths_and_depths_vary(samples):
    lengths = Counter(len(s.words) for s in samples)
    assert len(lengths) >= 4
    assert min(lengths) >= 5 and max(lengths) <= 40
    assert sum(v for k, v in lengths.items() if 5 <= k <= 25) >= 80
    max_depths = {int(depths(s.tree.heads).max()) for s in samples}
    assert len(max_depths) >= 3
    roots = {s.tree.upos[s.tree.heads.index(0)] for s in samples}
    assert {"NOUN", "VERB"} <= roots
    rels = Counter(r for s in samples for r in s.tree.deprels)
    for r in ("acl:relcl", "conj", "cc", "nmod", "obl", "expl", "cop", "fixed"):
        assert rels[r] > 0, r
    assert any("," in s.words for s in samples)


def test_other_image_sizes_and_bad_arguments():
    small = make_synthetic(20, seed=1, image_size=64)
    for s in small:
        assert s.image.size == (64, 64)
        for p in s.phrases:
            x0, y0, x1, y1 = p.box
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
    assert make_synthetic(0) == []
    with pytest.raises(ValueError, match="n must be"):
        make_synthetic(-1)
    with pytest.raises(ValueError, match="image_size"):
        make_synthetic(2, image_size=8)


def test_background_is_not_a_shape_colour(samples):
    # background pixels (outside every shape box) never equal a shape colour
    for s in samples[:20]:
        arr = np.asarray(s.image).copy()
        for sh in s.meta["shapes"]:
            x0, y0, x1, y1 = (int(v) for v in sh["box"])
            arr[y0:y1, x0:x1] = 255
        for colour in COLOURS.values():
            assert not _colour_mask(Image.fromarray(arr), colour).any()


def test_fast_enough():
    t0 = time.perf_counter()
    make_synthetic(100, seed=11)
    # well under 1 s per 100 samples on a quiet machine; loose bound for shared CI
    assert time.perf_counter() - t0 < 4.0


def test_uid_pattern(samples):
    assert all(re.fullmatch(r"synthetic-\d{6}", s.uid) for s in samples)

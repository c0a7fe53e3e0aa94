"""Tests for mmdiag.data.scene_tree (Milewski et al. 2022 scene trees)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdiag.data.scene_tree import phrase_head, scene_parents
from mmdiag.data.trees import distances, parents_to_heads
from mmdiag.data.types import DepTree, Phrase

SETTINGS = settings(max_examples=40, deadline=None)
BOX = (0.0, 0.0, 1.0, 1.0)


def tree(words: str, heads) -> DepTree:
    w = tuple(words.split())
    assert len(w) == len(heads)
    return DepTree(words=w, heads=tuple(heads), upos=("X",) * len(w))


def ph(start: int, end: int) -> Phrase:
    return Phrase(start, end, BOX)


# --- hand-worked examples --------------------------------------------------

# a red circle is above a blue square .   (copular PP predicate: square is root)
COPULAR = tree("a red circle is above a blue square .", (3, 3, 8, 8, 8, 8, 8, 0, 8))


def test_copular_subject_hangs_under_predicate_phrase():
    assert scene_parents(COPULAR, [ph(0, 3), ph(5, 8)]) == (-1, 2, 0)
    assert phrase_head(COPULAR, ph(0, 3)) == 2
    assert phrase_head(COPULAR, ph(5, 8)) == 7


def test_phrase_head_ties_follow_milewski():
    # all words of the same depth: the LAST word (multimodal-probes utils._text_edges2visual_edges)
    assert phrase_head(COPULAR, ph(0, 2)) == 1      # "a red": both depth 2
    assert phrase_head(COPULAR, ph(4, 7)) == 6      # "above a blue": all depth 1
    # otherwise the first of the shallowest (np.argmin)
    assert phrase_head(COPULAR, ph(1, 4)) == 2      # red 2, circle 1, is 1 -> circle
    assert phrase_head(COPULAR, ph(2, 9)) == 7      # the root word wins
    assert phrase_head(COPULAR, (1, 7, 0)) == 7     # word indices in mention order


def test_existential_coordination():
    # there is a circle and a square .
    t = tree("there is a circle and a square .", (2, 0, 4, 2, 7, 7, 4, 2))
    # 'is' (root) heads no phrase -> circle attaches to the image; the square
    # is a conjunct of the circle -> attaches to the circle's node.
    assert scene_parents(t, [ph(2, 4), ph(5, 7)]) == (-1, 0, 1)
    # listed in the other order the node numbers swap
    assert scene_parents(t, [ph(5, 7), ph(2, 4)]) == (-1, 2, 0)


def test_walk_skips_words_that_head_no_phrase():
    # a circle that is near a star is above a square .
    t = tree("a circle that is near a star is above a square .",
             (2, 11, 7, 7, 7, 7, 2, 11, 11, 11, 0, 11))
    parents = scene_parents(t, [ph(0, 2), ph(5, 7), ph(9, 11)])
    assert parents == (-1, 3, 1, 0)
    # region distances = path lengths in the scene tree
    d = distances(parents_to_heads(parents))
    assert d[2, 0] == 3 and d[2, 3] == 2 and d[1, 3] == 1


def test_root_word_without_phrase_means_image():
    # a circle is to the left of a square .   ('left' is the root)
    t = tree("a circle is to the left of a square .", (2, 6, 6, 6, 6, 0, 9, 9, 6, 6))
    assert scene_parents(t, [ph(0, 2), ph(7, 9)]) == (-1, 0, 0)
    # once "the left" is a phrase, it heads the root word and collects both
    assert scene_parents(t, [ph(0, 2), ph(7, 9), ph(4, 6)]) == (-1, 3, 3, 0)


def test_nested_phrases():
    # a circle above a square .   (root 'circle', square is its nmod)
    t = tree("a circle above a square .", (2, 0, 5, 5, 2, 2))
    outer, inner_same_head, inner_other = ph(0, 5), ph(0, 2), ph(3, 5)
    # outer phrase -> image; "a circle" shares the head 'circle' -> under the
    # wider phrase; "a square" walks up to 'circle', represented by the outer one.
    assert scene_parents(t, [outer, inner_same_head, inner_other]) == (-1, 0, 1, 1)
    assert scene_parents(t, [inner_other, inner_same_head, outer]) == (-1, 3, 3, 0)
    assert scene_parents(t, [inner_other, outer]) == (-1, 2, 0)


def test_no_phrases_and_bad_spans():
    assert scene_parents(COPULAR, []) == (-1,)
    for bad in (ph(3, 3), ph(-1, 2), ph(5, 10)):
        with pytest.raises(ValueError, match="span"):
            scene_parents(COPULAR, [bad])
    with pytest.raises(ValueError):
        scene_parents(tree("a b", (0, 0)), [ph(0, 1)])


# --- properties --------------------------------------------------------------

@st.composite
def random_heads(draw, max_n: int = 20) -> tuple[int, ...]:
    """A random valid head list: random recursive tree, randomly relabelled."""
    n = draw(st.integers(1, max_n))
    parent = [-1] + [draw(st.integers(0, i - 1)) for i in range(1, n)]
    perm = draw(st.permutations(range(n)))
    heads = [0] * n
    for i in range(n):
        heads[perm[i]] = 0 if parent[i] < 0 else perm[parent[i]] + 1
    return tuple(heads)


@st.composite
def tree_and_phrases(draw):
    heads = draw(random_heads(max_n=20))
    n = len(heads)
    m = draw(st.integers(0, 6))
    spans = []
    for _ in range(m):
        a = draw(st.integers(0, n - 1))
        b = draw(st.integers(a + 1, n))
        spans.append(ph(a, b))
    return DepTree(words=tuple(f"w{i}" for i in range(n)), heads=heads,
                   upos=("X",) * n), spans


def _ancestors(heads, i):
    out = [i]
    while heads[out[-1]] != 0:
        out.append(heads[out[-1]] - 1)
    return out


def _brute_head(t: DepTree, p: Phrase) -> int:
    depth = {i: len(_ancestors(t.heads, i)) for i in range(p.start, p.end)}
    best = min(depth.values())
    if len(set(depth.values())) == 1:
        return p.end - 1
    return min(i for i, d in depth.items() if d == best)


@SETTINGS
@given(tree_and_phrases())
def test_matches_brute_force_when_heads_are_distinct(data):
    t, spans = data
    seen, distinct = set(), []
    for p in spans:
        h = _brute_head(t, p)
        if h not in seen:
            seen.add(h)
            distinct.append(p)
    heads_of = [_brute_head(t, p) for p in distinct]
    assert [phrase_head(t, p) for p in distinct] == heads_of
    expected = [-1]
    for h in heads_of:
        parent = 0
        for a in _ancestors(t.heads, h)[1:]:
            if a in heads_of:
                parent = heads_of.index(a) + 1
                break
        expected.append(parent)
    got = scene_parents(t, distinct)
    assert got == tuple(expected)
    # relabelling the phrases relabels the tree
    rev = distinct[::-1]
    m = len(distinct)
    remap = {0: 0, **{k + 1: m - k for k in range(m)}}
    got_rev = scene_parents(t, rev)
    for k in range(m):
        assert got_rev[m - k] == remap[got[k + 1]]


@SETTINGS
@given(tree_and_phrases())
def test_always_a_valid_tree_rooted_at_the_image(data):
    t, spans = data
    parents = scene_parents(t, spans)
    assert len(parents) == len(spans) + 1
    assert parents[0] == -1
    heads = parents_to_heads(parents)      # validates: one root, no cycles
    assert heads[0] == 0
    ph_heads = [phrase_head(t, p) for p in spans]
    for k, par in enumerate(parents[1:]):
        if par == 0:
            continue
        # the parent phrase's head is the child's head or a proper ancestor of it
        assert ph_heads[par - 1] in _ancestors(t.heads, ph_heads[k])

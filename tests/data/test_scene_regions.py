"""Scene trees as Milewski et al. (2022) build them: coreference, regions (boxes|union), text tree, gold targets.

Flickr30k-format fixtures are written by the tests; the gold parses are hand-made.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from mmdiag.data.flickr30k import read_flickr30k
from mmdiag.data.scene_tree import region_targets, scene_parents, text_tree_parents
from mmdiag.data.trees import distances, parents_to_heads
from mmdiag.data.types import DepTree, Phrase
from tests.data.test_scene_tree import random_heads

# "A man in a red shirt is smiling because he sees two dogs ." -- "he" is the man (entity 7)
COREF = ("[/EN#7/people A man] in [/EN#8/clothing a red shirt] is smiling because [/EN#7/people he] sees "
         "[/EN#9/animals two dogs] .")
WORDS = tuple("A man in a red shirt is smiling because he sees two dogs .".split())
#: 1-based heads, UD style: root "smiling"; "man" nsubj, "shirt" nmod of man, "sees" advcl, "he" its nsubj
HEADS = (2, 8, 6, 6, 6, 2, 8, 0, 11, 11, 8, 13, 11, 8)
XML = """<annotation><size><width>100</width><height>80</height></size>
<object><name>7</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>40</xmax><ymax>80</ymax></bndbox></object>
<object><name>8</name><bndbox><xmin>5</xmin><ymin>20</ymin><xmax>35</xmax><ymax>50</ymax></bndbox></object>
<object><name>9</name><bndbox><xmin>51</xmin><ymin>51</ymin><xmax>70</xmax><ymax>80</ymax></bndbox></object>
<object><name>9</name><bndbox><xmin>71</xmin><ymin>41</ymin><xmax>100</xmax><ymax>80</ymax></bndbox></object>
<object><name>12</name><bndbox><xmin>61</xmin><ymin>1</ymin><xmax>100</xmax><ymax>30</ymax></bndbox></object>
<object><name>13</name><nobndbox>1</nobndbox></object>
</annotation>"""


def parser(words):
    assert tuple(words) == WORDS
    upos = tuple("PUNCT" if w == "." else "X" for w in words)
    return HEADS, upos, tuple("." if w == "." else "NN" for w in words)


def write_root(root: Path, caption: str = COREF, xml: str = XML) -> Path:
    for sub in ("Sentences", "Annotations", "flickr30k-images"):
        (root / sub).mkdir(parents=True)
    (root / "Sentences" / "1.txt").write_text(caption + "\n", encoding="utf-8")
    (root / "Annotations" / "1.xml").write_text(xml, encoding="utf-8")
    Image.new("RGB", (100, 80), (20, 120, 40)).save(root / "flickr30k-images" / "1.jpg")
    return root


def test_coreferent_mentions_are_one_scene_node(tmp_path):
    (s,) = read_flickr30k(write_root(tmp_path / "f"), parser=parser, regions="union")
    man = s.phrases[0]
    assert man.words == (0, 1, 9) and (man.start, man.end) == (0, 2) and man.label == "A man … he"
    assert [p.entity for p in s.phrases] == ["7", "8", "9"]     # one region per entity, not per mention
    # nodes: image, 7 (A man ... he: head "man"), 8 (shirt -> man), 9 (dogs -> sees -> smiling = root -> image)
    assert s.scene_parents == (-1, 0, 1, 0)
    assert s.region_nodes == (1, 2, 3)
    # as one node "he" is no region of its own: no two regions share a box with gold distance 2
    heads, depth, dist = region_targets(s.scene_parents, s.region_nodes, len(s.phrases))
    assert dist.tolist() == [[0, 1, 2, 1], [1, 0, 1, 2], [2, 1, 0, 3], [1, 2, 3, 0]]
    assert heads == parents_to_heads(s.scene_parents)
    # a mention per node (the old reader) would have made "he" a fourth node under "sees" -> image
    split = [Phrase(0, 2, (0, 0, 1, 1)), Phrase(3, 6, (0, 0, 1, 1)), Phrase(9, 10, (0, 0, 1, 1)),
             Phrase(11, 13, (0, 0, 1, 1))]
    assert scene_parents(s.tree, split) == (-1, 0, 1, 0, 0)


def test_boxes_regions_share_their_entity_node_and_unmentioned_boxes_hang_under_the_image(tmp_path):
    (s,) = read_flickr30k(write_root(tmp_path / "f"), parser=parser)   # default: boxes
    assert [(p.entity, p.box) for p in s.phrases] == [
        ("7", (0.0, 0.0, 40.0, 80.0)), ("8", (4.0, 19.0, 35.0, 50.0)), ("9", (50.0, 50.0, 70.0, 80.0)),
        ("9", (70.0, 40.0, 100.0, 80.0)), ("12", (60.0, 0.0, 100.0, 30.0))]
    assert s.phrases[-1].start == s.phrases[-1].end == 0 and s.phrases[-1].words == ()
    assert s.region_nodes == (1, 2, 3, 3, 4)
    assert s.scene_parents == (-1, 0, 1, 0, 0)          # entity 12 (not in the caption) -> image; 13 has no box
    heads, depth, dist = region_targets(s.scene_parents, s.region_nodes, len(s.phrases))
    # items: image, man, shirt, dogs a, dogs b, entity 12
    assert depth.tolist() == [0, 1, 2, 1, 1, 1]
    assert dist[3, 4] == 0 and dist[2, 3] == dist[2, 4] == 3 and dist[5, 2] == 3 and dist[5, 0] == 1
    # UUAS gold edges: Kruskal over the gold distances, ties row-major (Milewski's VisualWordPairReporter)
    assert heads == (0, 1, 2, 1, 4, 1)
    with pytest.raises(ValueError, match="region nodes"):
        region_targets(s.scene_parents, (1, 2, 9), 3)


def test_union_mode_unions_an_entitys_boxes(tmp_path):
    (s,) = read_flickr30k(write_root(tmp_path / "f"), parser=parser, regions="union")
    assert s.phrases[2].box == (50.0, 40.0, 100.0, 80.0)


def test_entity_without_box_is_a_node_on_the_path(tmp_path):
    # "[A man] walks in [the park] with [a dog] ." -- the park (scene, no box) sits between man and dog
    caption = "[/EN#1/people A man] walks in [/EN#2/scene the park] with [/EN#3/animals a dog] ."
    words = tuple("A man walks in the park with a dog .".split())
    heads = (2, 3, 0, 6, 6, 3, 9, 9, 6, 3)   # dog nmod of park
    xml = """<annotation><size><width>10</width><height>10</height></size>
<object><name>1</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>
<object><name>3</name><bndbox><xmin>6</xmin><ymin>6</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>
<object><name>2</name><nobndbox>1</nobndbox><scene>1</scene></object></annotation>"""
    root = write_root(tmp_path / "f", caption, xml)
    (s,) = read_flickr30k(root, parser=lambda w: (heads, ("X",) * len(w)))
    assert s.words == words
    assert s.scene_parents == (-1, 0, 0, 2) and s.region_nodes == (1, 3)
    _, _, dist = region_targets(s.scene_parents, s.region_nodes, 2)
    assert dist[1, 2] == 3 and dist[0, 2] == 2         # man -> image -> park -> dog


# --- the text tree: minimum spanning tree of gold distances without punctuation ------------------------------

def _dash_tree(xpos_dash: str) -> DepTree:
    # "dog cat - man": the dash (a punctuation word with dependents) heads "dog" and "cat"; "man" is the root
    return DepTree(words=("dog", "cat", "-", "man"), heads=(3, 3, 4, 0), upos=("NOUN", "NOUN", "PUNCT", "NOUN"),
                   xpos=("NN", "NN", xpos_dash, "NN"))


def test_mst_text_tree_turns_siblings_under_punctuation_into_parent_and_child():
    t = _dash_tree(":")
    assert text_tree_parents(t, "heads") == [2, 2, 3, -1]
    assert text_tree_parents(t) == [3, 0, -1, -1]        # dog-cat (distance 2, equal depth: lower index parent)
    phrases = [Phrase(0, 1, (0, 0, 1, 1)), Phrase(1, 2, (0, 0, 1, 1)), Phrase(3, 4, (0, 0, 1, 1))]
    assert scene_parents(t, phrases, text_tree="heads") == (-1, 3, 3, 0)
    assert scene_parents(t, phrases) == (-1, 3, 1, 0)    # Milewski's: cat under dog
    # PTB "HYPH" is not one of Hewitt's seven tags: kept under ptb, left out under upos (UPOS PUNCT)
    hyph = _dash_tree("HYPH")
    assert scene_parents(hyph, phrases) == (-1, 3, 3, 0)
    assert scene_parents(hyph, phrases, punctuation="upos") == (-1, 3, 1, 0)
    with pytest.raises(ValueError, match="accepted: mst, heads"):
        text_tree_parents(t, "spanning")



@st.composite
def _trees(draw, max_n: int = 14):
    heads = draw(random_heads(max_n))
    n = len(heads)
    punct = [draw(st.booleans()) and heads[i] != 0 for i in range(n)]
    xpos = tuple("," if p else "NN" for p in punct)
    return DepTree(words=tuple(f"w{i}" for i in range(n)), heads=tuple(heads), upos=("X",) * n, xpos=xpos)


@settings(max_examples=40, deadline=None)
@given(_trees())
def test_mst_text_tree_is_the_dependency_tree_when_punctuation_is_a_leaf(t):
    up = text_tree_parents(t)
    heads_up = text_tree_parents(t, "heads")
    punct = [x == "," for x in t.xpos]
    has_child = {h - 1 for h in t.heads if h}
    for i in range(len(t.heads)):
        if punct[i]:
            assert up[i] == -1
        elif not any(punct[h] and h in has_child for h in range(len(t.heads))):
            assert up[i] == heads_up[i]
    # always a forest over the kept words whose edges never go to a deeper word
    d = distances(t.heads)
    root = t.heads.index(0)
    for i, p in enumerate(up):
        if p >= 0:
            assert d[root, p] <= d[root, i]


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_region_targets_properties(data):
    n_nodes = data.draw(st.integers(1, 8))
    parents = [-1] + [data.draw(st.integers(0, k - 1)) for k in range(1, n_nodes + 1)]
    regions = data.draw(st.lists(st.integers(1, n_nodes), min_size=1, max_size=10))
    heads, depth, dist = region_targets(parents, regions, len(regions))
    node_d = distances(parents_to_heads(parents))
    items = [0] + regions
    assert np.array_equal(dist, node_d[np.ix_(items, items)])
    assert (np.diag(dist) == 0).all() and np.array_equal(dist, dist.T)
    parents_to_heads([h - 1 for h in heads])            # a valid tree rooted at the image
    assert heads[0] == 0
    # the spanning tree is a minimum one: its weight is the least possible (Kruskal = Prim's weight)
    from scipy.sparse.csgraph import minimum_spanning_tree
    weight = sum(dist[i, h - 1] for i, h in enumerate(heads) if h)
    assert weight == pytest.approx(minimum_spanning_tree(dist + 1.0 - np.eye(len(items))).sum() - (len(items) - 1))
    one_to_one = region_targets(parents)
    assert one_to_one[0] == parents_to_heads(parents)

"""Scene trees over grounded phrases (Milewski et al., ACL 2022, arXiv:2203.09306).

A scene tree has one node for the image (node 0, the root) and one node per
phrase (node ``k + 1`` for phrase ``k``; a phrase may be several mentions of
one entity, :meth:`~mmdiag.data.types.Phrase.word_indices`). It is read off the
caption's dependency tree as Milewski's code does (multimodal-probes,
``probing_project/utils.py::_text_edges2visual_edges`` and
``probing_project/scene_tree.py::create_scene_tree``):

1. the *text tree* (:func:`text_tree_parents`): by default (``text_tree="mst"``)
   the minimum spanning tree of the gold word distances with punctuation words
   removed (Kruskal, ties in row-major order, ``utils.dist_matrix_to_edges``),
   each edge directed from the shallower word (gold depth) to the deeper, the
   lower index being the parent on equal depth (``scene_tree._edges2directed_edges``).
   Where punctuation is a leaf this is the dependency tree without punctuation;
   a punctuation word with dependents makes them siblings joined by a distance-2
   edge, so one becomes the other's parent. ``text_tree="heads"`` walks the
   dependency heads instead (mmdiag's earlier convention);
2. each phrase's *head* (:func:`phrase_head`) is its shallowest word by gold
   depth; when all its words have the same depth it is the LAST word (Milewski's
   tie rule), otherwise the first of the shallowest;
3. from the phrase head, walk up the text tree to the nearest word that is
   another phrase's head (→ that phrase's node) or the sentence root; if the
   root word heads no phrase, the phrase attaches to the image. A phrase whose
   head is the root, or whose head has no parent in the text tree (a
   punctuation head: Milewski's code leaves it dangling), attaches to the image.

Several phrases may share a head word (nested spans such as "a dog" inside
"a dog on a couch"; Flickr30k markup has no nesting). Among them the widest
span comes first (then the leftmost, then the lower index) and *represents*
that word: each of the others attaches to the one before it, and phrases below
that word attach to the representative.

Punctuation is read per :func:`mmdiag.metrics.probe_trees.punctuation_tags`:
Hewitt's seven PTB tags from ``DepTree.xpos`` (``punctuation="ptb"``, the
paper's) or UPOS ``PUNCT``; a tree without the chosen tags falls back to the other.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

from mmdiag.data.trees import depths, distances, validate_heads
from mmdiag.data.types import DepTree, Phrase
from mmdiag.metrics.probe_trees import PUNCT_TAGS, punctuation_tags

__all__ = ["TEXT_TREES", "phrase_head", "region_targets", "scene_parents", "text_tree_parents"]

#: how the text tree the scene tree is read from is built, the default first
TEXT_TREES = ("mst", "heads")


def _words(tree: DepTree, phrase: Union[Phrase, Sequence[int]]) -> tuple[int, ...]:
    n = len(tree.heads)
    if isinstance(phrase, Phrase):
        if not phrase.words and not (0 <= phrase.start < phrase.end <= n):
            raise ValueError(f"phrase span [{phrase.start}, {phrase.end}) is empty or outside the {n}-word caption")
        words = phrase.word_indices()
    else:
        words = tuple(int(i) for i in phrase)
    if not words or any(not 0 <= i < n for i in words):
        raise ValueError(f"phrase words {list(words)} are empty or outside the {n}-word caption (span)")
    return words


def phrase_head(tree: DepTree, phrase: Union[Phrase, Sequence[int]]) -> int:
    """0-based index of the phrase's head: its shallowest word; the last word when all have the same depth.

    ``depth`` from :func:`mmdiag.data.trees.depths` (Milewski et al. 2022, §3;
    multimodal-probes ``utils.py::_text_edges2visual_edges``: "if all depths are
    equal, we use the final token", else ``argmin``, the first shallowest).
    ``phrase``: a :class:`Phrase` (all its words, :meth:`Phrase.word_indices`) or word indices in order.
    """
    return _head(depths(tree.heads), _words(tree, phrase))


def _head(d: np.ndarray, words: Sequence[int]) -> int:
    ds = [int(d[i]) for i in words]
    if all(x == ds[0] for x in ds):
        return words[-1]
    return words[int(np.argmin(ds))]


def text_tree_parents(tree: DepTree, text_tree: str = "mst", punctuation: str = "ptb") -> list[int]:
    """Parent of each word in the text tree (-1: the root, or no parent), 0-based.

    ``"heads"``: the dependency heads. ``"mst"`` (Milewski's): Kruskal's minimum
    spanning tree of the gold distances over the non-punctuation words, pairs
    taken in order of distance then row-major ``(i, j)``; an edge is directed
    from the word of lower gold depth (the lower index on equal depth); a word
    with several incoming edges keeps the first added (Milewski's
    ``_find_parent_edge`` reads the first). Punctuation words get -1.
    """
    if text_tree not in TEXT_TREES:
        raise ValueError(f"text tree {text_tree!r}: accepted: {', '.join(TEXT_TREES)}")
    n = len(tree.heads)
    if text_tree == "heads":
        return [h - 1 for h in tree.heads]
    tags, _ = punctuation_tags(tree.upos, tree.xpos, n, punctuation)
    keep = [i for i in range(n) if tags is None or tags[i] not in PUNCT_TAGS]
    dist, d = distances(tree.heads), depths(tree.heads)
    pairs = sorted(((int(dist[i, j]), i, j) for a, i in enumerate(keep) for j in keep[a + 1:]))
    parents = [-1] * n
    for i, j in _kruskal_edges(pairs, n):
        parent, child = (j, i) if d[j] < d[i] else (i, j)
        if parents[child] < 0:
            parents[child] = parent
    return parents


def _kruskal_edges(pairs: Sequence[tuple], n: int) -> list[tuple[int, int]]:
    """The edges Kruskal's algorithm keeps from ``pairs`` = sorted ``(weight, i, j)`` over items ``0..n-1``, in
    the order it keeps them (a union-find with path halving)."""
    root = list(range(n))

    def find(v: int) -> int:
        while root[v] != v:
            root[v] = root[root[v]]
            v = root[v]
        return v

    kept = []
    for _, i, j in pairs:
        ri, rj = find(i), find(j)
        if ri != rj:
            root[ri] = rj
            kept.append((i, j))
    return kept


def scene_parents(tree: DepTree, phrases: Sequence[Union[Phrase, Sequence[int]]], text_tree: str = "mst",
                  punctuation: str = "ptb") -> tuple[int, ...]:
    """Scene tree over ``[image, phrase_0, ..., phrase_{m-1}]`` as a parents tuple.

    ``result[0] == -1`` (the image is the root); ``result[k + 1]`` is the node of
    phrase ``k``'s parent, found by walking up the text tree
    (:func:`text_tree_parents`) from the phrase head to the nearest word that
    heads another phrase; reaching the sentence root without one gives the image
    (Milewski et al. 2022, arXiv:2203.09306). See the module docstring.
    """
    validate_heads(tree.heads)
    if len(tree.words) and len(tree.words) != len(tree.heads):
        raise ValueError(f"tree has {len(tree.words)} words but {len(tree.heads)} heads")
    d = depths(tree.heads)
    words_of = [_words(tree, p) for p in phrases]
    heads_of = [_head(d, w) for w in words_of]
    up = text_tree_parents(tree, text_tree, punctuation)
    # a phrase head's parent is never deeper (an MST edge is directed from the shallower word), so walking up
    # ends at the root; on equal depth (siblings joined across a punctuation word) the lower index is the parent
    # The phrases of one head word, most words first (then leftmost, then index): the first represents the word.
    groups: dict[int, list[int]] = {}
    for k in sorted(range(len(phrases)), key=lambda k: (-len(words_of[k]), words_of[k][0], k)):
        groups.setdefault(heads_of[k], []).append(k)
    owner = {h: ks[0] + 1 for h, ks in groups.items()}   # word -> node of its representative phrase
    parents = [-1] + [0] * len(phrases)
    for h, ks in groups.items():
        parent, v = 0, up[h]
        while v >= 0:
            if v in owner:
                parent = owner[v]
                break
            v = up[v]
        parents[ks[0] + 1] = parent
        for before, k in zip(ks, ks[1:]):
            parents[k + 1] = before + 1
    return tuple(parents)


def _kruskal_heads(dist: np.ndarray) -> tuple[int, ...]:
    """1-based heads (item 0 the root) of Kruskal's spanning tree of ``dist``, ties in row-major ``(i, j)`` order."""
    n = dist.shape[0]
    adj: dict[int, list[int]] = {i: [] for i in range(n)}
    for i, j in _kruskal_edges(sorted((float(dist[i, j]), i, j) for i in range(n) for j in range(i + 1, n)), n):
        adj[i].append(j)
        adj[j].append(i)
    heads = [0] * n
    seen, stack = {0}, [0]
    while stack:
        v = stack.pop()
        for u in adj[v]:
            if u not in seen:
                seen.add(u)
                heads[u] = v + 1
                stack.append(u)
    return tuple(heads)


def region_targets(parents: Sequence[int], region_nodes: Sequence[int] = (), n_regions: Optional[int] = None
                   ) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
    """Gold ``(heads, depths, distances)`` over the probed items ``[image, region_0, ...]`` of a scene tree.

    Item ``k + 1`` is region ``k``, on scene node ``region_nodes[k]`` (default ``k + 1``; item 0 is node 0).
    ``depths[a]`` is its node's depth and ``distances[a, b]`` the path length between the two items' nodes in
    the scene tree (0 between boxes of one entity), as Milewski's ``VisualDepthTask`` /
    ``VisualDistanceTask`` label every box. ``heads``: the spanning tree UUAS compares with, Kruskal's
    over ``distances`` (ties row-major), as Milewski's ``VisualWordPairReporter`` takes the gold edges;
    when the regions are the nodes one to one this is the scene tree itself.
    """
    from mmdiag.data.trees import parents_to_heads

    node_heads = parents_to_heads(parents)
    n = len(parents) - 1 if n_regions is None and not region_nodes else (
        len(region_nodes) if n_regions is None else int(n_regions))
    nodes = [0] + ([int(v) for v in region_nodes] if region_nodes else list(range(1, n + 1)))
    if len(nodes) != n + 1 or any(not 0 < v < len(parents) for v in nodes[1:]):
        raise ValueError(f"region nodes {nodes[1:]} do not name {n} nodes of the {len(parents)}-node scene tree")
    idx = np.asarray(nodes)
    dist = distances(node_heads)[np.ix_(idx, idx)].astype(np.float64)
    return _kruskal_heads(dist), depths(node_heads)[idx].astype(np.float64), dist

"""Scene trees over grounded phrases (Milewski et al., ACL 2022, arXiv:2203.09306).

A scene tree has one node for the image (node 0, the root) and one node per
grounded phrase (node ``k + 1`` for phrase ``k``). It is read off the caption's
dependency tree:

1. each phrase's *head* is its shallowest word in the dependency tree
   (:func:`phrase_head`; ties go to the leftmost word);
2. phrases are attached in order of head depth: from the phrase head, walk up
   the dependency tree to the nearest ancestor word that is another phrase's
   head (→ that phrase's node) or the sentence root; if the sentence root word
   heads no phrase, the phrase attaches to the image node. A phrase whose head
   is the sentence root attaches to the image.

Several phrases may share a head word (nested spans such as "a dog" inside
"a dog on a couch"). Among them the widest span comes first (then the leftmost,
then the lower index) and *represents* that word: each of the others attaches
to the one before it, and phrases below that word attach to the representative.

Region distance for the visual distance probe is the path length in this tree
(:func:`mmdiag.data.trees.distances` after
:func:`mmdiag.data.trees.parents_to_heads`).
"""
from __future__ import annotations

from typing import Sequence

from mmdiag.data.trees import depths, validate_heads
from mmdiag.data.types import DepTree, Phrase

__all__ = ["phrase_head", "scene_parents"]


def _check_span(tree: DepTree, phrase: Phrase) -> None:
    n = len(tree.heads)
    if not (0 <= phrase.start < phrase.end <= n):
        raise ValueError(
            f"phrase span [{phrase.start}, {phrase.end}) is empty or outside the "
            f"{n}-word caption")


def phrase_head(tree: DepTree, phrase: Phrase) -> int:
    """0-based index of the phrase's head: its shallowest word, leftmost on ties.

    ``head = argmin_{i in [start, end)} depth(i)`` with depth from
    :func:`mmdiag.data.trees.depths` (Milewski et al. 2022, §3, arXiv:2203.09306).
    """
    return _head(depths(tree.heads), tree, phrase)


def _head(d, tree: DepTree, phrase: Phrase) -> int:
    _check_span(tree, phrase)
    span = range(phrase.start, phrase.end)
    return min(span, key=lambda i: (int(d[i]), i))


def scene_parents(tree: DepTree, phrases: Sequence[Phrase]) -> tuple[int, ...]:
    """Scene tree over ``[image, phrase_0, ..., phrase_{m-1}]`` as a parents tuple.

    ``result[0] == -1`` (the image is the root); ``result[k + 1]`` is the node of
    phrase ``k``'s parent, found by walking up the dependency tree from the
    phrase head to the nearest word that heads another phrase; reaching the
    sentence root without one gives the image (Milewski et al. 2022,
    arXiv:2203.09306). See the module docstring for shared heads.
    """
    validate_heads(tree.heads)
    if len(tree.words) and len(tree.words) != len(tree.heads):
        raise ValueError(
            f"tree has {len(tree.words)} words but {len(tree.heads)} heads")
    d = depths(tree.heads)
    heads_of = [_head(d, tree, p) for p in phrases]
    # Processing order: by head depth, then widest span, then leftmost, then index.
    order = sorted(
        range(len(phrases)),
        key=lambda k: (int(d[heads_of[k]]), -(phrases[k].end - phrases[k].start),
                       phrases[k].start, k))
    parents = [-1] + [0] * len(phrases)
    last_at_word: dict[int, int] = {}   # word -> node of the latest phrase headed by it
    owner: dict[int, int] = {}          # word -> node of its representative phrase
    for k in order:
        h = heads_of[k]
        node = k + 1
        if h in last_at_word:
            parents[node] = last_at_word[h]
        else:
            parent = 0
            v = tree.heads[h] - 1
            while v >= 0:
                if v in owner:
                    parent = owner[v]
                    break
                v = tree.heads[v] - 1
            parents[node] = parent
            owner[h] = node
        last_at_word[h] = node
    return tuple(parents)

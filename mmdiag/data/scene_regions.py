"""A Flickr30k caption's scene nodes and image regions, as Milewski et al. (2022) build them.

Scene nodes (:func:`scene_layout`): the image, then one node per entity id the
caption marks, in order of first mention. All mentions of one entity ("[/EN#7
a man] ... [/EN#7 he]") are ONE node whose words are all their words
(multimodal-probes ``utils._text_edges2visual_edges`` groups the words of a
phrase id); entities without a box (``<nobndbox>``, scenes, ``notvisual`` id 0,
whose mentions likewise share one node) are nodes too, so they still carry the
path between the entities around them, but have no region.

Regions (``Sample.phrases``, one image-region state each), ``--mm-scene-regions``:

* ``boxes`` (default, the paper's): every box is its own region; the boxes of one
  entity share its node (gold distance 0 between them, as Milewski's
  ``VisualDistanceTask`` fills the labels per box); then the boxes of entities the
  caption does not mention, one node per such entity attached to the image root
  (``scene_tree.create_scene_tree``: "add edges for boxes not in current sentence");
* ``union``: one region per mentioned entity with a box, the union of its boxes
  (mmdiag's earlier convention).

``Sample.region_nodes[k]`` is region ``k``'s node. An unmentioned box has no
words (``start == end``). Milewski's code gives those boxes the depth label -1,
which its depth loss masks out; mmdiag scores them at depth 1, their distance to
the image (``docs/fidelity.md``).
"""
from __future__ import annotations

from typing import Optional, Sequence

from mmdiag.data.scene_tree import scene_parents
from mmdiag.data.types import DepTree, Phrase

__all__ = ["SCENE_REGIONS", "SceneLayout", "scene_layout"]

#: ``--mm-scene-regions`` values, the default first
SCENE_REGIONS = ("boxes", "union")

Box = tuple[float, float, float, float]
Mark = tuple[int, int, str, tuple[str, ...]]


def _union(boxes: Sequence[Box]) -> Box:
    """Smallest box holding all ``boxes``: ``(min x0, min y0, max x1, max y1)``."""
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


class SceneLayout:
    """The regions, scene tree and region→node map of one caption (see the module docstring)."""

    def __init__(self, phrases: tuple[Phrase, ...], scene_parents: tuple[int, ...], region_nodes: tuple[int, ...]):
        self.phrases, self.scene_parents, self.region_nodes = phrases, scene_parents, region_nodes


def scene_layout(words: Sequence[str], marks: Sequence[Mark], boxes: dict[str, list[Box]],
                 tree: Optional[DepTree], regions: str = "boxes", punctuation: str = "ptb") -> SceneLayout:
    """Regions (``Sample.phrases``), ``scene_parents`` (``()`` without a tree) and ``region_nodes`` of a caption.

    ``marks``: :func:`mmdiag.data.flickr30k.parse_caption`'s ``(start, end, entity, types)`` spans;
    ``boxes``: entity id -> its boxes (:func:`mmdiag.data.flickr30k.read_annotation`), in annotation order.
    """
    if regions not in SCENE_REGIONS:
        raise ValueError(f"scene regions {regions!r}: accepted: {', '.join(SCENE_REGIONS)}")
    entities: dict[str, list[tuple[int, int]]] = {}
    for start, end, entity, _ in marks:
        entities.setdefault(entity, []).append((start, end))
    order = list(entities)                            # node k + 1 = order[k]
    node_of = {e: k + 1 for k, e in enumerate(order)}
    phrases: list[Phrase] = []
    nodes: list[int] = []
    for entity in order:
        spans = entities[entity]
        idx = tuple(i for a, b in spans for i in range(a, b))
        label = " … ".join(" ".join(words[a:b]) for a, b in spans)
        own = boxes.get(entity, [])
        if not own:
            continue
        start, end = spans[0]
        many = idx if len(spans) > 1 else ()
        for box in (own if regions == "boxes" else [_union(own)]):
            phrases.append(Phrase(start, end, tuple(box), label, many, entity))
            nodes.append(node_of[entity])
    parents: list[int] = []
    if tree is not None:
        word_sets = [tuple(i for a, b in entities[e] for i in range(a, b)) for e in order]
        parents = list(scene_parents(tree, word_sets, punctuation=punctuation))
    if regions == "boxes":
        for entity, own in boxes.items():
            if entity in node_of or not own:
                continue
            node_of[entity] = len(node_of) + 1
            if tree is not None:
                parents.append(0)
            for box in own:
                phrases.append(Phrase(0, 0, tuple(box), f"<entity {entity}>", (), entity))
                nodes.append(node_of[entity])
    if not phrases:
        parents = []
    return SceneLayout(tuple(phrases), tuple(parents), tuple(nodes))

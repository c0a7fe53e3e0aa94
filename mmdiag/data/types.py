"""Plain data types shared by the data loaders, the adapters and the recorder.

A :class:`Sample` is one image-caption pair, optionally annotated with a gold
dependency tree over the caption's words and with grounded phrases (word span +
box), from which the scene tree of Milewski et al. (2022) is derived.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from PIL import Image


@dataclass(frozen=True)
class DepTree:
    """A dependency tree over ``words`` in Universal Dependencies conventions.

    ``heads[i]`` is the 1-based index of word ``i``'s head, 0 for the root
    (exactly one word has head 0). ``upos[i]`` is its UPOS tag and ``xpos[i]``
    its language-specific tag (PTB tags for English: CoNLL-U column 5, spaCy's
    ``tag_``; empty when unknown). Punctuation (UPOS ``PUNCT`` or Hewitt's seven
    PTB tags, ``--mm-probe-punctuation``) is excluded from root accuracy and UUAS.
    """

    words: tuple[str, ...]
    heads: tuple[int, ...]
    upos: tuple[str, ...]
    deprels: tuple[str, ...] = ()
    xpos: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.words)


@dataclass(frozen=True)
class Phrase:
    """A grounded phrase: caption words ``[start, end)`` and their image box.

    ``box`` is ``(x0, y0, x1, y1)`` in pixels of the sample's image. ``words``:
    every caption word of the phrase when it is more than one span (the merged
    mentions of one entity, "a man ... he"; empty = ``range(start, end)``, and
    ``start, end`` is then the first mention). ``entity``: the Flickr30k entity
    id ("" when unknown). A box of an entity the caption does not mention
    (``--mm-scene-regions=boxes``) has no words: ``start == end`` and ``words == ()``.
    """

    start: int
    end: int
    box: tuple[float, float, float, float]
    label: str = ""
    words: tuple[int, ...] = ()
    entity: str = ""

    def word_indices(self) -> tuple[int, ...]:
        """The phrase's caption words: ``words``, or ``range(start, end)`` when it is one span."""
        return self.words if self.words else tuple(range(self.start, self.end))


@dataclass(frozen=True)
class EncodedImage:
    """An image file's bytes held in memory (a parquet cell, a webdataset member), decoded per batch.

    ``source`` says where the bytes came from (``shard-000.tar:000042.jpg``, ``data.parquet row 7``) so
    that a file that cannot be decoded is named in the error.
    """

    data: bytes
    source: str

    def __repr__(self) -> str:
        return f"EncodedImage({self.source!r}, {len(self.data)} bytes)"


class DeferredImage(ABC):
    """An image made when it is opened (:func:`mmdiag.data.images.open_image`), not held by its sample.

    The built-in synthetic scenes are deferred: N samples then hold N small descriptions instead of N
    decoded 224x224 images (150 KB each), and the forward pass renders each batch's images as it opens
    them, as it reads image files. Subclasses give ``render()`` (the RGB image, the same on every call) and
    ``identity()`` (what the data fingerprint hashes for it: JSON-serialisable, equal for equal images).
    """

    @abstractmethod
    def render(self) -> Any:
        """The image (a PIL RGB image)."""

    @abstractmethod
    def identity(self) -> list:
        """What identifies the image for the data fingerprint."""


#: ``Sample.meta`` key naming the image a caption belongs to: samples with the same value show the same image
#: (COCO's five captions per image); see :func:`mmdiag.data.groups.text_to_image_map`
IMAGE_KEY = "image_key"


@dataclass
class Sample:
    """One image-caption pair with optional gold structure.

    ``words`` is the caption split into words (the units the probes score);
    ``tree`` annotates them; ``phrases`` ground spans of them in the image;
    ``scene_parents`` is the scene tree over nodes ``[image, phrase_0, ...]``:
    ``scene_parents[0] == -1`` (the image is the root) and
    ``scene_parents[k + 1]`` is the node index of phrase ``k``'s parent.
    ``region_nodes``: when the phrases (the image regions) are not the scene
    nodes one to one, ``region_nodes[k]`` is the scene node of phrase ``k``
    (several boxes of one entity share a node; a scene node may have no region,
    e.g. an entity without a box); empty = phrase ``k`` is node ``k + 1``.
    ``image`` is a PIL image, the path of one, or the encoded bytes of one (:class:`EncodedImage`, from a
    parquet file or a webdataset shard), or a :class:`DeferredImage` that makes it (the synthetic scenes);
    paths, bytes and deferred images are opened lazily, per batch;
    ``token_ids`` short-circuits tokenisation (the ``noise`` control).
    ``meta[IMAGE_KEY]`` (when set) identifies the image, shared by every caption of it.
    """

    uid: str
    image: Union[Image.Image, Path, "EncodedImage", "DeferredImage", None]
    caption: str
    words: Optional[tuple[str, ...]] = None
    tree: Optional[DepTree] = None
    phrases: tuple[Phrase, ...] = ()
    scene_parents: tuple[int, ...] = ()
    region_nodes: tuple[int, ...] = ()
    token_ids: Optional[tuple[int, ...]] = None
    meta: dict = field(default_factory=dict)

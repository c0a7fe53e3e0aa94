"""Several captions per image: which samples share an image, as Schrodi et al.'s ``text_to_image_map``.

COCO has five captions per image. Each caption is its own sample (the forward pass encodes every pair), and
``Sample.meta["image_key"]`` names the image. The gap metrics then use each image once (the image centroid,
the within-image dissimilarity, separability) and match each caption to its own image (L2I, RMG, retrieval),
as Schrodi et al. 2024 (arXiv:2404.07983) do with their ``text_to_image_map``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from mmdiag.data.types import IMAGE_KEY, Sample


@dataclass(frozen=True)
class CaptionGroups:
    """``image_rows[k]``: the sample whose image row stands for image ``k``; ``text_to_image[j]``: caption j's image.

    Without shared images ``image_rows == text_to_image == range(n)``.
    """

    image_rows: tuple[int, ...]
    text_to_image: tuple[int, ...]

    @property
    def shared(self) -> bool:
        """True when some image has more than one caption."""
        return len(self.image_rows) < len(self.text_to_image)


def text_to_image_map(samples: Sequence[Sample]) -> CaptionGroups:
    """Group ``samples`` by ``meta["image_key"]`` (a sample without one is its own image), in first-seen order."""
    first: dict[object, int] = {}
    image_rows: list[int] = []
    mapping: list[int] = []
    for i, sample in enumerate(samples):
        key = sample.meta.get(IMAGE_KEY) if sample.meta else None
        key = ("sample", i) if key is None else ("image", key)
        if key not in first:
            first[key] = len(image_rows)
            image_rows.append(i)
        mapping.append(first[key])
    return CaptionGroups(tuple(image_rows), tuple(mapping))

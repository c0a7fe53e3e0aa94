"""Region features for region-based vision-language models (LXMERT, VisualBERT).

LXMERT (Tan & Bansal 2019, arXiv:1908.07490) and VisualBERT (Li et al. 2019,
arXiv:1908.03557) do not read pixels: they read one feature vector per image
*region*, produced by a Faster R-CNN detector (2048-d pooled features; for
LXMERT the "bottom-up attention" detector of Anderson et al. 2018,
arXiv:1707.07998), and LXMERT also reads each region's box.

**Regions of a sample** (as in Milewski et al. 2022, arXiv:2203.09306, who feed
the gold Flickr30k Entities boxes): the whole-image box first, then the boxes of
the sample's grounded phrases in ``Sample.phrases`` order, i.e. exactly the
nodes of the scene tree ``[image, phrase_0, phrase_1, ...]``. A sample without
phrases has the whole-image region only.

**Box positions** (LXMERT's ``visual_pos``, 4-d): ``(x0/W, y0/H, x1/W, y1/H)``
with the box clipped to the image. VisualBERT takes no positions (only
``visual_embeds``, token type 1).

**Extractors** follow :class:`RegionFeatureExtractor`: ``extractor(image,
boxes) -> (R, feat_dim)``. Two are built in:

* :class:`PooledColourFeatures` (the default; no download): each box's pixels
  averaged over a fixed ``grid x grid`` layout of cells (mean RGB per cell, in
  [0, 1]), plus the box geometry, centred and mapped to ``feat_dim`` by a fixed
  seeded Gaussian projection. It makes the architectures *runnable* offline and
  keeps what a box shows (colour layout, place, size) linearly recoverable; it is
  **not** what the published checkpoints were trained on (they expect Faster
  R-CNN features), so a pretrained LXMERT/VisualBERT fed these features is out of
  distribution. Use precomputed detector features for faithful runs.
* :class:`NpzRegionFeatures`: precomputed features from a ``.npz`` or
  ``.safetensors`` file, one ``(R, D)`` array per sample, keyed by the sample's
  ``uid``, rows in the sample's region order above (see ``docs/region-models.md``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Protocol, Sequence, Union, runtime_checkable

import numpy as np
import torch
from safetensors import safe_open

from mmdiag.data.types import Sample
from mmdiag.errors import DataError, SpecError
from mmdiag.models import offline
from mmdiag.models.base import (GROUP_IMAGE, GROUP_PAD, GROUP_SPECIAL, GROUP_TEXT, ModelAdapter, ModelInfo,
                                PhraseMasks, count_params)
from mmdiag.models.dual import tokenize_captions
from mmdiag.models.regions import phrase_query_mask, place_key_masks
from mmdiag.models.weights import fingerprint, fresh_model

Box = tuple[float, float, float, float]

__all__ = [
    "Box",
    "RegionFeatureExtractor",
    "PooledColourFeatures",
    "NpzRegionFeatures",
    "sample_boxes",
    "normalized_boxes",
    "box_pixels",
    "extract_regions",
    "RegionInputs",
    "region_inputs",
    "region_token_masks",
]


@runtime_checkable
class RegionFeatureExtractor(Protocol):
    """Maps an image and ``R`` pixel boxes ``(x0, y0, x1, y1)`` to an ``(R, feat_dim)`` float tensor.

    ``feat_dim`` is the feature size (2048 for the published LXMERT/VisualBERT
    checkpoints), or ``None`` when only known after reading the first sample.
    An extractor that looks features up by sample (not by pixels) may also
    define ``for_sample(sample, boxes)``; :func:`extract_regions` prefers it.
    """

    feat_dim: Optional[int]

    def __call__(self, image: Any, boxes: list[Box]) -> torch.Tensor:
        ...


def masked_token_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over tokens where ``mask`` is True: ``(B, T, D), (B, T) -> (B, D)`` (0 for empty rows)."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1)


def sample_boxes(sample: Sample) -> list[Box]:
    """The sample's regions: ``[whole image] + [phrase boxes in order]`` in image pixels."""
    width, height = sample.image.size
    return [(0.0, 0.0, float(width), float(height))] + [tuple(map(float, p.box)) for p in sample.phrases]


def normalized_boxes(boxes: Sequence[Box], image_wh: tuple[int, int]) -> torch.Tensor:
    """``(R, 4)`` float32 ``(x0/W, y0/H, x1/W, y1/H)``, clipped to ``[0, 1]`` (LXMERT's ``visual_pos``)."""
    width, height = image_wh
    if not boxes:
        return torch.zeros((0, 4), dtype=torch.float32)
    arr = torch.tensor([list(b) for b in boxes], dtype=torch.float64)
    scale = torch.tensor([width, height, width, height], dtype=torch.float64)
    return (arr / scale).clamp(0.0, 1.0).float()


def box_pixels(box: Box, image_wh: tuple[int, int]) -> tuple[int, int, int, int]:
    """Integer pixel bounds ``(left, top, right, bottom)`` covering the box: floor/ceil,
    clipped to the image, at least one pixel wide and high."""
    width, height = image_wh
    x0, y0, x1, y1 = box
    left = min(max(int(np.floor(min(x0, x1))), 0), width - 1)
    top = min(max(int(np.floor(min(y0, y1))), 0), height - 1)
    right = min(max(int(np.ceil(max(x0, x1))), left + 1), width)
    bottom = min(max(int(np.ceil(max(y0, y1))), top + 1), height)
    return left, top, right, bottom


class PooledColourFeatures:
    """The default region features: pooled box colours + geometry, randomly projected.

    For a box ``b`` of an ``W x H`` RGB image (pixel values / 255):

    1. ``cells``: the box's pixels (integer bounds from :func:`box_pixels`)
       average-pooled to ``grid x grid`` cells with
       :func:`torch.nn.functional.adaptive_avg_pool2d` (cell ``(i, j)`` covers rows
       ``floor(i h / g) .. ceil((i + 1) h / g)`` of the crop; equal cells when the
       crop divides evenly), flattened channel-major: ``3 * grid^2`` values;
    2. ``geometry``: ``(x0/W, y0/H, x1/W, y1/H, area/(W H))`` of the clipped box;
    3. ``raw = concat(cells, geometry) - 0.5`` (``raw_dim = 3 grid^2 + 5``);
    4. ``feature = raw @ P`` with ``P ~ N(0, 1/raw_dim)`` of shape
       ``(raw_dim, feat_dim)``, drawn once from ``torch.Generator`` seeded with
       ``seed`` (independent of the model's seed, so a random-init control sees
       the same features).

    ``P`` has full column rank ``raw_dim`` (for ``feat_dim >= raw_dim``), so the
    projection loses nothing: a linear probe can recover every raw value.
    """

    def __init__(self, feat_dim: int = 2048, grid: int = 4, seed: int = 0) -> None:
        if int(feat_dim) < 1 or int(grid) < 1:
            raise ValueError("feat_dim and grid must be >= 1")
        self.feat_dim = int(feat_dim)
        self.grid = int(grid)
        self.seed = int(seed)
        self.raw_dim = 3 * self.grid * self.grid + 5
        gen = torch.Generator().manual_seed(self.seed)
        self.projection = torch.randn(self.raw_dim, self.feat_dim, generator=gen,
                                      dtype=torch.float64) / np.sqrt(self.raw_dim)

    def __repr__(self) -> str:
        return f"PooledColourFeatures(feat_dim={self.feat_dim}, grid={self.grid}, seed={self.seed})"

    def raw(self, image: Any, boxes: Sequence[Box]) -> torch.Tensor:
        """``(R, raw_dim)`` float64: the pooled colours and geometry before centring and projection."""
        rgb = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0  # (H, W, 3)
        height, width = rgb.shape[:2]
        pixels = torch.from_numpy(rgb).permute(2, 0, 1)  # (3, H, W)
        rows = []
        for box in boxes:
            left, top, right, bottom = box_pixels(box, (width, height))
            crop = pixels[:, top:bottom, left:right].unsqueeze(0)
            cells = torch.nn.functional.adaptive_avg_pool2d(crop, self.grid).reshape(-1)
            nb = normalized_boxes([box], (width, height))[0].double()
            area = (nb[2] - nb[0]).clamp_min(0) * (nb[3] - nb[1]).clamp_min(0)
            rows.append(torch.cat([cells, nb, area.reshape(1)]))
        if not rows:
            return torch.zeros((0, self.raw_dim), dtype=torch.float64)
        return torch.stack(rows)

    def __call__(self, image: Any, boxes: Sequence[Box]) -> torch.Tensor:
        return ((self.raw(image, boxes) - 0.5) @ self.projection).float()


class NpzRegionFeatures:
    """Precomputed region features from a ``.npz`` or ``.safetensors`` file.

    Format: one 2-d float array per sample, stored under the sample's ``uid``,
    of shape ``(R, D)`` with ``R = 1 + len(sample.phrases)`` rows in the sample's
    region order (row 0 the whole image, row ``k + 1`` phrase ``k``'s box) and
    ``D`` the model's visual feature size (2048 for the published checkpoints).
    Write it e.g. with ``np.savez(path, **{uid: feats})`` or
    ``safetensors.numpy.save_file({uid: feats}, path)``. Box positions are not
    read from the file: they come from the samples' boxes.

    Every problem (missing file, missing key, wrong shape, non-finite values) is a
    :class:`~mmdiag.errors.DataError` naming the file and the key.
    """

    def __init__(self, path: Union[str, Path], feat_dim: Optional[int] = None) -> None:
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise DataError("region-feature file not found (expected a .npz or .safetensors file)", path=self.path)
        suffix = self.path.suffix.lower()
        try:
            if suffix == ".npz":
                self._store: Any = np.load(self.path, allow_pickle=False)
                self._keys = set(self._store.files)
            elif suffix == ".safetensors":
                self._store = safe_open(str(self.path), framework="np")
                self._keys = set(self._store.keys())
            else:
                raise DataError(f"unsupported region-feature file type {suffix!r} (accepted: .npz, .safetensors)",
                                path=self.path)
        except DataError:
            raise
        except Exception as exc:  # a corrupt/unreadable archive
            raise DataError(f"cannot read region features ({type(exc).__name__}: {exc})", path=self.path) from None
        self.feat_dim = None if feat_dim is None else int(feat_dim)

    def __repr__(self) -> str:
        return f"NpzRegionFeatures({str(self.path)!r}, feat_dim={self.feat_dim})"

    def _array(self, uid: str) -> np.ndarray:
        if uid not in self._keys:
            example = ", ".join(repr(k) for k in sorted(self._keys)[:3]) or "none"
            raise DataError(f"no region features for sample {uid!r} (keys must be sample uids; "
                            f"the file has {len(self._keys)} keys, e.g. {example})", path=self.path)
        try:
            if not hasattr(self._store, "get_tensor"):  # an NpzFile (allow_pickle=False: no object arrays)
                arr = self._store[uid]
            else:
                arr = self._store.get_tensor(uid)
        except Exception as exc:  # an object array, a pickle, a truncated or corrupt member
            reason = str(exc).splitlines()[0][:200] if str(exc) else ""
            raise DataError(f"key {uid!r}: cannot read its region features ({type(exc).__name__}"
                            f"{': ' + reason if reason else ''})", path=self.path) from None
        if not isinstance(arr, np.ndarray):  # an npz member that is not a .npy array (e.g. a pickle)
            raise DataError(f"key {uid!r}: not a numeric array (a {type(arr).__name__} member; write the file "
                            "with np.savez)", path=self.path)
        return arr

    def for_sample(self, sample: Sample, boxes: Sequence[Box]) -> torch.Tensor:
        """The ``(R, D)`` features of ``sample``; ``boxes`` only fixes the expected ``R``."""
        arr = self._array(sample.uid)
        where = f"key {sample.uid!r}"
        if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
            raise DataError(f"{where}: expected a numeric array, got dtype {arr.dtype}", path=self.path)
        if arr.ndim != 2:
            raise DataError(f"{where}: expected a 2-d (regions, features) array, got shape {tuple(arr.shape)}",
                            path=self.path)
        if arr.shape[0] != len(boxes):
            raise DataError(f"{where}: {arr.shape[0]} rows but the sample has {len(boxes)} regions "
                            f"(row 0 = whole image, then its {len(boxes) - 1} phrase boxes in order)",
                            path=self.path)
        if self.feat_dim is not None and arr.shape[1] != self.feat_dim:
            raise DataError(f"{where}: features have {arr.shape[1]} dims, the model expects {self.feat_dim}",
                            path=self.path)
        if not np.isfinite(arr).all():
            raise DataError(f"{where}: non-finite values in the features", path=self.path)
        with np.errstate(over="ignore"):
            out = np.ascontiguousarray(arr, dtype=np.float32)
        if not np.isfinite(out).all():  # finite float64 past float32's range
            raise DataError(f"{where}: values beyond float32's range (|x| > 3.4e38) in the features", path=self.path)
        return torch.from_numpy(out)

    def __call__(self, image: Any, boxes: Sequence[Box], uid: Optional[str] = None) -> torch.Tensor:
        if uid is None:
            raise TypeError("NpzRegionFeatures looks features up by sample uid: call for_sample(sample, boxes) "
                            "or pass uid=")
        return self.for_sample(Sample(uid=uid, image=image, caption=""), boxes)


def extract_regions(extractor: Any, sample: Sample, boxes: Sequence[Box],
                    feat_dim: Optional[int] = None) -> torch.Tensor:
    """Run ``extractor`` on one sample (``for_sample`` when it has one) and check the result's shape.

    Raises :class:`~mmdiag.errors.DataError` (naming the sample) when the output is
    not ``(len(boxes), feat_dim)``.
    """
    if hasattr(extractor, "for_sample"):
        feats = extractor.for_sample(sample, boxes)
    else:
        feats = extractor(sample.image, list(boxes))
    feats = torch.as_tensor(feats)
    expected = (len(boxes), feat_dim if feat_dim is not None else (feats.shape[-1] if feats.ndim else -1))
    if feats.ndim != 2 or tuple(feats.shape) != expected:
        raise DataError(f"region-feature extractor {extractor!r} returned shape {tuple(feats.shape)} for sample "
                        f"{sample.uid!r}; expected {expected} (regions, features)")
    return feats.float()


class RegionInputs:
    """A batch of region inputs, padded to the batch's largest region count ``R``.

    ``feats`` ``(B, R, D)`` float32, ``pos`` ``(B, R, 4)`` normalised boxes,
    ``mask`` ``(B, R)`` bool (True for real regions), ``counts`` the regions per
    sample (``1 + n_phrases``), ``boxes`` the pixel boxes per sample and
    ``image_wh`` each image's ``(W, H)``. Padding rows are zeros.
    """

    def __init__(self, feats: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor, counts: list[int],
                 boxes: list[list[Box]], image_wh: list[tuple[int, int]]) -> None:
        self.feats, self.pos, self.mask = feats, pos, mask
        self.counts, self.boxes, self.image_wh = counts, boxes, image_wh


def region_inputs(samples: Sequence[Sample], extractor: Any, feat_dim: Optional[int]) -> RegionInputs:
    """Regions (:func:`sample_boxes`) of every sample, their features and boxes, padded into one batch."""
    feats, pos, boxes_all, sizes = [], [], [], []
    for s in samples:
        if s.image is None or not hasattr(s.image, "size"):
            raise ValueError(f"sample {s.uid!r} has no image: region models need one for every sample")
        boxes = sample_boxes(s)
        feats.append(extract_regions(extractor, s, boxes, feat_dim))
        pos.append(normalized_boxes(boxes, s.image.size))
        boxes_all.append(boxes)
        sizes.append(tuple(s.image.size))
    width = max(f.shape[0] for f in feats)
    dim = feats[0].shape[1]
    if any(f.shape[1] != dim for f in feats):
        raise DataError(f"region features of one batch differ in size: {sorted({f.shape[1] for f in feats})}")
    out_f = torch.zeros((len(feats), width, dim), dtype=torch.float32)
    out_p = torch.zeros((len(feats), width, 4), dtype=torch.float32)
    mask = torch.zeros((len(feats), width), dtype=torch.bool)
    for b, (f, p) in enumerate(zip(feats, pos)):
        out_f[b, :f.shape[0]] = f
        out_p[b, :p.shape[0]] = p
        mask[b, :f.shape[0]] = True
    return RegionInputs(out_f, out_p, mask, [f.shape[0] for f in feats], boxes_all, sizes)


def region_token_masks(counts: Sequence[int]) -> list[Optional[torch.Tensor]]:
    """Per sample, the ``(P, P)`` identity over its phrase-region tokens (None without phrases).

    For region models the image tokens *are* the scene-tree nodes: token 0 the
    whole image (the pooled state, the tree's root), token ``k + 1`` phrase ``k``.
    With ``patch_offset = 1`` these masks make :func:`mmdiag.models.regions.region_states`
    return exactly ``[token 0, token 1, ..., token P]``.
    """
    return [None if c <= 1 else torch.eye(c - 1, dtype=torch.bool) for c in counts]


class RegionModelAdapter(ModelAdapter):
    """Machinery shared by the region-model adapters (:mod:`mmdiag.models.lxmert`,
    :mod:`mmdiag.models.visualbert`): tokenising, region inputs, token groups and
    the phrase masks that :mod:`mmdiag.metrics.grounding` reads.

    Subclasses set ``family``, implement :meth:`visual_feat_dim`,
    :meth:`layer_counts` and :meth:`forward`. Image tokens are the regions of
    :func:`sample_boxes` (whole image first); ``patch_grid`` stays None and
    ``patch_offset`` is 1 so that :meth:`region_masks` plus
    :meth:`mmdiag.record.Recorder.add_regions` give the scene-tree node states.
    """

    family = "region"
    modalities = ("image", "text")

    def __init__(self, model: torch.nn.Module, tokenizer: Any, info: Any, device: torch.device,
                 dtype: torch.dtype, extractor: Optional[Any] = None) -> None:
        super().__init__(model, tokenizer, info, device, dtype)
        dim = self.visual_feat_dim()
        self.extractor = extractor if extractor is not None else PooledColourFeatures(dim)
        got = getattr(self.extractor, "feat_dim", None)
        if got is not None and int(got) != dim:
            raise SpecError(f"region-feature extractor {self.extractor!r} gives {got}-d features but the "
                            f"{self.family} model expects {dim}-d (config visual feature size)")

    def visual_feat_dim(self) -> int:
        raise NotImplementedError

    def max_text_length(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 512))

    def prepare(self, samples: Sequence[Sample]) -> dict[str, Any]:
        """``[CLS] words [SEP]`` (longest padding) and the samples' region inputs."""
        tok = self.tokenizer
        text = tokenize_captions(tok, samples, self.max_text_length(), bos_id=tok.cls_token_id,
                                 eos_id=tok.sep_token_id, pad_id=tok.pad_token_id or 0)
        self.truncated_captions += text.truncated
        regions = region_inputs(samples, self.extractor, self.visual_feat_dim())
        spans = [[(p.start, p.end) for p in s.phrases] for s in samples]
        return {"text": text, "regions": regions, "spans": spans}

    @staticmethod
    def text_groups(text_mask: torch.Tensor, word_ids: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` groups of the text tokens: words TEXT, [CLS]/[SEP] SPECIAL, padding PAD."""
        groups = torch.full(text_mask.shape, GROUP_SPECIAL, dtype=torch.long, device=text_mask.device)
        groups[word_ids >= 0] = GROUP_TEXT
        groups[~text_mask] = GROUP_PAD
        return groups

    @staticmethod
    def image_groups(region_mask: torch.Tensor) -> torch.Tensor:
        """``(B, R)`` groups of the region tokens: every real region IMAGE (the whole-image
        region is a box feature like the others, not a special token), padding PAD."""
        groups = torch.full(region_mask.shape, GROUP_IMAGE, dtype=torch.long, device=region_mask.device)
        groups[~region_mask] = GROUP_PAD
        return groups

    @staticmethod
    def phrase_masks(batch: dict[str, Any], n_text: int, device: torch.device) -> PhraseMasks:
        """:class:`~mmdiag.models.base.PhraseMasks` over the layout ``[text tokens | region tokens]``:
        phrase ``k``'s queries are its words' tokens, its key is its own region token ``n_text + 1 + k``,
        and the image keys are all real region tokens."""
        regions: RegionInputs = batch["regions"]
        spans = batch["spans"]
        n_regions = regions.mask.shape[1]
        total = n_text + n_regions
        n_phrases = max((len(s) for s in spans), default=0)
        queries = phrase_query_mask(batch["text"].word_ids, spans, offset=0, total=total, n_phrases=n_phrases)
        own = [torch.eye(len(s), dtype=torch.bool) if s else None for s in spans]
        keys = place_key_masks(own, offset=n_text + 1, total=total, n_phrases=n_phrases)
        image = torch.cat([torch.zeros((regions.mask.shape[0], n_text), dtype=torch.bool), regions.mask], dim=1)
        return PhraseMasks(queries.to(device), keys.to(device), image.to(device))

    def region_masks(self, samples: Sequence[Sample], trace: Any = None) -> list[Optional[torch.Tensor]]:
        """Scene-tree region masks for :meth:`mmdiag.record.Recorder.add_regions` (see :func:`region_token_masks`)."""
        return region_token_masks([1 + len(s.phrases) for s in samples])


def build_region_parts(model_class: Any, preset: Any, seed: int) -> tuple[torch.nn.Module, Any, None]:
    """``(model, tokenizer, None)`` for a region-model preset: seeded random weights + offline BERT tokenizer."""
    config = preset.make_config()
    torch.manual_seed(seed)
    model = fresh_model(model_class, config)
    return model, offline.bert_tokenizer(config.vocab_size, config.max_position_embeddings), None


def build_region_adapter(adapter_class: Any, model_class: Any, presets: dict, model_type: str, preset_name: str,
                         seed: int, device: Any, dtype: torch.dtype, extractor: Optional[Any]) -> Any:
    """A ready adapter for ``random:<preset_name>`` of a region-model family."""
    preset = presets.get(preset_name)
    if preset is None:
        raise SpecError(f"unknown {adapter_class.family} preset {preset_name!r} (accepted: {', '.join(presets)})")
    model, tok, _ = build_region_parts(model_class, preset, seed)
    info = ModelInfo(spec=f"random:{preset_name}", family=adapter_class.family, n_params=count_params(model),
                     fingerprint=fingerprint(model),
                     extra={"weights": f"random weights (seed {seed}), architecture of {preset.source}",
                            "model_type": model_type})
    return adapter_class(model, tok, info, torch.device(device), dtype, extractor=extractor)

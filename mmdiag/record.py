"""Streaming reductions of per-batch traces into :class:`Activations`.

One forward pass feeds every check. Per batch, the recorder keeps only pooled
vectors (the model's pooled token and the mean of content tokens per layer),
final embeddings, and (when probes need them) word-level states, each a mean
of the word's sub-word token states. Full token states never outlive a batch.
Word and region states go to disk as they come (:mod:`mmdiag.recording.store`):
a whole treebank's states never sit in memory.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Optional, Sequence

import torch

from mmdiag.data.images import open_image
from mmdiag.data.types import Sample
from mmdiag.errors import DataError, SpecError
from mmdiag.models.attention_views import CrossMaps, GatheredMaps
from mmdiag.models.base import Trace, optional
from mmdiag.models.regions import preprocess_geometry, region_masks, stack_region_masks, stacked_region_states
from mmdiag.recording.attention import ShareAccumulator
from mmdiag.recording.grounding import GroundingAccumulator, update_from_trace
from mmdiag.recording.stats import AttentionStats, GroundingStats
from mmdiag.recording.store import LayerFiles


@dataclass
class Activations:
    """Pooled results of the whole run; tensors stay on the model's device.

    ``pooled[m][k]`` and ``mean_tokens[m][k]`` are ``(N, D)`` for hidden-state
    entry ``k`` of modality ``m``; ``embeds[m]`` is ``(N, P)``. ``word_states[k]``
    is ``(W, D)``: the words of all samples concatenated, ``word_counts[i]``
    words for sample ``i``; a CPU tensor backed by the layer's file in ``word_files``
    (a :class:`~mmdiag.recording.store.LayerFiles`, which the probes read from, a minibatch
    at a time). ``nonfinite[(m, k)]`` counts non-finite values seen.
    """

    n: int
    layer_counts: dict[str, int]
    pooled: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    mean_tokens: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    embeds: dict[str, torch.Tensor] = field(default_factory=dict)
    word_states: Optional[list[torch.Tensor]] = None
    word_counts: list[int] = field(default_factory=list)
    #: per layer ``(R, D)``: per sample [image root, phrase regions...] (scene-tree nodes), concatenated
    region_states: Optional[list[torch.Tensor]] = None
    region_counts: list[int] = field(default_factory=list)
    #: the files behind ``word_states`` / ``region_states`` (None for states held in memory, e.g. from the cache)
    word_files: Optional[LayerFiles] = None
    region_files: Optional[LayerFiles] = None
    logit_scale: Optional[float] = None
    nonfinite: dict[tuple[str, int], int] = field(default_factory=dict)
    forward_s: float = 0.0
    #: CPU seconds (user + system, every thread of the process) of the same pass (0 when read from the cache)
    forward_cpu_s: float = 0.0
    truncated_captions: int = 0
    #: the ids raw token ids (the noise control, ``--mm-data=noise``) were wrapped with, ``{"bos", "eos", "pad"}``
    #: (None when no sample had raw token ids); kept in the activation cache so that a cached pass still reports them
    special_ids: Optional[dict] = None
    #: the batch size the pass ended with (``--mm-batch-size=auto`` halves it on out-of-memory)
    batch_size: int = 0
    #: samples dropped by --mm-skip-bad-samples, as "uid: reason"
    skipped_samples: list[str] = field(default_factory=list)
    #: indices (into the samples given to record) of the samples that were recorded
    kept: list[int] = field(default_factory=list)
    #: per attention stream ("joint", or a tower "image"/"text"): ShareAccumulator.result()
    attention: dict[str, AttentionStats] = field(default_factory=dict)
    causal: dict[str, bool] = field(default_factory=dict)
    #: attention from caption words (or the CLS) to image patches for a few examples (report series)
    attention_image: Optional[dict] = None
    #: per attention stream: GroundingAccumulator.result() (share of a phrase's attention inside its own box)
    grounding: dict[str, GroundingStats] = field(default_factory=dict)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.pooled)


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the tokens where ``mask`` is True: ``(B, T, D), (B, T) -> (B, D)``."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    total = (hidden * weights).sum(dim=1)
    return total / weights.sum(dim=1).clamp_min(1)


def word_means(hidden: torch.Tensor, word_ids: torch.Tensor, n_words: Sequence[int]) -> torch.Tensor:
    """Mean of each word's sub-word token states, words of the batch concatenated: ``(sum n_words, D)``."""
    offsets = torch.tensor([0, *n_words[:-1]], device=hidden.device).cumsum(0)
    valid = word_ids >= 0
    index = (word_ids + offsets.unsqueeze(1))[valid]
    total = sum(n_words)
    sums = torch.zeros(total, hidden.shape[-1], device=hidden.device, dtype=torch.float32)
    sums.index_add_(0, index, hidden[valid].float())
    counts = torch.zeros(total, device=hidden.device, dtype=torch.float32)
    counts.index_add_(0, index, torch.ones_like(index, dtype=torch.float32))
    return sums / counts.clamp_min(1).unsqueeze(1)


class Recorder:
    """Accumulates traces batch by batch; :meth:`finish` returns the :class:`Activations`."""

    def __init__(self, layer_counts: dict[str, int], words: bool = False, pooled: bool = True) -> None:
        self.layer_counts = dict(layer_counts)
        self.words = words
        self.keep_pooled = pooled
        self._pooled: dict[str, list[list[torch.Tensor]]] = {}
        self._mean: dict[str, list[list[torch.Tensor]]] = {}
        self._embeds: dict[str, list[torch.Tensor]] = {}
        self._words: Optional[LayerFiles] = None
        self._word_counts: list[int] = []
        self._nonfinite: dict[tuple[str, int], torch.Tensor] = {}
        self.n = 0
        self.logit_scale: Optional[float] = None
        self._attention: dict[str, ShareAccumulator] = {}
        self._causal: dict[str, bool] = {}
        self._regions: Optional[LayerFiles] = None
        self._grounding: dict[str, GroundingAccumulator] = {}
        self._region_counts: list[int] = []

    def add(self, trace: Trace) -> None:
        """Reduce one batch's trace into pooled vectors."""
        batch_size = None
        for modality, states in trace.hidden.items():
            batch_size = states[0].shape[0] if states else batch_size
            if not self.keep_pooled:
                continue
            pooled = self._pooled.setdefault(modality, [[] for _ in states])
            means = self._mean.setdefault(modality, [[] for _ in states])
            index = trace.pool_index.get(modality)
            content = trace.content[modality]
            for k, h in enumerate(states):
                batch_size = h.shape[0]
                mean = masked_mean(h, content).float()
                pool = mean if index is None else h[torch.arange(h.shape[0], device=h.device), index].float()
                pooled[k].append(pool)
                means[k].append(mean)
                bad = (~torch.isfinite(pool)).sum() + (~torch.isfinite(mean)).sum()
                key = (modality, k)
                self._nonfinite[key] = self._nonfinite.get(key, 0) + bad
        for modality, emb in (trace.embeds.items() if self.keep_pooled else ()):
            self._embeds.setdefault(modality, []).append(emb.float())
        if self.words and trace.word_ids is not None and "text" in trace.hidden:
            n_words = (trace.word_ids.max(dim=1).values + 1).clamp_min(0).tolist()
            self._word_counts.extend(int(c) for c in n_words)
            states = trace.hidden["text"]
            if self._words is None:
                self._words = LayerFiles(len(states), states[0].device)
            self._words.append([word_means(h, trace.word_ids, n_words) for h in states])
        for name, stream in trace.attention.items():
            self._add_attention(name, stream.maps, stream.groups, stream.causal)
        if any(stream.grounding is not None for stream in trace.attention.values()):
            update_from_trace(self._grounding, trace)
        if trace.logit_scale is not None:
            self.logit_scale = trace.logit_scale
        self.n += batch_size or 0

    def add_regions(self, trace: Trace, masks: list) -> None:
        """Reduce one batch's image tokens to scene-tree node states (see :mod:`mmdiag.models.regions`)."""
        states = trace.hidden["image"]
        if self._regions is None:
            self._regions = LayerFiles(len(states), states[0].device)
        stacked = stack_region_masks(masks, states[0].device)
        if stacked is None:
            self._region_counts.extend([0] * len(masks))
            return
        index = trace.pool_index.get("image")
        per_layer = []
        for h in states:
            pooled = (masked_mean(h, trace.content["image"]) if index is None
                      else h[torch.arange(h.shape[0], device=h.device), index])
            per_layer.append(stacked_region_states(h, pooled, stacked, trace.patch_offset))
        self._regions.append(per_layer)
        self._region_counts.extend(stacked.counts)

    def _add_attention(self, stream: str, maps: Sequence[torch.Tensor], groups: torch.Tensor, causal: bool) -> None:
        """Reduce one batch of one stream's attention maps to per-layer, per-head sums."""
        if not maps:
            return
        acc = self._attention.get(stream)
        if acc is None:
            # a tower of one modality (a dual encoder's, LXMERT's single-modality streams) has no shares between
            # modalities, only entropies; "joint" and cross streams have both
            first = maps.rects[0] if isinstance(maps, CrossMaps) else \
                maps.raw[0] if isinstance(maps, GatheredMaps) else maps[0]
            acc = self._attention[stream] = ShareAccumulator(n_layers=len(maps), n_heads=first.shape[1],
                                                             shares=stream not in ("text", "image"))
        if isinstance(maps, CrossMaps):  # the rectangles, not the squares they stand for
            q = maps.n_queries
            for layer, rect in enumerate(maps.rects):
                acc.update_cross(layer, rect, groups[:, :q], groups[:, q:])
        elif isinstance(maps, GatheredMaps):  # the padded maps with the padding as PAD, or the gathered ones
            acc.update_layers(*maps.for_reduction(groups), causal=causal)
        else:
            acc.update_layers(maps, groups, causal=causal)
        self._causal[stream] = causal

    def merge(self, other: "Recorder") -> "Recorder":
        """Append ``other``'s batches after this recorder's (in place; torchrun's rank 0 merges the shards)."""
        for mine, theirs in ((self._pooled, other._pooled), (self._mean, other._mean)):
            for modality, layers in theirs.items():
                target = mine.setdefault(modality, [[] for _ in layers])
                for k, parts in enumerate(layers):
                    target[k].extend(parts)
        for modality, parts in other._embeds.items():
            self._embeds.setdefault(modality, []).extend(parts)
        self._words = _appended(_on_disk(self._words), other._words)
        self._regions = _appended(_on_disk(self._regions), other._regions)
        self._word_counts.extend(other._word_counts)
        self._region_counts.extend(other._region_counts)
        for key, bad in other._nonfinite.items():
            self._nonfinite[key] = self._nonfinite.get(key, 0) + bad
        for mine_acc, theirs_acc in ((self._attention, other._attention), (self._grounding, other._grounding)):
            for stream, acc in theirs_acc.items():
                if stream in mine_acc:
                    mine_acc[stream].merge(acc)
                else:
                    mine_acc[stream] = acc
        self._causal.update(other._causal)
        if self.logit_scale is None:
            self.logit_scale = other.logit_scale
        self.n += other.n
        return self

    def to(self, device: Any) -> "Recorder":
        """Move every kept tensor to ``device`` (in place); the accumulators' sums too."""
        def move(parts: list) -> list:
            return [p.to(device) if isinstance(p, torch.Tensor) else p for p in parts]

        for store in (self._pooled, self._mean):
            for modality, layers in store.items():
                store[modality] = [move(parts) for parts in layers]
        self._embeds = {m: move(parts) for m, parts in self._embeds.items()}
        # word/region states leave their (process-local) files for the trip to rank 0: one tensor per layer
        self._words = None if self._words is None else move(_layers_of(self._words))
        self._regions = None if self._regions is None else move(_layers_of(self._regions))
        self._nonfinite = {k: int(v) for k, v in self._nonfinite.items()}
        for acc in (*self._attention.values(), *self._grounding.values()):
            for name, value in list(vars(acc).items()):
                if isinstance(value, torch.Tensor):
                    setattr(acc, name, value.to(device))
        return self

    def finish(self) -> Activations:
        words = _on_disk(self._words).close() if self._words is not None else None
        regions = _on_disk(self._regions).close() if self._regions is not None else None
        return Activations(
            n=self.n,
            layer_counts=self.layer_counts,
            pooled={m: [torch.cat(parts) for parts in layers] for m, layers in self._pooled.items()},
            mean_tokens={m: [torch.cat(parts) for parts in layers] for m, layers in self._mean.items()},
            embeds={m: torch.cat(parts) for m, parts in self._embeds.items()},
            word_states=words.tensors() if words is not None else None,
            word_files=words, region_files=regions,
            word_counts=self._word_counts,
            logit_scale=self.logit_scale,
            nonfinite={k: int(v) for k, v in self._nonfinite.items()},
            attention={stream: acc.result() for stream, acc in self._attention.items()},
            grounding={stream: acc.result() for stream, acc in self._grounding.items()},
            region_states=regions.tensors() if regions is not None else None,
            region_counts=self._region_counts,
            causal=dict(self._causal),
        )


def _layers_of(states: Any) -> list[torch.Tensor]:
    """Per-layer ``(W, D)`` tensors of ``states`` (a :class:`LayerFiles` or such a list already), in memory."""
    if isinstance(states, LayerFiles):
        return [t.clone() for t in states.tensors()]
    return list(states)


def _on_disk(states: Any) -> Any:
    """``states`` as a :class:`LayerFiles` (a list of per-layer tensors, as merged shards arrive, is written out)."""
    if states is None or isinstance(states, LayerFiles):
        return states
    files = LayerFiles(len(states), states[0].device if states else None)
    if states and states[0].shape[0]:
        files.append(states)
    return files


def _appended(mine: Optional[LayerFiles], theirs: Any) -> Optional[LayerFiles]:
    """``mine`` with the rows of ``theirs`` appended (either may be None)."""
    if theirs is None:
        return mine
    layers = _layers_of(theirs)
    if mine is None:
        return _on_disk(layers)
    if layers and layers[0].shape[0]:
        mine.append(layers)
    return mine


#: first batch size tried by --mm-batch-size=auto
AUTO_START_CPU = 32
AUTO_START_CUDA = 256


def _on_cuda(adapter: Any) -> bool:
    return getattr(optional(adapter, "device"), "type", None) == "cuda"


def _is_oom(exc: BaseException) -> bool:
    """An out-of-memory error of the accelerator (or the CPU allocator)."""
    oom_type = getattr(torch.cuda, "OutOfMemoryError", ())
    return (oom_type and isinstance(exc, oom_type)) or "out of memory" in str(exc).lower()


def _forward(adapter: Any, loaded: list, hide: tuple) -> Trace:
    batch = adapter.prepare(loaded)
    if hide:
        batch["hide"] = tuple(hide)
    trace = adapter.forward(batch)
    check_layers(adapter, trace)
    return trace


def check_layers(adapter: Any, trace: Trace) -> None:
    """The trace must hold as many hidden-state entries per modality as ``layer_counts()`` promises."""
    expected = adapter.layer_counts()
    for modality, states in trace.hidden.items():
        if modality in expected and len(states) != expected[modality]:
            raise SpecError(f"the {getattr(adapter, 'family', type(adapter).__name__)} adapter's layer_counts() "
                            f"promises {expected[modality]} {modality} hidden-state entries but forward() returned "
                            f"{len(states)}; make them agree (entry 0 = embedding output, then one per block)")


def batches(samples: Sequence[Sample], size: int) -> Iterable[Sequence[Sample]]:
    for start in range(0, len(samples), size):
        yield samples[start:start + size]


def record(adapter: Any, samples: Sequence[Sample], batch_size: int, words: bool = False,
           attentions: bool = False, regions: bool = False, progress: Optional[Any] = None,
           skip_bad: bool = False, hide: tuple[str, ...] = (), examples: Optional[Any] = None,
           pooled: bool = True, combine: Optional[Any] = None) -> Activations:
    """Run ``adapter`` over ``samples`` once, reducing every batch as it comes.

    ``batch_size <= 0`` means auto: start large and halve on out-of-memory.
    ``attentions`` asks the adapter for attention maps (its ``output_attentions``),
    reduced per batch to modality shares and entropies. ``hide`` masks the
    given modalities out of a single-stream model's attention (adapters whose
    prepared batch is a dict honour a ``"hide"`` entry). ``pooled=False`` keeps no pooled vectors,
    means or embeddings (a treebank pass needs only word states: its memory stays flat in the sentences).
    ``combine(recorder, kept, skipped, batch_size)`` (torchrun, :func:`mmdiag.distributed.record_shard`)
    returns the recorder and bookkeeping to finish: rank 0's is every shard's.
    """
    if attentions or optional(adapter, "output_attentions"):  # switch it on, or back off
        try:
            adapter.output_attentions = attentions
        except AttributeError:
            pass
    recorder = Recorder(adapter.layer_counts(), words=words, pooled=pooled)
    truncated_before = int(optional(adapter, "truncated_captions"))
    start, cpu_start = time.perf_counter(), time.process_time()
    skipped: list[str] = []
    kept: list[int] = []
    auto = batch_size <= 0
    size = AUTO_START_CUDA if auto and _on_cuda(adapter) else (AUTO_START_CPU if auto else batch_size)
    first = 0
    while first < len(samples):
        chunk = samples[first:first + size]
        loaded, loaded_idx = [], []
        for offset, sample in enumerate(chunk):
            try:
                loaded.append(with_opened_image(sample, open_image))
                loaded_idx.append(first + offset)
            except DataError as exc:
                if not skip_bad:
                    raise
                skipped.append(f"{sample.uid}: {exc}")
        if loaded:
            truncated_so_far = optional(adapter, "truncated_captions")
            try:
                trace = _forward(adapter, loaded, hide)
            except Exception as exc:
                if not (auto and size > 1 and _is_oom(exc)):
                    raise
                if optional(adapter, "truncated_captions") != truncated_so_far:  # undo the failed batch's count
                    adapter.truncated_captions = truncated_so_far
                skipped = [s for s in skipped if not any(s.startswith(f"{c.uid}: ") for c in chunk)]
                size = max(1, size // 2)  # back off and retry the same samples
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            kept.extend(loaded_idx)
            recorder.add(trace)
            if examples is not None and trace.attention:
                examples.update(trace, loaded)
            if regions and optional(adapter, "region_masks") is not None and "image" in trace.hidden:
                recorder.add_regions(trace, adapter.region_masks(loaded, trace))
            elif regions and trace.patch_grid is not None and "image" in trace.hidden:
                geometry = preprocess_geometry(optional(adapter, "image_processor"))
                masks = region_masks(loaded, trace.patch_grid, trace.image_size or geometry[1], geometry)
                recorder.add_regions(trace, masks)
        if progress is not None:
            progress(len(chunk))
        first += len(chunk)
    batch_used = size
    if combine is not None:
        recorder, kept, skipped = combine(recorder, kept, skipped, size)
    acts = recorder.finish()
    if examples is not None:
        acts.attention_image = examples.result()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    acts.forward_s = time.perf_counter() - start
    acts.forward_cpu_s = time.process_time() - cpu_start
    acts.truncated_captions = int(optional(adapter, "truncated_captions")) - truncated_before
    if any(getattr(s, "token_ids", None) is not None for s in samples):
        found = getattr(adapter, "noise_special_ids", None)
        acts.special_ids = dict(found) if found is not None else None
    acts.skipped_samples = skipped
    acts.kept = kept
    acts.batch_size = batch_used
    if acts.n == 0:
        raise DataError(f"no usable sample: all {len(samples)} were skipped (first: {skipped[0] if skipped else '-'})")
    return acts


def with_opened_image(sample: Sample, opener: Any = open_image) -> Sample:
    """``sample`` with its image (a path or an image) opened by ``opener``; a sample without image as it is."""
    if sample.image is None:
        return sample
    return replace(sample, image=opener(sample.image))

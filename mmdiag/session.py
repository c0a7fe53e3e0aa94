"""The run's state: config, model, data, the one forward pass, and the results.

One :class:`MMSession` lives for the pytest session (``config.stash``); every
check reads the same :class:`~mmdiag.record.Activations` from it, so the model
runs once however many checks are collected.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

from mmdiag.distributed import World
from mmdiag.models.base import optional
from mmdiag.options import RunConfig
from mmdiag.record import Activations, record
from mmdiag.registry import CheckRegistry
from mmdiag.thresholds import Result, Thresholds


@dataclass
class MMSession:
    """Owns everything a run computes; checks talk to it through :class:`~mmdiag.api.CheckContext`."""

    config: RunConfig
    thresholds: Thresholds = field(init=False)
    results: list[Result] = field(default_factory=list)
    series: dict[str, Any] = field(default_factory=dict)
    adapter: Any = None
    samples: Optional[list] = None
    timings: dict[str, float] = field(default_factory=dict)
    started: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    _activations: dict[str, Activations] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict)
    _failed: dict[str, BaseException] = field(default_factory=dict)
    #: seconds spent in check bodies per family (forward pass excluded: it runs in fixture setup)
    family_seconds: dict[str, float] = field(default_factory=dict)
    #: the specs of the built-in and collected checks
    checks: CheckRegistry = field(default_factory=CheckRegistry)
    #: every collected check item, before deselection (threshold keys are validated against their params)
    collected_items: list = field(default_factory=list)
    #: set at the end when no check produced a value (the run then exits 4)
    empty_problem: Optional[str] = None
    #: on an xdist worker, the refusal that a serial run raises as a usage error (each check fails with it)
    gate_problem: Optional[str] = None
    #: called with the number of samples done after each batch (the plugin shows progress)
    progress: Any = None
    #: series keys already sent to the xdist controller
    series_shipped: set = field(default_factory=set)
    #: what the forward pass recorded (words, regions, attentions): part of the cache key; xdist workers ship it
    recorded_flags: Optional[dict] = None
    #: this process's place in a torchrun job (a single process by default)
    world: World = field(default_factory=World)

    def __repr__(self) -> str:
        return f"MMSession(model={self.config.model!r}, data={self.config.data!r}, results={len(self.results)})"

    def __post_init__(self) -> None:
        self.thresholds = Thresholds(self.config.threshold_layers, self._default_threshold)
        self._t0 = time.perf_counter()
        self.comparison = None
        if self.config.baseline is not None:
            from mmdiag.report.baseline import Comparison, load_baseline

            self.comparison = Comparison(load_baseline(self.config.baseline), self.config.compare_rules,
                                         self.checks.get)

    def _default_threshold(self, check: str) -> Any:
        spec = self.checks.get(check)
        return None if spec is None else spec.threshold

    @property
    def selected(self) -> Optional[set]:
        """Names of the selected checks (None until collection ends)."""
        return self.checks.selected

    # -- model and data -----------------------------------------------------
    def load_model(self) -> Any:
        """Load the ``--mm-model`` adapter once (SpecError on a bad spec)."""
        if self.adapter is None and self.config.model:
            from mmdiag.models.load import load_adapter

            start = time.perf_counter()
            self.adapter = load_adapter(self.config.model, self.world.device(self.config.device), self.config.dtype,
                                        self.config.seed, self.config.device_map)
            if self.config.region_features is not None:
                if optional(self.adapter, "extractor") is None:
                    from mmdiag.errors import SpecError

                    raise SpecError(f"--mm-region-features applies to region-feature models (LXMERT, VisualBERT); "
                                    f"{self.config.model} is a {self.adapter.family} model")
                from mmdiag.models.region_features import NpzRegionFeatures

                self.adapter.extractor = NpzRegionFeatures(self.config.region_features)
            self.timings["load_s"] = time.perf_counter() - start
        return self.adapter

    def layout(self) -> Optional[dict[str, int]]:
        """Hidden-state entries per modality of the model, when known at collection time."""
        return None if self.adapter is None else dict(self.adapter.layer_counts())

    def load_data(self, adapter: Any) -> list:
        """The run's samples (once); noise token ids avoid the model's special tokens."""
        if self.samples is None:
            from mmdiag.data.load import load_samples

            tok = optional(adapter, "tokenizer")
            vocab = len(tok) if tok is not None else 1000
            special = getattr(tok, "all_special_ids", []) if tok is not None else []
            self.samples = load_samples(self.config.data, self.config.samples, self.config.seed, vocab, special,
                                        allow_outside=self.config.allow_outside_data,
                                        scene_regions=self.config.scene_regions,
                                        punctuation=self.config.probe_punctuation,
                                        columns=self.config.data_columns)
        return self.samples

    def activations(self, adapter: Any) -> Activations:
        """The one forward pass over the data, shared by every check."""
        key = "model"
        if key in self._failed:
            raise self._failed[key]
        if key not in self._activations:
            try:
                self._record_model(adapter, key)
            except Exception as exc:  # every later check reports the same failure without re-running
                self._failed[key] = exc
                raise
        return self._activations[key]

    def cached_activations(self, adapter: Any) -> Optional[Activations]:
        """The model's activations if the cache holds them (never runs the model).

        Used by the xdist controller, which runs no check: the workers ship the
        recording flags of their forward pass (``recorded_flags``), which with
        the run's settings make the cache key.
        """
        if "model" in self._activations:
            return self._activations["model"]
        if self.recorded_flags is None:
            return None
        acts = self._cached(adapter, self.load_data(adapter), dict(self.recorded_flags), None)
        if acts is not None:
            self._activations["model"] = acts
        return acts

    def _record_model(self, adapter: Any, key: str) -> None:
        """Run the model over the data once (skipping unreadable samples when asked), or load it from the cache."""
        samples = self.load_data(adapter)
        flags = {"words": any(s.tree is not None for s in samples) and self.checks.needs("words"),
                 "regions": any(s.phrases for s in samples) and self.checks.needs("regions"),
                 "attentions": self.checks.needs("attentions")}
        self.recorded_flags = flags

        def compute() -> Activations:
            if self.progress is not None and hasattr(self.progress, "start"):
                self.progress.start(len(self.world.shard(len(samples))))
            examples = None
            if flags["attentions"]:
                from mmdiag.analyses.attention_maps import ExampleMaps

                examples = ExampleMaps.for_adapter(adapter, head=self.config.attention_head,
                                                   explore=self.config.explore)
            options = dict(skip_bad=self.config.skip_bad_samples, progress=self.progress, examples=examples, **flags)
            if self.world.sharded:
                from mmdiag.distributed import record_shard

                return record_shard(self.world, adapter, samples, self.config.batch_size, **options)
            return record(adapter, samples, self.config.batch_size, **options)

        acts = self._sharded_cached(adapter, samples, flags, compute) if self.world.sharded else \
            self._cached(adapter, samples, flags, compute)
        if acts.attention_image and acts.attention_image.get("examples"):
            self.series["attention_image"] = acts.attention_image
        if acts.skipped_samples:  # later analyses index samples in step with the activations
            self.samples = [samples[i] for i in acts.kept]
        self._activations[key] = acts
        self.timings["forward_s"] = acts.forward_s
        if acts.forward_cpu_s > 0:  # not from the cache
            self.timings["forward_cpu_s"] = acts.forward_cpu_s

    def _sharded_cached(self, adapter: Any, samples: list, flags: dict, compute: Any) -> Activations:
        """Under torchrun: rank 0 looks in the cache and tells the others whether to record their shards."""
        hit = self._cached(adapter, samples, flags, None) if self.world.reporter else None
        if self.world.broadcast(hit is not None):
            return hit
        acts = compute()
        if self.world.reporter:
            self._cached(adapter, samples, flags, lambda: acts)
        return acts

    def _cached(self, adapter: Any, samples: list, flags: dict, compute: Any) -> Activations:
        """``compute()`` through the activation cache when the model has a fingerprint."""
        fingerprint = getattr(optional(adapter, "info"), "fingerprint", None) or optional(adapter, "fingerprint")
        directory = self.config.cache_dir
        if directory is None or not fingerprint:
            return None if compute is None else compute()
        from mmdiag import __version__, cache
        from mmdiag.data.load import data_fingerprint

        device = optional(adapter, "device")
        key = cache.cache_key({"model": fingerprint, "data": data_fingerprint(samples), "spec": self.config.data,
                               "n": len(samples), "seed": self.config.seed, "batch": self.config.batch_size,
                               "dtype": self.config.dtype, "device": str(getattr(device, "type", device)),
                               "skip_bad": self.config.skip_bad_samples, "mmdiag": __version__,
                               "explore": self.config.explore, **flags})
        path = directory / f"{key}.safetensors"
        with cache.locked(directory, key):
            acts = cache.load(path, device)
            if acts is not None:
                self.timings["cache"] = "hit"
                return acts
            if compute is None:
                return None
            acts = compute()
            try:
                cache.save(acts, path)
                self.timings["cache"] = "miss (written)"
            except OSError as exc:
                self.timings["cache"] = f"miss (not written: {exc.strerror})"
            return acts

    def control(self, name: str, adapter: Any) -> Optional[Activations]:
        """Activations of a control run (Liang et al. 2022): ``random-init`` or ``noise``.

        ``random-init``: the same architecture with seeded random weights on the
        same inputs. ``noise``: the model itself on random pixels and token ids.
        Controls need a built-in adapter (one with a ``model``); otherwise None.
        """
        key = f"control:{name}"
        if key not in self._activations:
            if name == "random-init":
                from mmdiag.models.load import random_init_like

                control_adapter = random_init_like(adapter, self.config.seed + 1)
                samples = self.load_data(adapter)
            else:
                from mmdiag.data.noise import make_noise

                tok = optional(adapter, "tokenizer")
                control_adapter = adapter
                samples = make_noise(len(self.load_data(adapter)), self.config.seed, len(tok) if tok else 1000,
                                     getattr(tok, "all_special_ids", []) if tok else [])
            if control_adapter is None:
                return None
            start = time.perf_counter()
            structure = name == "random-init"
            if self.progress is not None and hasattr(self.progress, "start"):
                self.progress.start(len(samples), f"control {name}: forward pass")
            self._activations[key] = record(
                control_adapter, samples, self.config.batch_size, progress=self.progress,
                words=structure and self.checks.needs("words") and any(s.tree is not None for s in samples),
                regions=structure and self.checks.needs("regions") and any(s.phrases for s in samples),
                attentions=structure and self.checks.needs("attentions"))
            self.timings[f"control_{name}_s"] = time.perf_counter() - start
        return self._activations[key]

    def treebank_activations(self, adapter: Any) -> Optional[tuple[Activations, list]]:
        """Text-only pass over the ``--mm-treebank`` sentences (word states for the text probes)."""
        if self.config.treebank is None:
            return None
        key = "treebank"
        if key not in self._activations:
            from mmdiag.data.conllu import read_conllu
            from mmdiag.data.types import Sample

            # every sentence unless --mm-treebank-sentences caps them (--mm-samples sizes the image-text data only)
            trees = read_conllu(self.config.treebank, limit=self.config.treebank_sentences)
            samples = [Sample(uid=f"treebank-{i}", image=None, caption=" ".join(t.words), words=tuple(t.words),
                              tree=t) for i, t in enumerate(trees)]
            self._cache["treebank_samples"] = samples
            # word states only (on disk, read per minibatch by the probes): memory stays flat in the sentences
            if self.progress is not None and hasattr(self.progress, "start"):
                self.progress.start(len(samples), "treebank: forward pass", "sentences")
            self._activations[key] = record(adapter, samples, self.config.batch_size, words=True, pooled=False,
                                            progress=self.progress)
        return self._activations[key], self._cache["treebank_samples"]

    def without_image(self, adapter: Any) -> Activations:
        """Word states with the image masked out of a single-stream model's attention (Sub-RQ1.1)."""
        key = "without-image"
        if key not in self._activations:
            samples = self.load_data(adapter)
            self._activations[key] = record(adapter, samples, self.config.batch_size, words=True, hide=("image",),
                                            skip_bad=self.config.skip_bad_samples)
        return self._activations[key]

    def reference_adapter(self) -> Any:
        """The ``--mm-text-reference`` text encoder (loaded once)."""
        if "reference" not in self._cache:
            from mmdiag.models.load import load_adapter

            self._cache["reference"] = load_adapter(self.config.text_reference, self.config.device,
                                                    self.config.dtype, self.config.seed)
        return self._cache["reference"]

    def memo(self, key: str, compute: Any) -> Any:
        """Compute a value shared by several checks once (e.g. a probe fit used by two checks)."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    # -- results ------------------------------------------------------------
    def add(self, result: Result) -> None:
        self.results.append(result)

"""What a check function sees: the ``mm`` fixture's :class:`CheckContext`.

A check reads the run's shared activations (:attr:`CheckContext.acts`), computes
a value with a metric, and calls :meth:`CheckContext.report` (one value) or
:meth:`CheckContext.report_layers` (one value per layer). The check's
:class:`~mmdiag.checkspec.CheckSpec` threshold decides pass / warn / fail, the
result lands in the table, the JSON and the baseline comparison, and a ``fail``
fails the test. See ``docs/writing-checks.md``.
"""
from __future__ import annotations

import math
import sys
import warnings
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import pytest

from mmdiag.checkspec import CheckSpec
from mmdiag.errors import SpecError
from mmdiag.models.base import optional
from mmdiag.thresholds import Result, Threshold, judge
from mmdiag.uncertainty.bootstrap import BatchedStatistic, bootstrap
from mmdiag.uncertainty.interval import Interval
from mmdiag.uncertainty.regression import samples_to_decide


class MMDiagWarning(UserWarning):
    """A check breached a threshold whose level is ``warn``."""


def _finite(value: Optional[float]) -> bool:
    return value is not None and math.isfinite(float(value))


def _check_frame() -> Any:
    """The frame of the running test function: the one pytest's ``pytest_pyfunc_call`` called (else the first
    frame outside this module), so a warning names the check's file and line, not mmdiag's."""
    frame = sys._getframe(1)
    outside = None
    while frame is not None:
        caller = frame.f_back
        if outside is None and frame.f_code.co_filename != __file__:
            outside = frame
        if caller is not None and caller.f_code.co_name == "pytest_pyfunc_call" and \
                "_pytest" in caller.f_code.co_filename:
            return frame
        frame = caller
    return outside


def _warn_at_check(warning: Warning) -> None:
    frame = _check_frame()
    if frame is None:
        warnings.warn(warning, stacklevel=3)
        return
    warnings.warn_explicit(warning, type(warning), frame.f_code.co_filename, frame.f_lineno,
                           module=frame.f_globals.get("__name__"), module_globals=frame.f_globals)


class ReadOnlyConfig:
    """The run's options as a check sees them: readable, not writable."""

    def __init__(self, config: Any) -> None:
        object.__setattr__(self, "_config", config)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._config, name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"the run's config is read-only in a check (tried to set {name!r})")

    def __repr__(self) -> str:
        return f"ReadOnlyConfig({self._config!r})"


SeriesKey = Union[str, Sequence[str]]


class CheckContext:
    """The check's spec and params, the run's data, shared computations, and the way to report a value."""

    def __init__(self, session: Any, adapter: Any, check: Union[CheckSpec, str], params: dict,
                 nodeid: str) -> None:
        spec = check if isinstance(check, CheckSpec) else (session.checks.get(check) or CheckSpec(check))
        self._session = session
        self.adapter = adapter
        self.spec = spec
        self.check = spec.name
        self.params = params
        self.nodeid = nodeid
        self.reported = False

    # -- what the run recorded -------------------------------------------------------------------------------
    @property
    def acts(self):
        """The shared :class:`~mmdiag.record.Activations` (runs the one forward pass on first use)."""
        return self._session.activations(self.adapter)

    @property
    def samples(self) -> list:
        """The run's samples, in step with :attr:`acts`."""
        return self._session.load_data(self.adapter)

    @property
    def config(self) -> ReadOnlyConfig:
        """The run's options (``--mm-*``), read-only: ``mm.config.seed``, ``mm.config.data``, ..."""
        return ReadOnlyConfig(self._session.config)

    def controls(self) -> dict:
        """Activations of the controls asked for with ``--mm-controls`` (``random-init``, ``noise``) by name;
        a value is None when the model has no control of that kind."""
        return {name: self._session.control(name, self.adapter) for name in self._session.config.controls}

    def control(self, name: str) -> Any:
        """One control's activations, or None when it was not asked for with ``--mm-controls``."""
        if name not in self._session.config.controls:
            return None
        return self._session.control(name, self.adapter)

    def treebank(self) -> Optional[tuple[Any, list]]:
        """(activations with word states, samples) of the ``--mm-treebank`` sentences, or None without one."""
        return self._session.treebank_activations(self.adapter)

    def text_reference(self) -> Any:
        """The ``--mm-text-reference`` text encoder's adapter (loaded once); skips this check without one."""
        if not self._session.config.text_reference:
            self.skip(f"{self.check} needs a text-only reference encoder: pass --mm-text-reference=SPEC "
                      "(a BERT-style hub id, a save_pretrained dir, or random:bert-base-uncased)")
        return self._session.reference_adapter()

    def without_image(self) -> Any:
        """Word states with the image masked out of a single-stream model's attention (memoised)."""
        return self._session.without_image(self.adapter)

    def record(self, adapter: Any, samples: Sequence, words: bool = False) -> Any:
        """Run another adapter (e.g. :meth:`text_reference`) over ``samples``: its Activations."""
        from mmdiag.record import record

        return record(adapter, samples, self._session.config.batch_size, words=words)

    def adapter_member(self, name: str) -> Any:
        """An optional member of the model's adapter (e.g. ``joint_attention``), or the default the
        :class:`~mmdiag.Adapter` protocol declares for it."""
        return optional(self.adapter, name)

    def selected(self, check: str) -> bool:
        """Whether ``check`` is among this run's selected checks (to skip work no check will read)."""
        selected = self._session.checks.selected
        return selected is None or check in selected

    # -- shared computations and published series -----------------------------------------------------------
    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per run under ``key``, shared by every check that asks for the same key."""
        return self._session.memo(key, compute)

    def publish(self, key: SeriesKey, value: Any) -> Any:
        """Put ``value`` into results.json's ``series`` (for plots) at ``key`` or a path ``(key, sub, ...)``.

        The first part of the key must be one of the spec's declared ``series``.
        """
        path = (key,) if isinstance(key, str) else tuple(key)
        if path[0] not in self.spec.series:
            raise SpecError(f"{self.check} publishes series {path[0]!r} that its CheckSpec does not declare "
                            f"(series={self.spec.series!r}); add it to the spec's series")
        target = self._session.series
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value
        return value

    def published(self, key: SeriesKey) -> Any:
        """The value at ``key`` (or path) in ``series``, or None."""
        value: Any = self._session.series
        for part in (key,) if isinstance(key, str) else key:
            if not isinstance(value, Mapping) or part not in value:
                return None
            value = value[part]
        return value

    def add_timing(self, name: str, seconds: float) -> None:
        """Record a named duration in results.json's ``run.timings``."""
        self._session.timings[name] = float(seconds)

    # -- prerequisites: skip with what the user should supply ----------------------------------------------
    def require_modality(self, modality: str) -> None:
        """Skip unless the model has ``modality`` and the data has inputs of it."""
        if modality not in getattr(self.adapter, "modalities", ()):
            self.skip(f"{self.check} needs a {modality} tower; this {getattr(self.adapter, 'family', '')} model "
                      f"has {', '.join(getattr(self.adapter, 'modalities', ())) or 'none'}")
        if modality not in self.acts.pooled:
            self.skip(f"no {modality} inputs in --mm-data={self._session.config.data} "
                      f"({self.check} needs {modality} samples)")

    def require_embeddings(self, *modalities: str) -> list:
        """The final embeddings of ``modalities`` (and at least 2 samples), or skip naming what is missing."""
        embeds = self.acts.embeds
        missing = [m for m in modalities if m not in embeds]
        if missing:
            what = "embeddings of both modalities" if len(modalities) == 2 else f"{' and '.join(modalities)} embeddings"
            self.skip(f"{self.check} needs final {what}; missing: {', '.join(missing)} (use a dual-encoder model "
                      "such as CLIP or SigLIP with image-caption data)")
        self.require_n(2)
        return [embeds[m] for m in modalities]

    def require_n(self, minimum: int) -> None:
        """Skip with the minimum sample count when the run has fewer samples."""
        n = self.acts.n
        if n < minimum:
            self.skip(f"{self.check} needs at least {minimum} samples, the run has {n} (raise --mm-samples)")

    def require_pairs(self) -> None:
        """Skip unless the data pairs each image with its caption (``--mm-data=noise`` does not)."""
        if self._session.config.data == "noise":
            self.skip(f"{self.check} needs matched image-caption pairs; --mm-data=noise has none "
                      "(use synthetic, a captions JSONL or COCO captions)")

    def layers(self, modality: str, layer: Optional[int]) -> list[int]:
        """The layer of this parametrisation, or all layers when the layout was unknown at collection."""
        if layer is not None:
            return [layer]
        return list(range(len(self.acts.pooled[modality])))

    def threshold(self, check: Optional[str] = None, params: Optional[dict] = None) -> Optional[Threshold]:
        """The threshold in force for this check (or ``check``) and params."""
        return self._session.thresholds.lookup(check or self.check, self.params if params is None else params)

    def skip(self, reason: str) -> None:
        """Skip this check, saying what the user should supply to run it.

        The skip is reported at the check function (``-rs`` lists ``checks/test_mm_gap.py:12``), not here.
        """
        __tracebackhide__ = True
        self._add(Result(self.check, self.params, None, "skip", self.threshold(), {}, reason, self.nodeid))
        raise pytest.skip.Exception(reason, _use_item_location=True)

    # -- reporting -------------------------------------------------------------------------------------------
    def bootstrap(self, statistic: BatchedStatistic, expensive: bool = False,
                  params: Optional[dict] = None, biased: bool = False) -> Optional[Interval]:
        """The bootstrap interval and standard error of ``statistic`` over the run's samples.

        ``--mm-bootstrap`` resamples (0: None), seeded by ``--mm-seed``, on the statistic's device
        (:mod:`mmdiag.uncertainty` builds the statistics of the built-in metrics). An ``expensive``
        statistic (one SVD or more per resample) is only bootstrapped where a threshold or a baseline
        comparison will judge it, for these ``params`` (default: this check's). ``biased``: resampling
        shifts the statistic (rows repeated in a resample count as extra mass: spectra, pairwise and
        neighbour statistics), so the interval is the value ± z·se rather than the percentile interval,
        which can miss the value.
        """
        boot = self._session.config.bootstrap
        if boot <= 0 or statistic.n < 2:
            return None
        params = self.params if params is None else params
        if expensive and self.threshold(self.check, params) is None and not self._compared(params):
            return None
        found = bootstrap(statistic, statistic.n, boot, self._session.config.seed, device=statistic.device)
        return found.centred(statistic.point()) if biased and found is not None else found

    def _compared(self, params: dict) -> bool:
        comparison = self._session.comparison
        return comparison is not None and comparison.covers(self.check, params)

    def progress(self) -> Any:
        """The run's progress line for long work inside a check (probe fitting): call ``start(total, label,
        unit)``, then call it with the units just done; None when the run shows no progress."""
        return self._session.progress

    def report(self, value: Optional[float], details: Optional[dict] = None, message: str = "",
               interval: Optional[Interval] = None, note: str = "") -> Result:
        """Record this check's ``value`` (with its :meth:`bootstrap` ``interval``, if any); fail the test or
        warn when its threshold is breached (with ``--mm-gate=ci``: when the whole interval is past it).
        ``note``: a remark appended to the message (the breach's or ``message``)."""
        result = self._result(value, details, message, dict(self.params), interval)
        result.message = _with_note(result.message, note)
        self._conclude()
        return result

    def report_layers(self, layers: Iterable[int], value: Callable[[int], Optional[float]],
                      details: Optional[Callable[[int], dict]] = None,
                      interval: Optional[Callable[[int], Optional[Interval]]] = None,
                      note: str = "") -> list[Result]:
        """Record one value per layer (``params`` gain ``layer``), then fail if any of them failed.

        ``value(k)``, ``details(k)`` and ``interval(k)`` are called per layer ``k``; a skip raised in
        them keeps the layers reported before it. ``note``: a remark every layer's message carries
        (after a breach's own message), e.g. that the scores rest on few sentences.
        """
        results = []
        for k in layers:
            params = self.layer_params(k)
            found = value(k)
            result = self._result(found, details(k) if details else None, "", params,
                                  interval(k) if interval and _finite(found) else None)
            result.message = _with_note(result.message, note)
            results.append(result)
        self._conclude()
        return results

    def layer_params(self, k: int) -> dict:
        """This check's params for layer ``k`` (what :meth:`report_layers` records)."""
        return {**{p: v for p, v in self.params.items() if p != "layer"}, "layer": k}

    def _result(self, value: Optional[float], details: Optional[dict], message: str, params: dict,
                interval: Optional[Interval] = None) -> Result:
        threshold = self.threshold(self.check, params)
        value = None if value is None else float(value)
        use_interval = interval is not None and interval.defined and self._session.config.gate == "ci"
        status, inconclusive = judge(value, threshold, interval.low if use_interval else None,
                                     interval.high if use_interval else None)
        if value is not None and not math.isfinite(value):
            message = message or (f"{self.check} is not finite ({value}); non-finite activations at: "
                                  f"{self._nonfinite_layers()}. The model overflowed or is degenerate: try "
                                  "--mm-dtype=fp32 (or bf16 instead of fp16)")
        elif inconclusive:
            # the samples that would decide it, where the interval is over samples (a probe's is over sentences)
            needed = (samples_to_decide(value, interval.se, self.acts.n, threshold.value)
                      if self.spec.uncertainty == "samples" else None)
            decide = f"; about {needed} samples would decide it (the run has {self.acts.n})" if needed else ""
            message = message or (f"inconclusive: {self.check}={value:.4g} breaches {threshold.describe()} but its "
                                  f"95% interval [{interval.low:.4g}, {interval.high:.4g}] straddles it{decide}")
        elif status in ("fail", "warn"):
            message = message or f"{self.check}={value:.4g} breaches {threshold.describe()}"
        result = Result(self.check, params, value, status, threshold, details or {}, message, self.nodeid)
        if interval is not None:
            result.ci, result.se = interval.to_json(), interval.se
        comparison = self._session.comparison
        if comparison is not None:
            result.baseline, regression = comparison.compare(self.check, params, value, threshold, result.se)
            if regression is not None:
                result.status = "fail"
                result.message = "; ".join(m for m in (result.message if status != "pass" else "", regression) if m)
        self._add(result)
        return result

    def _nonfinite_layers(self) -> str:
        recorded = self._session._activations.get("model")
        where = {k: v for k, v in (recorded.nonfinite.items() if recorded is not None else []) if v}
        return ", ".join(f"{m} L{k:02d}" for m, k in sorted(where)) if where else "none recorded"

    def _conclude(self) -> None:
        """Fail the test if a reported result failed; warn once for each warn-level breach."""
        mine = [r for r in self._session.results if r.nodeid == self.nodeid]
        for r in mine:
            if r.status == "warn" and not getattr(r, "_warned", False):
                r._warned = True  # type: ignore[attr-defined]
                _warn_at_check(MMDiagWarning(r.message))
        failed = [r for r in mine if r.status == "fail"]
        if failed:
            pytest.fail("; ".join(r.message for r in failed), pytrace=False)

    def _add(self, result: Result) -> None:
        self.reported = True
        self._session.add(result)


__all__ = ["CheckContext", "MMDiagWarning", "ReadOnlyConfig"]


def _with_note(message: str, note: str) -> str:
    """``message`` and ``note`` joined by "; " (either may be empty)."""
    return "; ".join(m for m in (message, note) if m)

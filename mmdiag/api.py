"""What a check function sees: the ``mm`` fixture's :class:`CheckContext`.

A check computes a value from the shared activations and calls
:meth:`CheckContext.report`; the threshold decides pass / warn / fail, the
result lands in the table and the JSON, and a ``fail`` fails the test.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Optional

import pytest

from mmdiag.thresholds import Result, evaluate


class MMDiagWarning(UserWarning):
    """A check breached a threshold whose level is ``warn``."""


class CheckContext:
    """The check's name and params, the run's data, and the way to report a value."""

    def __init__(self, session: Any, adapter: Any, check: str, params: dict, nodeid: str) -> None:
        self.session = session
        self.adapter = adapter
        self.check = check
        self.params = params
        self.nodeid = nodeid
        self.reported = False

    @property
    def acts(self):
        """The shared activations (runs the forward pass on first use)."""
        return self.session.activations(self.adapter)

    @property
    def samples(self) -> list:
        return self.session.load_data(self.adapter)

    def controls(self) -> dict:
        """Activations of the controls asked for with ``--mm-controls`` (random-init, noise)."""
        return {name: self.session.control(name, self.adapter) for name in self.session.config.controls}

    def require_modality(self, modality: str) -> None:
        """Skip unless the model has ``modality``."""
        if modality not in getattr(self.adapter, "modalities", ()):
            self.skip(f"{self.check} needs a {modality} tower; this {getattr(self.adapter, 'family', '')} model "
                      f"has {', '.join(getattr(self.adapter, 'modalities', ())) or 'none'}")
        if modality not in self.acts.pooled:
            self.skip(f"no {modality} inputs in --mm-data={self.session.config.data} "
                      f"({self.check} needs {modality} samples)")

    def require_n(self, minimum: int) -> None:
        """Skip with the minimum sample count when the run has fewer samples."""
        n = self.acts.n
        if n < minimum:
            self.skip(f"{self.check} needs at least {minimum} samples, the run has {n} (raise --mm-samples)")

    def layers(self, modality: str, layer: Optional[int]) -> list[int]:
        """The layer of this parametrisation, or all layers when the layout was unknown at collection."""
        if layer is not None:
            return [layer]
        return list(range(len(self.acts.pooled[modality])))

    def threshold(self, check: Optional[str] = None, params: Optional[dict] = None):
        return self.session.thresholds.lookup(check or self.check, self.params if params is None else params)

    def skip(self, reason: str) -> None:
        """Skip this check, saying what the user should supply to run it."""
        self._add(Result(self.check, self.params, None, "skip", self.threshold(), {}, reason, self.nodeid))
        pytest.skip(reason)

    def report(self, value: float, details: Optional[dict] = None, message: str = "",
               check: Optional[str] = None, params: Optional[dict] = None, final: bool = True) -> Result:
        """Record ``value`` for this check; fail or warn when the threshold is breached.

        A check that reports several results (e.g. one per layer when the layer
        count is only known at run time) passes ``params`` and ``final=False``
        for all but the last, then the test fails if any of them failed.
        """
        check = check or self.check
        params = dict(self.params if params is None else params)
        threshold = self.threshold(check, params)
        value = None if value is None else float(value)
        status = evaluate(value, threshold)
        if value is not None and not math.isfinite(value):
            recorded = self.session._activations.get("model")
            where = {k: v for k, v in (recorded.nonfinite.items() if recorded is not None else []) if v}
            located = ", ".join(f"{m} L{k:02d}" for m, k in sorted(where)) if where else "none recorded"
            message = message or (f"{check} is not finite ({value}); non-finite activations at: {located}. The "
                                  "model overflowed or is degenerate: try --mm-dtype=fp32 (or bf16 instead of fp16)")
        elif status in ("fail", "warn"):
            message = message or f"{check}={value:.4g} breaches {threshold.describe()}"
        result = Result(check, params, value, status, threshold, details or {}, message, self.nodeid)
        comparison = self.session.comparison
        if comparison is not None:
            result.baseline, regression = comparison.compare(check, params, value, threshold)
            if regression is not None:
                result.status = "fail"
                result.message = "; ".join(m for m in (result.message if status != "pass" else "", regression) if m)
        self._add(result)
        if final:
            self.finish()
        return result

    def finish(self) -> None:
        """Fail the test if a reported result failed; warn for warn-level breaches."""
        mine = [r for r in self.session.results if r.nodeid == self.nodeid]
        failed = [r for r in mine if r.status == "fail"]
        for r in mine:
            if r.status == "warn" and not getattr(r, "_warned", False):
                r._warned = True  # type: ignore[attr-defined]
                warnings.warn(MMDiagWarning(r.message))
        if failed:
            pytest.fail("; ".join(r.message for r in failed), pytrace=False)

    def _add(self, result: Result) -> None:
        self.reported = True
        self.session.add(result)

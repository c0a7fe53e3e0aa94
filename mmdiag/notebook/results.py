"""What :func:`mmdiag.diagnose` returns: the run's results.json and report, in memory.

One :class:`Row` per result (the check, its params, value, interval and status); ``to_pandas()``
gives them as a DataFrame (pandas is optional), ``to_records()`` as plain dicts, ``_repr_html_``
shows the HTML report inline in a notebook, ``save(dir)`` writes results.json and report.html.
"""
from __future__ import annotations

import html
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from mmdiag.atomic import atomic_write_text
from mmdiag.errors import SpecError
from mmdiag.report.verdict import Verdict
from mmdiag.thresholds import param_id

#: the DataFrame's columns, in order (``params`` as the pytest-style id, e.g. ``image-L03``)
COLUMNS = ("check", "params", "modality", "layer", "value", "ci_low", "ci_high", "status", "threshold",
           "message")


def _number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _describe(threshold: Optional[dict]) -> str:
    if not threshold:
        return ""
    return f"{threshold.get('op')} {threshold.get('value'):.4g} ({threshold.get('level')})" \
        if isinstance(threshold.get("value"), (int, float)) else str(threshold)


@dataclass(frozen=True)
class Row:
    """One result of the run (one check at one parametrisation)."""

    check: str
    params: dict
    value: Optional[float]
    status: str
    ci_low: Optional[float] = None
    ci_high: Optional[float] = None
    threshold: str = ""
    message: str = ""

    @classmethod
    def from_json(cls, entry: dict) -> "Row":
        ci = entry.get("ci") or {}
        return cls(str(entry["check"]), dict(entry.get("params") or {}), _number(entry.get("value")),
                   str(entry.get("status")), _number(ci.get("low")), _number(ci.get("high")),
                   _describe(entry.get("threshold")), str(entry.get("message") or ""))

    @property
    def family(self) -> str:
        return self.check.split(".", 1)[0]


@dataclass
class Results:
    """A diagnose() run: the rows, the full results document, the report and the pytest log."""

    doc: dict
    report_html: str = ""
    markdown: str = ""
    #: what pytest printed (the per-check lines and mmdiag's summary table)
    log: str = ""
    #: pytest's exit code: 0 every check passed, 1 a check failed
    exit_code: int = 0
    rows: list[Row] = field(init=False)

    def __post_init__(self) -> None:
        self.rows = [Row.from_json(entry) for entry in self.doc.get("results", [])]

    # -- reading -----------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Row]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def verdict(self) -> Verdict:
        """Counts by status and the gate's outcome (``pass``, ``warn``, ``fail`` or ``empty``)."""
        return Verdict.of(self.rows)

    @property
    def passed(self) -> bool:
        """True when no check failed or errored (what ``pytest``'s exit code 0 means)."""
        return self.verdict.outcome in ("pass", "warn")

    def to_records(self) -> list[dict]:
        """One plain dict per result (``params`` as a dict): for use without pandas."""
        return [asdict(row) for row in self.rows]

    def to_pandas(self) -> Any:
        """A DataFrame with the columns of :data:`COLUMNS`: value/ci_low/ci_high float64 (NaN when absent),
        layer a nullable Int64, the others strings."""
        try:
            import pandas as pd
        except ImportError:
            raise SpecError("Results.to_pandas() needs pandas: pip install pandas (or use results.to_records(), "
                            "which needs nothing)") from None
        data: dict[str, list] = {name: [] for name in COLUMNS}
        for row in self.rows:
            layer = row.params.get("layer")
            values = {"check": row.check, "params": param_id(row.params), "modality": row.params.get("modality"),
                      "layer": layer if isinstance(layer, int) and not isinstance(layer, bool) else None,
                      "value": row.value, "ci_low": row.ci_low, "ci_high": row.ci_high, "status": row.status,
                      "threshold": row.threshold, "message": row.message}
            for name in COLUMNS:
                data[name].append(values[name])
        frame = pd.DataFrame(data, columns=list(COLUMNS))
        for name in ("value", "ci_low", "ci_high"):
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
        frame["layer"] = pd.array(data["layer"], dtype="Int64")
        for name in ("check", "params", "modality", "status", "threshold", "message"):
            frame[name] = frame[name].astype(object)
        return frame

    # -- showing and saving ------------------------------------------------------------------------------
    def __repr__(self) -> str:
        model = (self.doc.get("model") or {}).get("spec", "?")
        counts = ", ".join(f"{n} {status}" for status, n in self.verdict.ordered())
        return f"<mmdiag Results {model}: {self.verdict.sentence()} ({counts})>"

    def _repr_html_(self) -> str:
        """The HTML report inline (an iframe, so its styles and scripts stay its own)."""
        head = f"<p><b>mmdiag</b> · {html.escape(self.verdict.sentence())}</p>"
        if not self.report_html:
            return head + self._table_html()
        return (head + '<iframe style="width:100%;height:720px;border:1px solid #ccc" sandbox="allow-scripts" '
                f'srcdoc="{html.escape(self.report_html, quote=True)}"></iframe>')

    def _table_html(self) -> str:
        cells = "".join(
            f"<tr><td>{html.escape(r.check)}</td><td>{html.escape(param_id(r.params))}</td>"
            f"<td>{'' if r.value is None or not math.isfinite(r.value) else f'{r.value:.4g}'}</td>"
            f"<td>{html.escape(r.status)}</td></tr>" for r in self.rows)
        return f"<table><tr><th>check</th><th>params</th><th>value</th><th>status</th></tr>{cells}</table>"

    def save(self, directory: Union[str, Path]) -> Path:
        """Write ``DIR/results.json`` and ``DIR/report.html`` (the files the plugin's --mm-report-dir writes)."""
        out = Path(directory).expanduser()
        if out.exists() and not out.is_dir():
            raise SpecError(f"Results.save({str(directory)!r}): {out} is a file, not a directory")
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "results.json", json.dumps(self.doc, indent=1, allow_nan=False) + "\n")
        if self.report_html:
            atomic_write_text(out / "report.html", self.report_html)
        return out


__all__ = ["COLUMNS", "Results", "Row"]

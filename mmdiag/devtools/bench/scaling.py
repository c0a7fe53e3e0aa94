"""How a run's cost grows: ``--scaling`` (suite time and peak RSS against N) and ``--treebank-memory``.

``--scaling`` runs the suite (``--suite-only``, every family unless
``--families``) at each N of ``--scaling-n`` in a fresh process and fits the
exponent ``a`` of ``time ~ N^a`` by least squares on log-log axes, over all
points and over the last two (the local exponent, which a quadratic part
dominates first). Per family too, so a part that grows faster than linear
shows where it is.

``--treebank-memory`` writes a CoNLL-U file of N synthetic sentences
(:mod:`.treebank`) for each N of ``--treebank-n`` and runs the probe family
with ``--mm-treebank`` on it in a fresh process: the peak RSS should stay flat
as N grows (word states on disk, :mod:`mmdiag.recording.store`).
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from mmdiag.devtools.bench.config import BenchConfig
from mmdiag.devtools.bench.processes import child_run
from mmdiag.devtools.bench.treebank import write_synthetic_conllu

__all__ = ["exponent", "parse_sizes", "suite_scaling", "treebank_memory", "scaling_table", "treebank_table"]

SCALING_N = (256, 1024, 4096, 16384)
TREEBANK_N = (4000, 40000)


def parse_sizes(text: str) -> tuple[int, ...]:
    """``256,1k,4k,16k`` -> (256, 1024, 4096, 16384): ``k`` multiplies by 1,024 after a power of two (1k, 4k,
    16k as in N = 1,024 / 4,096 / 16,384), by 1,000 otherwise (``40k`` = 40,000)."""
    out = []
    for part in (p.strip().lower() for p in text.split(",") if p.strip()):
        if part.endswith("k"):
            base = int(part[:-1])
            out.append(base * (1024 if base & (base - 1) == 0 else 1000))
        else:
            out.append(int(part))
    if not out or any(n < 2 for n in out):
        raise ValueError(f"sizes must be integers >= 2 (e.g. 256,1k,4k), got {text!r}")
    return tuple(out)


def exponent(ns: Sequence[float], values: Sequence[float]) -> Optional[float]:
    """Least-squares slope of log(value) on log(n): ``a`` in ``value ~ n^a``; None with fewer than 2 points."""
    pts = [(math.log(n), math.log(v)) for n, v in zip(ns, values) if n > 0 and v is not None and v > 0]
    if len(pts) < 2:
        return None
    x, y = np.array(pts).T
    return float(np.polyfit(x, y, 1)[0])


def suite_scaling(cfg: BenchConfig, sizes: Sequence[int]) -> dict[str, Any]:
    """The suite at each size in a fresh process: per N its time, forward, per-family seconds and peak RSS."""
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="mmdiag-bench-") as tmp:
            fig = child_run(BenchConfig(**{**cfg.__dict__, "samples": n}), Path(tmp) / "fig.json", "--suite-only")
        rows.append({"n": n, "suite_s": fig["suite_s"], "mm_forward_s": fig.get("mm_forward_s"),
                     "checks_s": fig.get("checks_s", {}), "peak_rss_mb": fig["peak_rss_mb"],
                     "exit_code": fig["suite_exit_code"], "statuses": fig.get("statuses")})
    ns = [r["n"] for r in rows]
    families = sorted({f for r in rows for f in r["checks_s"]})
    return {"model": cfg.model, "rows": rows,
            "exponent": exponent(ns, [r["suite_s"] for r in rows]),
            "exponent_last": exponent(ns[-2:], [r["suite_s"] for r in rows[-2:]]),
            "family_exponents": {f: exponent(ns, [r["checks_s"].get(f) for r in rows]) for f in families},
            "rss_exponent": exponent(ns, [r["peak_rss_mb"] for r in rows])}


def treebank_memory(cfg: BenchConfig, sizes: Sequence[int]) -> list[dict[str, Any]]:
    """The probe family on a synthetic treebank of each size, each in a fresh process: peak RSS and time."""
    out = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="mmdiag-bench-") as tmp:
            tb = write_synthetic_conllu(Path(tmp) / "treebank.conllu", n, seed=cfg.seed)
            # the text probes only (depth and distance of every layer, fitted together), no bootstrap: what grows
            # with the treebank; the image probes see only the --samples synthetic scenes
            sub = BenchConfig(**{**cfg.__dict__, "families": ("probe",), "select": "files", "suite_args": (
                *cfg.suite_args, f"--mm-treebank={tb}", "--mm-bootstrap=0", "-k", "probe_depth and text")})
            fig = child_run(sub, Path(tmp) / "fig.json", "--suite-only")
        other = fig.get("other_timings", {})
        out.append({"sentences": n, "peak_rss_mb": fig["peak_rss_mb"],
                    "rss_after_collection_mb": fig.get("rss_after_collection_mb"), "suite_s": fig["suite_s"],
                    "probe_text_fit_s": other.get("probe_text_fit_s"), "exit_code": fig["suite_exit_code"]})
    return out


def _f(v: Any, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def scaling_table(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Rows (label, value, note) for :func:`~mmdiag.devtools.bench.report.print_table`."""
    rows = []
    for r in doc["rows"]:
        top = sorted(r["checks_s"].items(), key=lambda kv: -kv[1])[:3]
        rows.append((f"N={r['n']}", f"{r['suite_s']:.1f} s, peak {r['peak_rss_mb']:.0f} MB",
                     f"forward {_f(r['mm_forward_s'])} s; " + ", ".join(f"{k} {v:.1f} s" for k, v in top)))
    rows.append(("exponent (all N)", _f(doc["exponent"], 2), "time ~ N^a, least squares on log-log; target <= 1.1"))
    rows.append(("exponent (last two N)", _f(doc["exponent_last"], 2), "the local growth at the largest N"))
    rows.append(("peak RSS exponent", _f(doc["rss_exponent"], 2), "memory ~ N^a"))
    for fam, a in doc["family_exponents"].items():
        rows.append((f"  {fam}", _f(a, 2), "family seconds ~ N^a"))
    return rows


def treebank_table(found: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(f"{r['sentences']} sentences", f"peak {r['peak_rss_mb']:.0f} MB",
             f"suite {r['suite_s']:.1f} s, text probe fit {_f(r['probe_text_fit_s'])} s, after collection "
             f"{_f(r['rss_after_collection_mb'], 0)} MB") for r in found]

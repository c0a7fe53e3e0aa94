"""Trend figures: one check across several runs (releases), with each run's interval and the threshold.

A check measured once per group (modality, direction) is drawn with the runs on x, one line per group and
its 95% intervals as error bars; a per-layer check is drawn with the layers on x, one line per run.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Optional

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mmdiag.report.figures.style import color, label, style
from mmdiag.report.figures.svg import to_svg

__all__ = ["trend_runs_svg", "trend_layers_svg"]

_RUN_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def _id(check: str) -> str:
    return "trend-" + (re.sub(r"[^a-z0-9_-]+", "-", check.lower()).strip("-") or "check")


def _nan(v: Optional[float]) -> float:
    return math.nan if v is None else float(v)


def _threshold(ax, threshold: Optional[dict]) -> None:
    if threshold and isinstance(threshold.get("value"), (int, float)) and not isinstance(threshold["value"], bool):
        ax.axhline(float(threshold["value"]), color="#cf222e", ls="--", lw=1.2,
                   label=label(f"threshold {threshold.get('op', '')} {threshold['value']:.3g} "
                               f"({threshold.get('level', 'fail')})"))


def trend_runs_svg(check: str, title: str, runs: Sequence[str],
                   groups: dict[str, list[tuple[Optional[float], Optional[float], Optional[float]]]],
                   threshold: Optional[dict]) -> Optional[str]:
    """``groups``: name -> per run (value, low, high); runs on x, error bars for the intervals."""
    if not any(v is not None for rows in groups.values() for v, _, _ in rows):
        return None
    with style():
        fig = Figure(figsize=(max(4.2, 0.9 * len(runs) + 2.6), 2.7), layout="constrained")
        ax = fig.add_subplot()
        x = np.arange(len(runs), dtype=float)
        width = 0.12 * (len(groups) - 1)
        for i, (name, rows) in enumerate(groups.items()):
            off = x + (i * 0.12 - width / 2 if len(groups) > 1 else 0.0)
            y = np.array([_nan(v) for v, _, _ in rows])
            lo = np.array([_nan(lw) for _, lw, _ in rows])
            hi = np.array([_nan(h) for _, _, h in rows])
            err = np.vstack([np.where(np.isfinite(lo), y - lo, 0), np.where(np.isfinite(hi), hi - y, 0)])
            ax.errorbar(off, y, yerr=np.nan_to_num(err), fmt="o-", capsize=3, color=color(name, i),
                        label=label(name or check))
        _threshold(ax, threshold)
        ax.set_xlim(-0.5, len(runs) - 0.5)
        ax.set_xticks(x, [label(r) for r in runs], rotation=20 if len(runs) > 3 else 0, ha="right" if len(runs) > 3 else "center")
        ax.set_xlabel("run")
        ax.set_ylabel(label(check))
        ax.set_title(label(title))
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
        return to_svg(fig, _id(check))


def trend_layers_svg(check: str, title: str, runs: Sequence[str],
                     curves: dict[str, list[tuple[list, list, list, list]]], threshold: Optional[dict],
                     xlabel: str) -> Optional[str]:
    """``curves``: group -> per run (layers, values, lows, highs); one panel per group, one line per run."""
    panels = [(g, rows) for g, rows in curves.items() if any(v is not None for r in rows for v in r[1])]
    if not panels:
        return None
    with style():
        fig = Figure(figsize=(4.4 * len(panels) + 1.8, 3.1), layout="constrained")
        axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
        for ax, (group, rows) in zip(axes, panels):
            for j, (layers, values, lows, highs) in enumerate(rows):
                if not layers:
                    continue
                x = np.array([_nan(v) for v in layers])
                y = np.array([_nan(v) for v in values])
                c = _RUN_COLORS[j % len(_RUN_COLORS)]
                ax.plot(x, y, "o-", color=c, markersize=3, label=label(runs[j]))
                lo, hi = np.array([_nan(v) for v in lows]), np.array([_nan(v) for v in highs])
                if (np.isfinite(lo) & np.isfinite(hi)).any():
                    ax.fill_between(x, lo, hi, color=c, alpha=0.15, linewidth=0)
            _threshold(ax, threshold)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(label(f"{title}: {group}" if group else title))
            ax.set_xlabel(xlabel)
        axes[0].set_ylabel(label(check))
        axes[-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
        return to_svg(fig, _id(check))

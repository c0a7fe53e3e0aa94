"""Figures drawn from the results themselves: one per check measured per layer, or per modality.

Where the series figures show what a family recorded, these show what the gate decided on: each
result's value, its interval as a band (or error bar), the threshold as a horizontal line, and the
baseline's values (when the run was compared with one) as a named dashed line. Layers tick at integers.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mmdiag.report.figures.style import color, label, style
from mmdiag.report.figures.svg import to_svg

__all__ = ["Group", "check_layers_svg", "check_points_svg"]

def _slug(name: str) -> str:
    """A check name as an id fragment (ids must not carry the data's markup)."""
    return re.sub(r"[^a-z0-9_-]+", "-", str(name).lower()).strip("-") or "check"


_THRESHOLD_COLORS = {"fail": "#cf222e", "warn": "#b58100"}


@dataclass
class Group:
    """One line of a check figure: a modality or direction, its x (layers) and values with intervals."""

    name: str
    x: list = field(default_factory=list)
    values: list = field(default_factory=list)
    low: list = field(default_factory=list)
    high: list = field(default_factory=list)
    baseline: list = field(default_factory=list)

    def arrays(self) -> tuple[np.ndarray, ...]:
        def arr(v: list) -> np.ndarray:
            return np.array([math.nan if x is None else float(x) for x in v], dtype=float)
        order = np.argsort(arr(self.x), kind="stable")
        return tuple(arr(v)[order] for v in (self.x, self.values, self.low, self.high, self.baseline))


def _threshold(ax, threshold: Optional[dict]) -> None:
    if not threshold or not isinstance(threshold.get("value"), (int, float)):
        return
    level = str(threshold.get("level") or "fail")
    ax.axhline(float(threshold["value"]), color=_THRESHOLD_COLORS.get(level, "#cf222e"), ls="--", lw=1.3,
               label=label(f"threshold {threshold.get('op', '')} {threshold['value']:.3g} ({level})"))


def check_layers_svg(check: str, title: str, groups: Sequence[Group], threshold: Optional[dict],
                     xlabel: str, baseline_name: str = "baseline") -> Optional[str]:
    """A per-layer check: one line per group, its interval band, the threshold and the baseline."""
    groups = [g for g in groups if any(v is not None for v in g.values)]
    if not groups:
        return None
    with style():
        fig = Figure(figsize=(6.4, 3.2), layout="constrained")
        ax = fig.add_subplot()
        for i, g in enumerate(groups):
            x, y, lo, hi, base = g.arrays()
            c = color(g.name, i)
            ax.plot(x, y, "o-", color=c, label=label(g.name))
            band = np.isfinite(lo) & np.isfinite(hi)
            if band.any():
                ax.fill_between(x, np.where(band, lo, np.nan), np.where(band, hi, np.nan), color=c,
                                alpha=0.18, linewidth=0, label=label(f"{g.name} 95% interval"))
            if np.isfinite(base).any():
                ax.plot(x, base, "s--", color=c, alpha=0.6, markersize=3, lw=1.1,
                        label=label(f"{g.name}: {baseline_name}"))
        _threshold(ax, threshold)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label(check))
        ax.set_title(label(title))
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
        return to_svg(fig, f"check-{_slug(check)}")


def check_points_svg(check: str, title: str, groups: Sequence[Group], threshold: Optional[dict],
                     baseline_name: str = "baseline") -> Optional[str]:
    """A check measured once per modality (or direction): a dot with its interval per group."""
    rows = [(g.name, g.values[0], g.low[0], g.high[0], g.baseline[0]) for g in groups
            if g.values and g.values[0] is not None]
    if len(rows) < 1:
        return None
    with style():
        fig = Figure(figsize=(5.2, 0.7 + 0.45 * len(rows)), layout="constrained")
        ax = fig.add_subplot()
        for i, (name, v, lo, hi, base) in enumerate(rows):
            c = color(name, i)
            if lo is not None and hi is not None:
                ax.errorbar([v], [i], xerr=[[v - lo], [hi - v]], fmt="o", color=c, capsize=3)
            else:
                ax.plot([v], [i], "o", color=c)
            if base is not None:
                ax.plot([base], [i], "s", mfc="none", color="#333333",
                        label=label(baseline_name) if i == 0 else None)
        if threshold and isinstance(threshold.get("value"), (int, float)):
            level = str(threshold.get("level") or "fail")
            ax.axvline(float(threshold["value"]), color=_THRESHOLD_COLORS.get(level, "#cf222e"), ls="--",
                       label=label(f"threshold {threshold.get('op', '')} {threshold['value']:.3g} ({level})"))
        ax.set_yticks(range(len(rows)), [label(r[0]) for r in rows])
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.set_xlabel(label(f"{check} (dot: value, bar: 95% interval)"))
        ax.set_title(label(title))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
        return to_svg(fig, f"check-{_slug(check)}")

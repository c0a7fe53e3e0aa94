"""The modality-gap figures: the embedding map with the gap arrow, and the shift curve.

The gap Δ = mean(image) − mean(text) between the two modalities' embeddings
(Liang et al. 2022, arXiv:2203.02053) is a single number in the checks; the map
shows the two clouds and the arrow between their centroids, and the shift curve
shows what closing the gap along Δ would do to the contrastive loss and recall.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Optional

import numpy as np
from matplotlib.figure import Figure

from mmdiag.report.figures.coerce import floats, has_data, num, point, points, subsample
from mmdiag.report.figures.style import color, label, style
from mmdiag.report.figures.svg import to_svg

__all__ = ["MAX_POINTS", "at_grid_edge", "embedding_plot", "shift_plot"]

#: Most points drawn per modality in a scatter plot (evenly subsampled beyond).
MAX_POINTS = 300


def embedding_plot(emb: Any) -> Optional[str]:
    """2-D projection of the final image and text embeddings with the gap arrow.

    ``emb`` is ``series["embedding_2d"]``: ``{"image": [[x, y], ...], "text":
    [...], "centroids": {"image": [x, y], "text": [x, y]}}`` (``"method"`` is
    shown in the title when present).  The arrow goes from the text centroid to
    the image centroid, i.e. it is the projected gap vector
    Δ = mean(image) − mean(text) (Liang et al. 2022, arXiv:2203.02053).
    Centroids missing from the series are computed from all the points.
    """
    if not isinstance(emb, Mapping):
        return None
    clouds = [(name, points(emb.get(name))) for name in ("image", "text")]
    clouds = [(n, p) for n, p in clouds if p is not None]
    if not clouds:
        return None
    given = emb.get("centroids") if isinstance(emb.get("centroids"), Mapping) else {}
    centroids = {}
    for name, pts in clouds:
        c = point(given.get(name))
        centroids[name] = c if c is not None else pts.mean(axis=0)
    with style():
        fig = Figure(figsize=(5.6, 4.4), layout="constrained")
        ax = fig.add_subplot()
        for i, (name, pts) in enumerate(clouds):
            sub = subsample(pts, MAX_POINTS)
            ax.scatter(sub[:, 0], sub[:, 1], s=9, alpha=0.55, linewidths=0,
                       color=color(name, i), label=f"{name} (n={pts.shape[0]})")
        for i, (name, _pts) in enumerate(clouds):
            c = centroids[name]
            ax.scatter([c[0]], [c[1]], s=90, marker="X", color=color(name, i),
                       edgecolors="black", linewidths=1.0, zorder=3)
        if "image" in centroids and "text" in centroids:
            ti, im = centroids["text"], centroids["image"]
            ax.annotate("", xy=(im[0], im[1]), xytext=(ti[0], ti[1]), zorder=4,
                        arrowprops={"arrowstyle": "-|>", "lw": 1.8, "color": "black",
                                    "shrinkA": 4, "shrinkB": 4})
            mid = (ti + im) / 2
            ax.annotate("gap Δ", xy=(mid[0], mid[1]), xytext=(6, 6),
                        textcoords="offset points", fontsize=9, fontweight="bold")
        method = emb.get("method") or emb.get("explained")
        title = "final embeddings"
        if isinstance(method, str) and method:
            title += f"\n({label(method)})"
        ax.set_title(title, fontsize=8.5)
        names = emb.get("axes") if isinstance(emb.get("axes"), Mapping) else {}
        if names.get("x") or names.get("y"):
            ax.set_xlabel(label(names.get("x", "")))
            ax.set_ylabel(label(names.get("y", "")))
        else:  # an older document: unnamed PCA axes, whose scale means nothing
            ax.set_xlabel("projection axis 1")
            ax.set_ylabel("projection axis 2")
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_aspect("equal", adjustable="datalim")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), markerscale=1.5)
        return to_svg(fig, "embedding-2d")


def at_grid_edge(shift: Mapping, lam: np.ndarray, loss: Optional[np.ndarray], opt: float) -> bool:
    """Whether the loss minimum sits at the first or last λ of the grid (so it is no real optimum).

    ``shift["at_grid_edge"]`` when the run recorded it; else from the curve: the optimum (or the
    argmin of the loss) equals the smallest or the largest finite λ.
    """
    given = shift.get("at_grid_edge")
    if isinstance(given, bool):
        return given
    finite = lam[np.isfinite(lam)]
    if finite.size < 3:
        return False
    if not math.isfinite(opt) and has_data(loss):
        n = min(lam.size, loss.size)
        ok = np.isfinite(lam[:n]) & np.isfinite(loss[:n])
        if not ok.any():
            return False
        opt = float(lam[:n][ok][np.argmin(loss[:n][ok])])
    if not math.isfinite(opt):
        return False
    step = float(np.min(np.diff(np.unique(finite)))) if np.unique(finite).size > 1 else 0.0
    return bool(min(abs(opt - finite.min()), abs(opt - finite.max())) <= step / 2)


def shift_plot(shift: Any) -> Optional[str]:
    """Contrastive loss and recall@1 as a function of the gap shift λ.

    ``shift`` is ``series["gap.shift"]``: ``{"lambda": [...], "loss": [...],
    "recall_i2t": [...], "recall_t2i": [...], "optimum": λ*}`` where the
    embeddings are shifted as x' = normalize(x − λΔ), y' = normalize(y + λΔ)
    (Liang et al. 2022, arXiv:2203.02053, section 4).  λ = 0 (the model as
    trained) and the optimum are marked with vertical lines.
    """
    if not isinstance(shift, Mapping):
        return None
    lam = floats(shift.get("lambda"))
    if lam is None or not np.isfinite(lam).any():
        return None
    loss = floats(shift.get("loss"))
    recalls = [(text, floats(shift.get(key)))
               for key, text in (("recall_i2t", "image→text"), ("recall_t2i", "text→image"))]
    recalls = [(text, r) for text, r in recalls if has_data(r)]
    panels: list[tuple[str, list[tuple[str, np.ndarray]]]] = []
    if has_data(loss):
        panels.append(("loss", [("symmetric contrastive loss", loss)]))
    if recalls:
        panels.append(("recall@1", recalls))
    if not panels:
        return None
    opt = num(shift.get("optimum"))
    edge = at_grid_edge(shift, lam, loss, opt)
    with style():
        fig = Figure(figsize=(4.2 * len(panels), 3.6), layout="constrained")
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (ylabel, lines) in zip(axes, panels):
            for i, (text, y) in enumerate(lines):
                n = min(lam.size, y.size)
                order = np.argsort(lam[:n], kind="stable")
                line_color = ["#333333", "#1f77b4", "#ff7f0e"][i % 3] if ylabel != "loss" else "#333333"
                ax.plot(lam[:n][order], y[:n][order], "o-", color=line_color, label=text,
                        markersize=2.5)
            ax.axvline(0.0, color="#888888", ls=":", lw=1.2, label="λ = 0 (model)")
            if math.isfinite(opt) and edge:
                ax.axvline(opt, color="#b58100", ls="--", lw=1.4,
                           label=f"λ = {opt:.3g} is the grid's edge:\nthe optimum lies beyond it")
            elif math.isfinite(opt):
                ax.axvline(opt, color="#d62728", ls="--", lw=1.2, label=f"optimum λ = {opt:.3g}")
            ax.set_xlabel("shift λ")
            ax.set_ylabel(ylabel)
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
        if math.isfinite(opt) and has_data(loss):
            n = min(lam.size, loss.size)
            ok = np.isfinite(lam[:n]) & np.isfinite(loss[:n])
            if ok.any():
                at = float(np.interp(opt, np.sort(lam[:n][ok]),
                                     loss[:n][ok][np.argsort(lam[:n][ok], kind="stable")]))
                axes[0].plot([opt], [at], marker="*", markersize=11, color="#b58100" if edge else "#d62728",
                             mfc="none" if edge else None, linestyle="none")
        return to_svg(fig, "gap-shift")

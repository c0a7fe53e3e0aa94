"""Geometry analyses: from shared activations to the cone and gap series the checks report.

Each function is computed once per run (memoised by the session) and written
to the report ``series`` so the HTML plots and the per-layer checks agree.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from mmdiag.metrics.cone import mean_pairwise_cosine
from mmdiag.record import Activations

CONSTANT_CLS = "mean of patches: the pooled token is identical for every input at this layer"


def _constant_rows(x: torch.Tensor) -> bool:
    return bool(torch.all(torch.isclose(x, x[:1], rtol=1e-5, atol=1e-6)))


def layer_cone(acts: Activations, modality: str, layer: int) -> tuple[float, float, str]:
    """(cone of the pooled state, cone of the token mean, which pooling was used)."""
    pooled = acts.pooled[modality][layer]
    mean = acts.mean_tokens[modality][layer]
    source = "pooled token"
    if _constant_rows(pooled) and not _constant_rows(mean):
        pooled, source = mean, CONSTANT_CLS
    return mean_pairwise_cosine(pooled), mean_pairwise_cosine(mean), source


def cone_series(acts: Activations, modality: str, controls: dict[str, Optional[Activations]]) -> dict[str, Any]:
    """Cone per layer for one modality, with the controls' curves beside it."""
    n_layers = len(acts.pooled[modality])
    values, means, sources = [], [], []
    for k in range(n_layers):
        try:
            v, m, s = layer_cone(acts, modality, k)
        except ValueError as exc:  # non-finite states at this layer: its own check reports it
            v, m, s = float("nan"), float("nan"), f"not computed: {exc}"
        values.append(v)
        means.append(m)
        sources.append(s)
    out: dict[str, Any] = {"layers": list(range(n_layers)), "values": values, "mean_tokens": means,
                           "pooling": sources, "controls": {}}
    for name, ctrl in controls.items():
        if ctrl is not None and modality in ctrl.pooled:
            out["controls"][name] = [layer_cone(ctrl, modality, k)[0] for k in range(len(ctrl.pooled[modality]))]
    return out


def final_cone_controls(controls: dict[str, Optional[Activations]], modality: str) -> dict[str, float]:
    return {name: mean_pairwise_cosine(c.embeds[modality]) for name, c in controls.items()
            if c is not None and modality in c.embeds}


def embedding_2d(img: torch.Tensor, txt: torch.Tensor, max_points: int = 300) -> dict[str, Any]:
    """The final embeddings on the plane that shows the gap: x along Δ, y the top PC of the rest.

    With x̂, ŷ the L2-normalised embeddings and Δ = mean(x̂) − mean(ŷ) (Liang et al. 2022,
    arXiv:2203.02053), x = (v − c)·u with u = Δ/‖Δ‖ and c the joint centroid, and y the first
    principal component of the residuals (v − c) − ((v − c)·u)u. The centroids are then exactly ‖Δ‖
    apart along x, so the map can never show the modalities intermixed while the gap is large
    (a plain PCA can put Δ in a lower component). A zero gap falls back to the top two PCs.
    """
    a = torch.nn.functional.normalize(img.double(), dim=1).cpu().numpy()
    b = torch.nn.functional.normalize(txt.double(), dim=1).cpu().numpy()
    both = np.concatenate([a, b])
    centre = both.mean(axis=0)
    delta = a.mean(axis=0) - b.mean(axis=0)
    norm = float(np.linalg.norm(delta))
    centred = both - centre
    if norm > 1e-12:
        u = delta / norm
        residual = centred - np.outer(centred @ u, u)
        _, _, vt = np.linalg.svd(residual, full_matrices=False)
        axes = np.stack([u, vt[0]], axis=1)
        names = {"x": f"gap direction Δ/‖Δ‖ (‖Δ‖ = {norm:.3g})", "y": "top principal component of the residual"}
    else:
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        axes = vt[:2].T
        names = {"x": "principal component 1", "y": "principal component 2"}
    pa, pb = (a - centre) @ axes, (b - centre) @ axes
    return {"image": np.round(pa[:max_points], 4).tolist(), "text": np.round(pb[:max_points], 4).tolist(),
            "centroids": {"image": pa.mean(axis=0).tolist(), "text": pb.mean(axis=0).tolist()},
            "axes": names, "gap_norm": norm,
            "explained": "L2-normalised final embeddings projected on the gap direction and the top PC of the rest"}


def hidden_maps(acts: Activations, max_points: int = 120, every_layer: bool = False) -> dict[str, Any]:
    """2-D PCA maps of the pooled hidden states at the first, middle and last layer, per modality.

    VL-InterpreT shows hidden states per layer in 2-D (t-SNE); PCA is used here
    because it is deterministic and cheap. Both modalities share the projection
    of a layer when their widths match (single-stream models), else each is
    projected on its own. ``every_layer``: all layers (the report's explorer), not three.
    """
    modalities = [m for m in ("image", "text") if m in acts.pooled]
    if not modalities:
        return {}
    n_layers = min(len(acts.pooled[m]) for m in modalities)
    layers = list(range(n_layers)) if every_layer else sorted({0, n_layers // 2, n_layers - 1})
    points: dict[str, dict[str, list]] = {}
    for k in layers:
        states = {m: torch.nn.functional.normalize(acts.pooled[m][k].double(), dim=1).cpu().numpy()[:max_points]
                  for m in modalities}
        if not all(np.isfinite(s).all() for s in states.values()):
            continue  # a layer with non-finite states has no map (its checks say why)
        widths = {s.shape[1] for s in states.values()}
        groups = [modalities] if len(widths) == 1 else [[m] for m in modalities]
        points[str(k)] = {}
        for group in groups:
            both = np.concatenate([states[m] for m in group])
            centre = both.mean(axis=0)
            _, _, vt = np.linalg.svd(both - centre, full_matrices=False)
            for m in group:
                points[str(k)][m] = np.round((states[m] - centre) @ vt[:2].T, 4).tolist()
    return {"layers": [k for k in layers if str(k) in points], "points": points,
            "method": "PCA of L2-normalised pooled states"}

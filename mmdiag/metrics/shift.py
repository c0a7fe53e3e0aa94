"""The embedding-shift experiment of Liang et al., "Mind the Gap" (arXiv:2203.02053, §4.2).

Both modalities are moved along the gap vector Δ and re-normalised,

    x'_i = normalize(x̂_i − λΔ),   y'_i = normalize(ŷ_i + λΔ),

(λ = 0: unchanged; λ ≈ 0.5: the centroids meet; λ < 0: the gap widens) and the
contrastive loss is recorded as a function of λ.  Liang et al. find that at the
learned temperature the loss is minimal near the model's own gap (λ ≈ 0).  Their
plotting notebook evaluates only the image→text half of the loss; mmdiag uses
the symmetric CLIP loss (Radford et al. 2021, arXiv:2103.00020).

Inputs are ``(n, d)`` numpy arrays or torch tensors with matched pairs on equal
row indices; see :mod:`mmdiag.metrics.cone` for the device/dtype conventions.
The loss and recall build the n×n similarity matrix (O(n²) memory).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mmdiag.metrics.cone import normalize_rows, to_pair
from mmdiag.metrics.gap import gap_vector

__all__ = [
    "DEFAULT_LAMBDAS",
    "shift_embeddings",
    "symmetric_infonce",
    "recall_at_1",
    "shift_curve",
]

#: default grid of shift factors for :func:`shift_curve` (contains 0 and 0.5)
DEFAULT_LAMBDAS: np.ndarray = np.linspace(-1.0, 1.0, 41)


def shift_embeddings(img: Any, txt: Any, lam: float,
                     delta: Optional[Any] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift both modalities along the gap: x' = normalize(x̂ − λΔ), y' = normalize(ŷ + λΔ).

    x̂, ŷ are the L2-normalised rows; Δ defaults to :func:`gap_vector` of the
    inputs (Liang et al. 2022, arXiv:2203.02053, §4.2).  A row that the shift
    sends to exactly 0 stays 0 (see :func:`mmdiag.metrics.cone.normalize_rows`).
    Returns the two shifted tensors (on the input's device).
    """
    a, b = to_pair(img, txt)
    if delta is None:
        dv = normalize_rows(a).mean(dim=0) - normalize_rows(b).mean(dim=0)
    else:
        dv = torch.as_tensor(delta).detach().to(a.device, a.dtype).reshape(-1)
        if dv.shape[0] != a.shape[1]:
            raise ValueError(f"delta must have length d={a.shape[1]}, got {dv.shape[0]}")
    lam = float(lam)
    return (normalize_rows(normalize_rows(a) - lam * dv),
            normalize_rows(normalize_rows(b) + lam * dv))


def _logits(img: Any, txt: Any, temperature: float) -> torch.Tensor:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    a, b = to_pair(img, txt, same_n=True)
    return normalize_rows(a) @ normalize_rows(b).T / float(temperature)


def _inverse_norms(z: torch.Tensor) -> torch.Tensor:
    """1/‖z_i‖ per row, 0 for a zero row (matches :func:`normalize_rows`)."""
    norms = torch.linalg.vector_norm(z, dim=1)
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))
    return torch.where(norms > 0, 1.0 / safe, torch.zeros_like(norms))


def _infonce_from_logits(logits: torch.Tensor, target: torch.Tensor) -> float:
    loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    return float(loss)


def _recall_from_sim(sim: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    n = sim.shape[0]
    i2t = int((sim.argmax(dim=1) == target).sum()) / n
    t2i = int((sim.argmax(dim=0) == target).sum()) / n
    return i2t, t2i


def symmetric_infonce(img: Any, txt: Any, temperature: float) -> float:
    """Symmetric InfoNCE (CLIP) loss of matched pairs.

    S_ij = x̂_i·ŷ_j / τ;  L = ½ [ (1/n) Σ_i −log softmax_j(S_i·)_i
                               + (1/n) Σ_j −log softmax_i(S_·j)_j ],
    matched pairs on the diagonal (Radford et al. 2021, arXiv:2103.00020;
    as used in Liang et al. 2022, arXiv:2203.02053).  Requires same n, τ > 0.
    """
    logits = _logits(img, txt, temperature)
    target = torch.arange(logits.shape[0], device=logits.device)
    return _infonce_from_logits(logits, target)


def recall_at_1(img: Any, txt: Any) -> tuple[float, float]:
    """Top-1 retrieval accuracy of matched pairs by cosine similarity: (i2t, t2i).

    i2t = (1/n) Σ_i [argmax_j x̂_i·ŷ_j = i], t2i = (1/n) Σ_j [argmax_i x̂_i·ŷ_j = j].
    Ties go to the lowest index (``torch.argmax``).  Requires same n.
    """
    sim = _logits(img, txt, 1.0)
    target = torch.arange(sim.shape[0], device=sim.device)
    return _recall_from_sim(sim, target)


def shift_curve(img: Any, txt: Any, temperature: float,
                lambdas: Optional[Sequence[float]] = None) -> dict:
    """Loss and recall as a function of the shift λ (Liang et al. 2022, arXiv:2203.02053, §4.2).

    Δ is computed once from the inputs; for each λ the shifted embeddings of
    :func:`shift_embeddings` are scored with :func:`symmetric_infonce` and
    :func:`recall_at_1`.  The n×n cosine matrix is computed once and updated
    per λ in closed form (x̂_i − λΔ)·(ŷ_j + λΔ) = x̂_i·ŷ_j + λx̂_i·Δ − λŷ_j·Δ −
    λ²‖Δ‖² over the shifted norms, so a point costs O(n² + n·d).  The
    temperature must be > 0.  Returns a dict with

    * ``"lambda"``, ``"loss"``, ``"recall_i2t"``, ``"recall_t2i"``: lists of
      floats, one entry per λ (default grid :data:`DEFAULT_LAMBDAS`,
      −1 … 1 in steps of 0.05);
    * ``"gap"``: list, the centroid distance ‖Δ(λ)‖ after each shift;
    * ``"optimum"``: the λ with the lowest loss — among λ whose loss is within
      1e-12 (relative) of the minimum, the one closest to 0 (so a flat curve,
      e.g. Δ = 0, gives 0);
    * ``"optimum_gap"``: ``"gap"`` at the optimum;
    * ``"loss_at_0"``: the unshifted loss (computed even if 0 is not in the grid);
    * ``"gap_norm"``: ‖Δ‖ of the inputs.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    a, b = to_pair(img, txt, same_n=True)
    grid = [float(v) for v in (DEFAULT_LAMBDAS if lambdas is None else lambdas)]
    if not grid:
        raise ValueError("shift_curve needs at least one lambda")
    if not all(np.isfinite(grid)):
        raise ValueError("shift_curve: lambdas must be finite")
    delta = gap_vector(a, b)
    xh, yh = normalize_rows(a), normalize_rows(b)
    # One matmul for the whole curve: (x̂_i − λΔ)·(ŷ_j + λΔ)
    #   = x̂_i·ŷ_j + λ x̂_i·Δ − λ ŷ_j·Δ − λ²‖Δ‖², divided by the shifted row norms.
    base = xh @ yh.T
    u, v, c = xh @ delta, yh @ delta, delta @ delta
    target = torch.arange(base.shape[0], device=base.device)
    losses: list[float] = []
    r_i2t: list[float] = []
    r_t2i: list[float] = []
    gaps: list[float] = []
    for lam in grid:
        x_raw, y_raw = xh - lam * delta, yh + lam * delta
        inv_x, inv_y = _inverse_norms(x_raw), _inverse_norms(y_raw)
        centroid_gap = (x_raw * inv_x[:, None]).mean(dim=0) - (y_raw * inv_y[:, None]).mean(dim=0)
        gaps.append(float(torch.linalg.vector_norm(centroid_gap)))
        cos = (base + lam * u[:, None] - lam * v[None, :] - lam * lam * c)
        cos = (cos * inv_x[:, None] * inv_y[None, :]).clamp(-1.0, 1.0)
        losses.append(_infonce_from_logits(cos / float(temperature), target))
        r1, r2 = _recall_from_sim(cos, target)
        r_i2t.append(r1)
        r_t2i.append(r2)
    best = min(losses)
    tol = 1e-12 * max(1.0, abs(best))
    candidates = [i for i, val in enumerate(losses) if val - best <= tol]
    i_opt = min(candidates, key=lambda i: (abs(grid[i]), i))
    return {
        "lambda": grid,
        "loss": losses,
        "recall_i2t": r_i2t,
        "recall_t2i": r_t2i,
        "gap": gaps,
        "optimum": grid[i_opt],
        "optimum_gap": gaps[i_opt],
        "loss_at_0": symmetric_infonce(a, b, temperature),
        "gap_norm": float(torch.linalg.vector_norm(delta)),
    }

"""The embedding-shift experiment of Liang et al., "Mind the Gap" (arXiv:2203.02053, §4.2).

Both modalities are moved along the gap vector Δ and re-normalised,

    x'_i = normalize(x̂_i − λΔ),   y'_i = normalize(ŷ_i + λΔ),

(λ = 0: unchanged; λ ≈ 0.5: the centroids meet; λ < 0: the gap widens) and the
contrastive loss is recorded as a function of λ.  Liang et al. find that at the
learned temperature the loss is minimal near the model's own gap (λ ≈ 0).  Their
plotting notebook evaluates only the image→text half of the loss; mmdiag uses
the symmetric CLIP loss (Radford et al. 2021, arXiv:2103.00020).

Batches: Liang et al.'s code (``calculate_val_loss`` in
``Figure_3_Contrastive_Learning/plot_optimization_exp.ipynb`` of the
Modality-Gap repository) scores the 5,000 pairs in consecutive batches of 50
and averages the 100 batch losses; the loss of a batch of b pairs grows like
log b, so scoring all n pairs at once makes the curve (and its optimum) depend
on n.  :func:`shift_curve` takes ``batch_size`` (0: all pairs in one batch) and
assigns the pairs to batches by a seeded permutation (:func:`shift_batches`),
so a point of the curve costs O(n·b + n·d), linear in n.

Inputs are ``(n, d)`` numpy arrays or torch tensors with matched pairs on equal
row indices; see :mod:`mmdiag.metrics.cone` for the device/dtype conventions.
:func:`symmetric_infonce` and :func:`recall_at_1` build the n×n similarity
matrix (O(n²) memory).
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
    "LIANG_BATCH",
    "shift_batches",
    "shift_embeddings",
    "symmetric_infonce",
    "recall_at_1",
    "shift_curve",
]

#: default grid of shift factors for :func:`shift_curve` (contains 0 and 0.5)
DEFAULT_LAMBDAS: np.ndarray = np.linspace(-1.0, 1.0, 41)
#: pairs per batch in Liang et al.'s loss evaluation (``BATCH_SIZE = 50``; 5,000 pairs, 100 batches)
LIANG_BATCH = 50


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



def shift_batches(n: int, batch_size: int, seed: int = 0, text_to_image: Optional[Any] = None) -> np.ndarray:
    """Row indices of the batches the shift experiment scores: an int array ``(k, b)``.

    ``batch_size = 0`` or ``>= n``: one batch of all ``n`` rows in their order
    (``k = 1, b = n``).  Otherwise the rows are shuffled by
    ``numpy.random.default_rng(seed).permutation(n)`` and cut into
    ``k = n // batch_size`` consecutive batches of exactly ``batch_size`` rows;
    the ``n mod batch_size`` rows left over are not scored, as in Liang et al.'s
    code, which loops over ``len(features) // BATCH_SIZE`` full batches (there
    in data order).  Deterministic in ``seed``.

    ``text_to_image`` (row j's image, several rows per image as COCO's five captions): no batch holds two
    rows of one image, so an image's other captions are never scored as its negatives. Row j's *round* is
    its rank among its image's rows (in row order); each round is shuffled and cut into full batches on
    its own (one generator, rounds in order; each round's remainder is left out). ``batch_size = 0``,
    ``>= n``, or no round as long as a batch: one batch, the first round in row order (each image once, with its first
    row). Without shared images this is the plain case exactly.

    >>> shift_batches(6, 2, seed=0, text_to_image=[0, 0, 1, 1, 2, 2]).tolist()  # rounds [0, 2, 4], [1, 3, 5]
    [[4, 0], [5, 3]]
    """
    n, batch_size = int(n), int(batch_size)
    if n < 1:
        raise ValueError(f"shift_batches needs n >= 1 rows, got {n}")
    if batch_size < 0 or batch_size == 1:
        raise ValueError(f"batch_size must be 0 (all pairs at once) or at least 2, got {batch_size}")
    rng = np.random.default_rng(int(seed))
    if text_to_image is None:
        if batch_size == 0 or batch_size >= n:
            return np.arange(n, dtype=np.int64)[None, :]
        k = n // batch_size
        return rng.permutation(n)[:k * batch_size].reshape(k, batch_size).astype(np.int64)
    rounds = _rounds(text_to_image, n)
    batches = []
    if 2 <= batch_size < n:
        for members in rounds:
            k = len(members) // batch_size
            if k:
                batches.append(members[rng.permutation(len(members))][:k * batch_size].reshape(k, batch_size))
    if not batches:
        return rounds[0][None, :].astype(np.int64)
    return np.concatenate(batches).astype(np.int64)


def _rounds(text_to_image: Any, n: int) -> list[np.ndarray]:
    """Rows grouped by their rank among the rows of the same image: round r = every image's (r+1)-th row."""
    m = np.asarray(text_to_image, dtype=np.int64).reshape(-1)
    if m.shape[0] != n:
        raise ValueError(f"text_to_image must map each of the {n} rows, got {m.shape[0]} entries")
    order = np.argsort(m, kind="stable")
    sorted_m = m[order]
    starts = np.flatnonzero(np.concatenate([[True], sorted_m[1:] != sorted_m[:-1]]))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - np.repeat(starts, np.diff(np.concatenate([starts, [n]])))
    return [np.flatnonzero(rank == r) for r in range(int(rank.max()) + 1)]


def _batch_infonce(logits: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of each batch of ``(k, b, b)`` logits (pairs on the diagonal), shape ``(k,)``."""
    diag = torch.diagonal(logits, dim1=1, dim2=2)
    i2t = torch.logsumexp(logits, dim=2) - diag
    t2i = torch.logsumexp(logits, dim=1) - diag
    return 0.5 * (i2t.mean(dim=1) + t2i.mean(dim=1))


def _batch_recall(sim: torch.Tensor) -> tuple[float, float]:
    """Top-1 accuracy within each batch of ``(k, b, b)`` similarities, averaged over all scored pairs."""
    target = torch.arange(sim.shape[1], device=sim.device)
    i2t = (sim.argmax(dim=2) == target).double().mean()
    t2i = (sim.argmax(dim=1) == target).double().mean()
    return float(i2t), float(t2i)


def shift_curve(img: Any, txt: Any, temperature: float,
                lambdas: Optional[Sequence[float]] = None, batch_size: int = 0,
                seed: int = 0, text_to_image: Optional[Any] = None) -> dict:
    """Loss and recall as a function of the shift λ (Liang et al. 2022, arXiv:2203.02053, §4.2).

    Δ is computed once from all inputs; for each λ the shifted embeddings of
    :func:`shift_embeddings` are scored per batch of :func:`shift_batches`
    (``batch_size`` pairs, seeded by ``seed``; 0 = all pairs in one batch):

        L(λ) = (1/k) Σ_batches ½ [ (1/b) Σ_i −log softmax_j(S_i·)_i + (1/b) Σ_j −log softmax_i(S_·j)_j ]

    with S the batch's b×b cosine logits over τ, i.e. :func:`symmetric_infonce`
    of each batch, averaged (Liang et al. average 100 batches of 50; with one
    batch this is :func:`symmetric_infonce` of all pairs).  Recall@1 is the
    accuracy of retrieving the partner among the batch's b candidates
    (:func:`recall_at_1` per batch, averaged).  Each batch's cosine matrix is
    computed once and updated per λ in closed form (x̂_i − λΔ)·(ŷ_j + λΔ) =
    x̂_i·ŷ_j + λx̂_i·Δ − λŷ_j·Δ − λ²‖Δ‖² over the shifted norms, so a point costs
    O(n·b + n·d).  The temperature must be > 0.  Returns a dict with

    * ``"lambda"``, ``"loss"``, ``"recall_i2t"``, ``"recall_t2i"``: lists of
      floats, one entry per λ (default grid :data:`DEFAULT_LAMBDAS`,
      −1 … 1 in steps of 0.05);
    * ``"gap"``: list, the centroid distance ‖Δ(λ)‖ of all n pairs after each shift;
    * ``"optimum"``: the λ with the lowest loss — among λ whose loss is within
      1e-12 (relative) of the minimum, the one closest to 0 (so a flat curve,
      e.g. Δ = 0, gives 0);
    * ``"at_grid_edge"``: the optimum is the smallest or largest λ of a grid of
      more than one value (the loss may fall further outside the grid);
    * ``"optimum_gap"``: ``"gap"`` at the optimum;
    * ``"loss_at_0"``: the unshifted loss in the same batches (computed even if
      0 is not in the grid);
    * ``"gap_norm"``: ‖Δ‖ of the inputs;
    * ``"batch_size"``, ``"batches"``, ``"pairs_left_out"``: the b and k scored
      and the ``n − k·b`` pairs no batch holds.

    ``text_to_image``: row j's image when images have several captions (``img`` then repeats each image
    once per caption, paired row by row): batches never hold two captions of one image
    (:func:`shift_batches`), and Δ and the centroid gaps count each image once (its first row), as
    :func:`~mmdiag.metrics.gap.gap_norm` does with Schrodi et al.'s ``text_to_image_map``.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    a, b = to_pair(img, txt, same_n=True)
    grid = [float(v) for v in (DEFAULT_LAMBDAS if lambdas is None else lambdas)]
    if not grid:
        raise ValueError("shift_curve needs at least one lambda")
    if not all(np.isfinite(grid)):
        raise ValueError("shift_curve: lambdas must be finite")
    rows = torch.from_numpy(shift_batches(a.shape[0], batch_size, seed, text_to_image)).to(a.device)
    if text_to_image is None:
        images = slice(None)
    else:  # each image once: its first row
        images = torch.as_tensor(np.unique(np.asarray(text_to_image).reshape(-1), return_index=True)[1],
                                 device=a.device)
    delta = gap_vector(a[images], b)
    xh, yh = normalize_rows(a), normalize_rows(b)
    # One batched matmul for the whole curve: (x̂_i − λΔ)·(ŷ_j + λΔ)
    #   = x̂_i·ŷ_j + λ x̂_i·Δ − λ ŷ_j·Δ − λ²‖Δ‖², divided by the shifted row norms.
    xb, yb = xh[rows], yh[rows]  # (k, b, d)
    base = xb @ yb.transpose(1, 2)  # (k, b, b)
    u, v, c = xh @ delta, yh @ delta, delta @ delta
    ub, vb = u[rows], v[rows]  # (k, b)
    tau = float(temperature)

    def point(lam: float) -> tuple[float, float, float, float]:
        x_raw, y_raw = xh - lam * delta, yh + lam * delta
        inv_x, inv_y = _inverse_norms(x_raw), _inverse_norms(y_raw)
        centroid_gap = (x_raw * inv_x[:, None])[images].mean(dim=0) - (y_raw * inv_y[:, None]).mean(dim=0)
        cos = base + lam * ub[:, :, None] - lam * vb[:, None, :] - lam * lam * c
        cos = (cos * inv_x[rows][:, :, None] * inv_y[rows][:, None, :]).clamp(-1.0, 1.0)
        r1, r2 = _batch_recall(cos)
        loss = float(_batch_infonce(cos / tau).mean())
        return loss, r1, r2, float(torch.linalg.vector_norm(centroid_gap))

    points = [point(lam) for lam in grid]
    losses = [p[0] for p in points]
    gaps = [p[3] for p in points]
    best = min(losses)
    tol = 1e-12 * max(1.0, abs(best))
    candidates = [i for i, val in enumerate(losses) if val - best <= tol]
    i_opt = min(candidates, key=lambda i: (abs(grid[i]), i))
    edge = len(set(grid)) > 1 and grid[i_opt] in (min(grid), max(grid))
    return {
        "lambda": grid,
        "loss": losses,
        "recall_i2t": [p[1] for p in points],
        "recall_t2i": [p[2] for p in points],
        "gap": gaps,
        "optimum": grid[i_opt],
        "at_grid_edge": bool(edge),
        "optimum_gap": gaps[i_opt],
        "loss_at_0": losses[grid.index(0.0)] if 0.0 in grid else point(0.0)[0],
        "gap_norm": float(torch.linalg.vector_norm(delta)),
        "batch_size": int(rows.shape[1]),
        "batches": int(rows.shape[0]),
        "pairs_left_out": int(a.shape[0] - rows.numel()),
    }

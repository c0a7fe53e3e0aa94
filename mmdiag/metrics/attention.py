"""Attention-modality metrics (VL-InterpreT, Aflalo et al. 2022, arXiv:2203.17247).

VL-InterpreT summarises the attention of a single-stream vision-language
transformer, shape ``(layers, heads, T, T)`` over the concatenated image and
text tokens, as cross- vs intra-modal attention per layer and head.  It averages
raw weights per block (biased by the block size).  mmdiag reports instead the
**row-normalised mass share** (DESIGN.md §1.3)::

    w_ij      = attn_ij / sum_{k valid} attn_ik          (j valid: not PAD)
    share[a,b] = (1 / count[a,b]) * sum_{i in a, i sees b} sum_{j in b} w_ij

i.e. for each valid query token of group ``a`` the attention mass it puts on key
tokens of group ``b``, averaged over the valid queries of group ``a``.

:data:`DIRECTIONS` are the ``query->key`` pairs the ``attention.share`` check
reports: for each query modality (text, image) its share on image, text *and*
special keys, so that a query modality's reported shares add up to 1
(:func:`query_share_sums`); without ``->special`` the mass on [CLS], [SEP], the
image CLS or BOS would be missing from the sum (about 0.07 per layer for the
text queries of ``random:tiny-vilt`` on 8 synthetic samples).

Conventions (all documented choices):

* Token groups are the ints of ``AttentionStream.groups`` (``GROUP_*`` in
  :mod:`mmdiag.models.base`): ``PAD = -1`` (neither query nor key), ``SPECIAL = 0``
  (CLS/BOS/SEP/EOS...), ``TEXT = 1``, ``IMAGE = 2``.
* Each row is renormalised over the non-PAD keys (a padded softmax already puts
  ~0 mass on PAD keys, so this only removes numerical residue).  A query row
  with zero mass on valid keys is skipped (not counted); a row of a valid query
  that is not finite is an error.
* ``count[a, b]`` counts the valid queries of group ``a`` that *can see* at least
  one valid key of group ``b``: a key of group ``b`` exists in the query's
  sample and, for ``causal=True``, sits at a position ``<=`` the query's.  So in a
  causal decoder a text query before the first image token does not count for
  ``text->image`` (it cannot attend to the image) but counts for every group it
  can see.  Its mass on ``b`` is zero anyway, so only the denominator changes.
  Consequence: ``share[a, :]`` sums to 1 exactly when every group-``a`` query
  sees every key group of its sample (bidirectional encoders); otherwise the sum
  is ``>= 1``.  ``share_total = mass / n_queries`` (every valid query counted
  for every direction) always sums to 1 over ``b``.
* A zero count gives a NaN share (no query could attend there, e.g. text->image
  in a text-only model); the caller decides (skip the check, usually).
* Counts are kept per head because the skipped rows (zero valid mass, which
  happens for the sink-excluded variant) can differ between heads.

Attention sinks (Xiao et al. 2023, StreamingLLM, arXiv:2309.17453; Darcet et
al. 2023, "Vision Transformers Need Registers", arXiv:2309.16588) are keys that
soak up attention regardless of content (BOS token, a few high-norm patch
tokens).  Per (sample, layer, head) a valid key is a *sink* when its mean
received (renormalised) attention over the valid queries exceeds
``sink_threshold`` (default 0.3: under content-driven attention over ``n`` keys
a key receives ``1/n`` on average, so 0.3 flags only keys taking a large fixed
cut of every row; since the mean received mass sums to 1 over keys at most 3
keys can be flagged).  The threshold is meaningful for sequences much longer
than ``1/sink_threshold`` tokens: with 3 or fewer valid keys uniform attention
flags every key.  The sink-excluded shares (``*_nosink``) drop the sink keys and
renormalise each row over the remaining valid keys, with the same counting
rules (a query counts for ``a->b`` only if it sees a non-sink key of group ``b``).

Row entropy is ``H_i = -sum_j w_ij log w_ij`` (nats) over the valid keys;
uniform attention over ``k`` valid keys has entropy ``log k``.

Everything stays on the attention tensor's device: per batch only ``(B, H, T,
A)``-sized reductions are made (matrix products with one-hot group matrices),
never a copy of the ``(B, H, T, T)`` map to the CPU.  The streaming sums over
batches live in :class:`mmdiag.recording.attention.ShareAccumulator` (float64,
float32 on devices without float64, e.g. MPS), built from the functions here.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from mmdiag.tokens import GROUP_NAMES, GROUP_PAD, N_GROUPS

from mmdiag.errors import SpecError

__all__ = [
    "GROUP_NAMES",
    "N_GROUPS",
    "DIRECTIONS",
    "DEFAULT_SINK_THRESHOLD",
    "direction_index",
    "row_entropy",
    "attention_sinks",
    "modality_mass",
    "modality_shares",
    "query_share_sums",
    "check_attention",
    "valid_row_mass",
    "group_onehot",
    "mass_count",
    "sinks_from_mass",
    "accumulator_dtype",
]

_PAD = GROUP_PAD
DIRECTIONS = ("text->image", "text->text", "image->text", "image->image",
              "text->special", "image->special")
DEFAULT_SINK_THRESHOLD = 0.3

_GROUP_BY_NAME = {v: k for k, v in GROUP_NAMES.items()}


def direction_index(name: str) -> tuple[int, int]:
    """Map ``"QUERY->KEY"`` (e.g. ``"text->image"``) to ``(query_group, key_group)``.

    Raises :class:`mmdiag.errors.SpecError` for an unknown name.
    """
    parts = [p.strip().lower() for p in str(name).split("->")]
    if len(parts) != 2 or any(p not in _GROUP_BY_NAME for p in parts):
        raise SpecError(
            f"unknown attention direction {name!r}: expected 'QUERY->KEY' with "
            f"groups {sorted(_GROUP_BY_NAME)}, e.g. 'text->image'")
    return _GROUP_BY_NAME[parts[0]], _GROUP_BY_NAME[parts[1]]


def accumulator_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def check_attention(attn: torch.Tensor, groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate shapes; return (attn as float32-or-wider, groups as long on attn's device)."""
    if not isinstance(attn, torch.Tensor) or attn.ndim != 4 or attn.shape[-1] != attn.shape[-2]:
        shape = tuple(attn.shape) if isinstance(attn, torch.Tensor) else type(attn).__name__
        raise ValueError(f"attn: expected a (B, H, T, T) tensor, got {shape}")
    groups = torch.as_tensor(groups, device=attn.device)
    B, _, T, _ = attn.shape
    if groups.ndim != 2 or tuple(groups.shape) != (B, T):
        raise ValueError(f"groups: expected shape ({B}, {T}), got {tuple(groups.shape)}")
    groups = groups.long()
    if groups.numel() and (bool((groups < _PAD).any()) or bool((groups >= N_GROUPS).any())):
        raise ValueError("groups: values must be PAD=-1, SPECIAL=0, TEXT=1 or IMAGE=2")
    a = attn.detach()
    if a.dtype not in (torch.float32, torch.float64):
        a = a.float()  # bf16/fp16 -> fp32 (a copy, but on the same device)
    return a, groups


def group_onehot(groups: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, T) groups -> (B, T, A) one-hot; PAD rows are all zero."""
    ar = torch.arange(N_GROUPS, device=groups.device)
    return (groups.unsqueeze(-1) == ar).to(dtype)


def valid_row_mass(a: torch.Tensor, groups: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row mass on each key group and the valid-row mask.

    Returns ``a`` (possibly with non-finite PAD-query rows zeroed), ``rowmass``
    ``(B, H, T, A)`` = sum of raw weights per key group, and ``rowok`` ``(B, H, T)``:
    valid query with positive mass on valid keys.
    """
    oh = group_onehot(groups, a.dtype).unsqueeze(1)  # (B, 1, T, A)
    rowmass = a @ oh  # (B, H, T, A)
    qvalid = (groups != _PAD).unsqueeze(1)  # (B, 1, T)
    finite = torch.isfinite(rowmass).all(-1)
    if not bool(finite.all()):
        if bool((~finite & qvalid).any()):
            raise ValueError("attn: non-finite attention weights in a valid query row")
        # e.g. SDPA gives NaN rows for fully masked (PAD) queries: zero them.
        a = a.masked_fill(~qvalid.unsqueeze(-1), 0.0)
        rowmass = a @ oh
    s = rowmass.sum(-1)
    rowok = qvalid & (s > 0)
    return a, rowmass, rowok


def row_entropy(attn: torch.Tensor, valid_keys: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Shannon entropy (nats) of each attention row, renormalised over valid keys.

    ``H_i = -sum_j p_ij log p_ij`` with ``p_ij = attn_ij m_j / sum_k attn_ik m_k`` and
    ``m`` the key mask ``valid_keys`` (shape ``(..., T)`` broadcastable to the rows'
    batch dims, e.g. ``(B, 1, T)`` for ``attn`` of shape ``(B, H, T, T)``; default
    all keys).  Computed as ``log s - (1/s) sum_j m_j a_ij log a_ij`` (``s`` the
    row's valid mass) so only row-sized temporaries besides one ``a log a`` map are
    made.  A row with zero valid mass gives NaN.  Output shape ``attn.shape[:-1]``.
    Uniform rows over ``k`` valid keys give ``log k``.
    """
    a = attn.detach()
    if a.dtype not in (torch.float32, torch.float64):
        a = a.float()
    # a log a, 0 at a = 0 (as xlogy, 3x faster on CPU; differs only for a below the smallest normal float)
    a_log_a = a * torch.log(a.clamp_min(torch.finfo(a.dtype).tiny))
    if valid_keys is None:
        s = a.sum(-1)
        alog = a_log_a.sum(-1)
    else:
        m = torch.as_tensor(valid_keys, device=a.device).to(a.dtype).unsqueeze(-1)  # (..., T, 1)
        s = (a @ m).squeeze(-1)
        alog = (a_log_a @ m).squeeze(-1)
    s_safe = torch.where(s > 0, s, torch.ones_like(s))
    h = torch.log(s_safe) - alog / s_safe
    return torch.where(s > 0, h, torch.full_like(h, float("nan")))


def _received(a: torch.Tensor, rowmass: torch.Tensor, rowok: torch.Tensor) -> torch.Tensor:
    """Mean renormalised attention each key receives over the valid rows: (B, H, T)."""
    s = rowmass.sum(-1)
    wq = torch.where(rowok, 1.0 / torch.where(rowok, s, torch.ones_like(s)),
                     torch.zeros_like(s))  # (B, H, T)
    nq = rowok.sum(-1, keepdim=True).clamp_min(1).to(a.dtype)  # (B, H, 1)
    return (wq.unsqueeze(-2) @ a).squeeze(-2) / nq


def attention_sinks(attn: torch.Tensor, groups: torch.Tensor,
                    threshold: float = DEFAULT_SINK_THRESHOLD) -> torch.Tensor:
    """Sink keys per (sample, head): bool ``(B, H, T)``.

    Key ``j`` (non-PAD) is a sink when ``(1/n) sum_{i valid} w_ij > threshold``, with
    ``w`` the rows renormalised over valid keys and ``n`` the number of valid
    query rows (StreamingLLM, arXiv:2309.17453; registers, arXiv:2309.16588).
    """
    a, groups = check_attention(attn, groups)
    a, rowmass, rowok = valid_row_mass(a, groups)
    return sinks_from_mass(a, groups, rowmass, rowok, threshold)


def sinks_from_mass(a: torch.Tensor, groups: torch.Tensor, rowmass: torch.Tensor,
                rowok: torch.Tensor, threshold: float) -> torch.Tensor:
    recv = _received(a, rowmass, rowok)
    return (recv > threshold) & (groups != _PAD).unsqueeze(1)


def mass_count(rowmass: torch.Tensor, rowok: torch.Tensor, key_oh: torch.Tensor,
                q_oh: torch.Tensor, causal: bool, acc: torch.dtype
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sum over the batch of renormalised mass, pair counts and row counts.

    rowmass (B, H, T, A) raw mass per key group over the keys kept; rowok (B, H, T);
    key_oh (B, H|1, T, A) one-hot of kept keys; q_oh (B, T, A) query one-hot.
    Returns mass (H, A, A), count (H, A, A), n_queries (H, A).
    """
    s = rowmass.sum(-1, keepdim=True)
    ok = rowok & (s.squeeze(-1) > 0)
    p = torch.where(ok.unsqueeze(-1), rowmass / torch.where(s > 0, s, torch.ones_like(s)),
                    torch.zeros_like(rowmass))
    if causal:
        sees = key_oh.cumsum(-2) > 0  # (B, H|1, T, A): a key of group b at position <= i
    else:
        sees = (key_oh.sum(-2, keepdim=True) > 0).expand_as(key_oh)
    sees = sees & ok.unsqueeze(-1)
    q = q_oh.to(acc)
    mass = torch.einsum("bta,bhtc->hac", q, p.to(acc))
    count = torch.einsum("bta,bhtc->hac", q, sees.to(acc))
    nq = torch.einsum("bta,bht->ha", q, ok.to(acc))
    return mass, count, nq


def modality_mass(attn: torch.Tensor, groups: torch.Tensor, causal: bool = False,
                  key_mask: Optional[torch.Tensor] = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed (not averaged) row-normalised mass from query group a to key group b.

    ``attn`` ``(B, H, T, T)`` row-stochastic, ``groups`` ``(B, T)``.  ``key_mask``
    (bool, ``(B, T)`` or ``(B, H, T)``, default all) restricts the keys: rows are
    renormalised over the valid keys it keeps.  Returns ``mass (H, A, A)``
    = ``sum_{i in a, counted} sum_{j in b} w_ij``, ``count (H, A, A)`` (queries of
    group a that see a kept key of group b, see module doc) and ``n_queries (H, A)``
    (valid rows per query group), on ``attn``'s device in float64.
    """
    a, groups = check_attention(attn, groups)
    acc = accumulator_dtype(a.device)
    a, rowmass, rowok = valid_row_mass(a, groups)
    q_oh = group_onehot(groups, a.dtype)
    key_oh = q_oh.unsqueeze(1)
    if key_mask is not None:
        km = torch.as_tensor(key_mask, device=a.device).bool()
        if km.ndim == 2:
            km = km.unsqueeze(1)
        if km.ndim != 3 or km.shape[0] != a.shape[0] or km.shape[-1] != a.shape[-1]:
            raise ValueError(f"key_mask: expected (B, T) or (B, H, T), got {tuple(km.shape)}")
        key_oh = key_oh * km.unsqueeze(-1).to(a.dtype)
        rowmass = a @ key_oh
    return mass_count(rowmass, rowok, key_oh, q_oh, causal, acc)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)),
                       torch.full_like(num, float("nan")))


def modality_shares(attn: torch.Tensor, groups: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """Row-normalised mass share ``(H, A, A)`` for one batch: ``mass / count``.

    ``share[h, a, b]`` = mean over valid group-``a`` queries that can see a group-``b``
    key of the attention mass (renormalised over non-PAD keys) they put on group-``b``
    keys (DESIGN.md §1.3; VL-InterpreT, arXiv:2203.17247).  NaN where the count is 0.
    """
    mass, count, _ = modality_mass(attn, groups, causal)
    return _ratio(mass, count)


def query_share_sums(share: Any) -> np.ndarray:
    """Sum of the shares of each query group over the key groups: ``(..., A, A) -> (..., A)``.

    ``sum_b share[..., a, b]`` over the key groups ``b`` whose share is defined (not NaN: a
    group no query of ``a`` could see is left out); NaN where none is.  Since ``share[a, b]
    = mass[a, b] / count[a, b]`` and ``sum_b mass[a, b]`` is the number of counted group-``a``
    queries, the sum is exactly 1 when every counted query of ``a`` sees every key group that
    any of them sees: always in a bidirectional encoder whose samples hold the same groups,
    and in a causal decoder whose image precedes the text (``BOS <image>* caption``, as
    LLaVA's adapter builds it: text queries see all three groups, image queries special and
    image keys).  A causal text query placed before the image is left out of
    ``count[text, image]`` only, which makes the sum exceed 1 (module doc).  Works on numpy arrays and torch tensors.
    """
    arr = share.detach().cpu().numpy() if isinstance(share, torch.Tensor) else np.asarray(share, dtype=np.float64)
    defined = ~np.isnan(arr)
    total = np.where(defined, arr, 0.0).sum(axis=-1)
    return np.where(defined.any(axis=-1), total, np.nan)

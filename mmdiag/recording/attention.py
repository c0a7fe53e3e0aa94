"""Streaming attention-modality sums: the recorder's per-stream accumulator.

:class:`ShareAccumulator` adds up, batch by batch and layer by layer, the
row-normalised mass shares, sink-excluded shares, row entropies and sink counts
defined in :mod:`mmdiag.metrics.attention` (the formulas and their conventions
live there), so that a run's attention never has to be kept. Sums stay on the
attention's device in float64 (float32 on MPS); accumulators of the same shape
merge.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch

from mmdiag.metrics.attention import (DEFAULT_SINK_THRESHOLD, N_GROUPS, accumulator_dtype, check_attention,
                                      group_onehot, mass_count, row_entropy, sinks_from_mass, valid_row_mass)
from mmdiag.models.base import GROUP_PAD
from mmdiag.recording.stats import AttentionStats

__all__ = ["ShareAccumulator"]


def _nanmean_heads(x: np.ndarray) -> np.ndarray:
    """Mean over axis 1 (heads) ignoring NaN; all-NaN -> NaN (no warning)."""
    finite = ~np.isnan(x)
    n = finite.sum(axis=1)
    tot = np.where(finite, x, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, tot / np.maximum(n, 1), np.nan)


#: on CPU, maps are reduced in slices of the batch of about this many weights (2 MB of float32), so that each
#: slice's temporaries (``a log a``, masked copies) stay in cache: 1.6x faster than whole-batch temporaries on
#: (32, 32, 68, 68) maps. Sums over slices equal the whole batch's up to float64 rounding.
CPU_SLICE = 1 << 19


def _slices(a: torch.Tensor, *rest: torch.Tensor):
    """``(a, *rest)`` cut along the batch into slices of about :data:`CPU_SLICE` weights (one slice off CPU)."""
    step = a.shape[0] if a.device.type != "cpu" else max(1, CPU_SLICE // max(1, a[0].numel()))
    if step >= a.shape[0]:
        yield (a, *rest)
        return
    for start in range(0, a.shape[0], step):
        yield (a[start:start + step], *(r[start:start + step] for r in rest))


_SUMS = ("mass", "count", "n_queries", "mass_nosink", "count_nosink",
         "n_queries_nosink", "entropy", "n_sinks", "n_samples")


@dataclass(eq=False)
class ShareAccumulator:
    """Streaming sums of attention-modality statistics per layer and head.

    Call :meth:`update` once per (batch, layer) with the layer's attention
    ``(B, H, T, T)``; sums live on the attention's device (allocated at the first
    update).  Fields (``L`` layers, ``H`` heads, ``A = 3`` groups):

    * ``mass[L, H, A, A]``, ``count[L, H, A, A]``, ``n_queries[L, H, A]`` — see
      :func:`mmdiag.metrics.attention.modality_mass`;
    * ``mass_nosink``, ``count_nosink``, ``n_queries_nosink`` — the same with the
      sink keys of each (sample, layer, head) removed;
    * ``entropy[L, H, A]`` — sum of row entropies (nats) of the valid rows
      (divide by ``n_queries``);
    * ``n_sinks[L, H]`` — number of sink keys found, ``n_samples[L]`` — samples seen.

    ``shares=False`` keeps only the entropy sums (and ``n_queries``, ``n_samples``):
    for a stream of one modality's tokens (a dual encoder's tower), where shares
    between modalities do not exist; the share fields then read NaN. It skips
    most of the work per map (~3x faster on a ViT-B/32 vision tower).
    """

    n_layers: int
    n_heads: int
    sink_threshold: float = DEFAULT_SINK_THRESHOLD
    shares: bool = True
    mass: Optional[torch.Tensor] = field(default=None, repr=False)
    count: Optional[torch.Tensor] = field(default=None, repr=False)
    n_queries: Optional[torch.Tensor] = field(default=None, repr=False)
    mass_nosink: Optional[torch.Tensor] = field(default=None, repr=False)
    count_nosink: Optional[torch.Tensor] = field(default=None, repr=False)
    n_queries_nosink: Optional[torch.Tensor] = field(default=None, repr=False)
    entropy: Optional[torch.Tensor] = field(default=None, repr=False)
    n_sinks: Optional[torch.Tensor] = field(default=None, repr=False)
    n_samples: Optional[torch.Tensor] = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if int(self.n_layers) < 1 or int(self.n_heads) < 1:
            raise ValueError("n_layers and n_heads must be >= 1")
        if not 0.0 < float(self.sink_threshold) <= 1.0:
            raise ValueError(f"sink_threshold must be in (0, 1], got {self.sink_threshold}")

    @property
    def empty(self) -> bool:
        return self.mass is None

    def _alloc(self, device: torch.device) -> None:
        L, H, A = self.n_layers, self.n_heads, N_GROUPS
        z = lambda *shape: torch.zeros(shape, dtype=accumulator_dtype(device), device=device)  # noqa: E731
        self.mass, self.count, self.n_queries = z(L, H, A, A), z(L, H, A, A), z(L, H, A)
        self.mass_nosink, self.count_nosink = z(L, H, A, A), z(L, H, A, A)
        self.n_queries_nosink = z(L, H, A)
        self.entropy, self.n_sinks, self.n_samples = z(L, H, A), z(L, H), z(L)

    def update(self, layer: int, attn: torch.Tensor, groups: torch.Tensor,
               causal: bool = False) -> None:
        """Add one batch of layer ``layer``'s attention ``(B, H, T, T)``."""
        if not 0 <= int(layer) < self.n_layers:
            raise ValueError(f"layer {layer} out of range [0, {self.n_layers})")
        a, groups = check_attention(attn, groups)
        if a.shape[1] != self.n_heads:
            raise ValueError(f"attn has {a.shape[1]} heads, accumulator expects {self.n_heads}")
        if self.empty:
            self._alloc(a.device)
        for part, part_groups in _slices(a, groups):
            if self.shares:
                self._update_shares(int(layer), part, part_groups, causal)
            else:
                self._update_entropy(int(layer), part, part_groups)

    def _update_shares(self, layer: int, a: torch.Tensor, groups: torch.Tensor, causal: bool) -> None:
        """The ``shares=True`` update of one slice of the batch."""
        dev = self.mass.device
        acc = self.mass.dtype
        a, rowmass, rowok = valid_row_mass(a, groups)
        q_oh = group_onehot(groups, a.dtype)
        key_oh = q_oh.unsqueeze(1)
        m, c, nq = mass_count(rowmass, rowok, key_oh, q_oh, causal, acc)
        # sinks and the sink-excluded variant
        sinks = sinks_from_mass(a, groups, rowmass, rowok, self.sink_threshold)  # (B, H, T)
        key_oh_ns = key_oh * (~sinks).unsqueeze(-1).to(a.dtype)
        rowmass_ns = a @ key_oh_ns
        m2, c2, nq2 = mass_count(rowmass_ns, rowok, key_oh_ns, q_oh, causal, acc)
        # entropy over valid keys
        h = row_entropy(a, (groups != GROUP_PAD).unsqueeze(1))  # (B, H, T)
        h = torch.where(rowok, h, torch.zeros_like(h))
        ent = torch.einsum("bta,bht->ha", q_oh.to(acc), h.to(acc))
        li = int(layer)
        for name, val in (("mass", m), ("count", c), ("n_queries", nq), ("mass_nosink", m2),
                          ("count_nosink", c2), ("n_queries_nosink", nq2), ("entropy", ent)):
            getattr(self, name)[li] += val.to(dev)
        self.n_sinks[li] += sinks.sum((0, 2)).to(device=dev, dtype=acc)
        self.n_samples[li] += a.shape[0]

    def update_cross(self, layer: int, attn: torch.Tensor, query_groups: torch.Tensor,
                     key_groups: torch.Tensor) -> None:
        """Add one batch of a cross-attention layer ``(B, H, Q, N)``: ``Q`` queries (``query_groups`` ``(B, Q)``)
        over ``N`` keys (``key_groups`` ``(B, N)``), non-causal.

        The sums equal :meth:`update` on the square ``[queries | keys]`` layout
        (:func:`mmdiag.models.attention_views.square_of`: key rows and query columns
        zero, groups ``[query_groups | key_groups]``) without building it: the key
        rows carry no mass, so only the ``Q`` query rows count; and as in the square, a
        group present among the queries counts as seen by every query (``count``),
        with no mass on it (e.g. ``text->text`` of a cross stream is 0, not NaN).
        """
        if not 0 <= int(layer) < self.n_layers:
            raise ValueError(f"layer {layer} out of range [0, {self.n_layers})")
        if not isinstance(attn, torch.Tensor) or attn.ndim != 4:
            raise ValueError(f"attn: expected a (B, H, Q, N) tensor, got {getattr(attn, 'shape', type(attn))}")
        a = attn.detach()
        if a.dtype not in (torch.float32, torch.float64):
            a = a.float()
        batch, heads, q, n = a.shape
        gq = torch.as_tensor(query_groups, device=a.device).long()
        gk = torch.as_tensor(key_groups, device=a.device).long()
        if tuple(gq.shape) != (batch, q) or tuple(gk.shape) != (batch, n):
            raise ValueError(f"groups: expected ({batch}, {q}) queries and ({batch}, {n}) keys, got "
                             f"{tuple(gq.shape)} and {tuple(gk.shape)}")
        if heads != self.n_heads:
            raise ValueError(f"attn has {heads} heads, accumulator expects {self.n_heads}")
        if self.empty:
            self._alloc(a.device)
        for part, part_q, part_k in _slices(a, gq, gk):
            self._update_cross(int(layer), part, part_q, part_k)

    def _update_cross(self, li: int, a: torch.Tensor, gq: torch.Tensor, gk: torch.Tensor) -> None:
        """:meth:`update_cross` on one slice of the batch."""
        batch = a.shape[0]
        dev, acc = self.mass.device, self.mass.dtype
        q_oh, k_oh = group_onehot(gq, a.dtype), group_onehot(gk, a.dtype)  # (B, Q, A), (B, N, A)
        key_oh = k_oh.unsqueeze(1)  # (B, 1, N, A)
        qvalid = (gq != GROUP_PAD).unsqueeze(1)  # (B, 1, Q)
        rowmass = a @ key_oh  # (B, H, Q, A)
        if not bool(torch.isfinite(rowmass).all()):
            if bool((~torch.isfinite(rowmass).all(-1) & qvalid).any()):
                raise ValueError("attn: non-finite attention weights in a valid query row")
            a = a.masked_fill(~qvalid.unsqueeze(-1), 0.0)
            rowmass = a @ key_oh
        rowok = qvalid & (rowmass.sum(-1) > 0)
        h = row_entropy(a, (gk != GROUP_PAD).unsqueeze(1))  # (B, H, Q)
        h = torch.where(rowok, h, torch.zeros_like(h))
        self.entropy[li] += torch.einsum("bta,bht->ha", q_oh.to(acc), h.to(acc)).to(dev)
        if not self.shares:
            self.n_queries[li] += torch.einsum("bta,bht->ha", q_oh.to(acc), rowok.to(acc)).to(dev)
            self.n_samples[li] += batch
            return
        in_queries = q_oh.sum(1) > 0  # (B, A): groups among the queries (the square's zero key columns)
        seen = (in_queries | (k_oh.sum(1) > 0)).to(a.dtype)[:, None, None, :]  # (B, 1, 1, A)
        m, c, nq = mass_count(rowmass, rowok, seen, q_oh, False, acc)
        sinks = sinks_from_mass(a, gk, rowmass, rowok, self.sink_threshold)  # (B, H, N): query keys never sink
        key_oh_ns = key_oh * (~sinks).unsqueeze(-1).to(a.dtype)
        seen_ns = (in_queries.unsqueeze(1) | (key_oh_ns.sum(-2) > 0)).to(a.dtype).unsqueeze(-2)  # (B, H, 1, A)
        m2, c2, nq2 = mass_count(a @ key_oh_ns, rowok, seen_ns, q_oh, False, acc)
        for name, val in (("mass", m), ("count", c), ("n_queries", nq), ("mass_nosink", m2),
                          ("count_nosink", c2), ("n_queries_nosink", nq2)):
            getattr(self, name)[li] += val.to(dev)
        self.n_sinks[li] += sinks.sum((0, 2)).to(device=dev, dtype=acc)
        self.n_samples[li] += batch

    def _update_entropy(self, layer: int, a: torch.Tensor, groups: torch.Tensor) -> None:
        """The ``shares=False`` update: row entropies over valid keys, per query group and head."""
        qvalid = groups != GROUP_PAD  # (B, T)
        keys = qvalid.to(a.dtype)[:, None, :, None]  # (B, 1, T, 1)
        s = (a @ keys).squeeze(-1)  # (B, H, T): mass on valid keys
        rows = qvalid.unsqueeze(1).expand_as(s)
        finite = torch.isfinite(s)
        if not bool(finite.all()):
            if bool((~finite & rows).any()):
                raise ValueError("attn: non-finite attention weights in a valid query row")
            a = a.masked_fill(~rows.unsqueeze(-1), 0.0)  # e.g. NaN rows of fully masked (PAD) queries
            s = (a @ keys).squeeze(-1)
        rowok = rows & (s > 0)
        s_safe = torch.where(rowok, s, torch.ones_like(s))
        a_log_a = torch.log(a.clamp_min(torch.finfo(a.dtype).tiny)).mul_(a)
        h = torch.log(s_safe) - (a_log_a @ keys).squeeze(-1) / s_safe
        h = torch.where(rowok, h, torch.zeros_like(h))
        acc = self.entropy.dtype
        q = group_onehot(groups, acc)
        self.entropy[layer] += torch.einsum("bta,bht->ha", q, h.to(acc)).to(self.entropy.device)
        self.n_queries[layer] += torch.einsum("bta,bht->ha", q, rowok.to(acc)).to(self.n_queries.device)
        self.n_samples[layer] += a.shape[0]

    def update_layers(self, attentions: Sequence[torch.Tensor], groups: torch.Tensor,
                      causal: bool = False, first_layer: int = 0) -> None:
        """Update layers ``first_layer, first_layer+1, ...`` from a sequence of maps."""
        for i, att in enumerate(attentions):
            self.update(first_layer + i, att, groups, causal)

    def merge(self, other: "ShareAccumulator") -> "ShareAccumulator":
        """Add ``other``'s sums into ``self`` (in place); returns ``self``."""
        if (other.n_layers, other.n_heads) != (self.n_layers, self.n_heads):
            raise ValueError("cannot merge accumulators of different (layers, heads)")
        if float(other.sink_threshold) != float(self.sink_threshold):
            raise ValueError("cannot merge accumulators with different sink_threshold")
        if other.shares != self.shares:
            raise ValueError("cannot merge an accumulator of shares with an entropy-only one")
        if other.empty:
            return self
        if self.empty:
            self._alloc(other.mass.device)
        for name in _SUMS:
            mine = getattr(self, name)
            mine += getattr(other, name).to(device=mine.device, dtype=mine.dtype)
        return self

    def result(self) -> AttentionStats:
        """Averages as numpy arrays (NaN where a count is 0); the fields and shapes are :class:`AttentionStats`'s.

        ``share`` = mass / count, ``share_total`` = mass / n_queries (sums to 1 over
        key groups), ``*_mean`` the mean over heads, entropies in nats.
        """
        if self.empty:
            self._alloc(torch.device("cpu"))
        np_ = {name: getattr(self, name).detach().to("cpu", torch.float64).numpy()
               for name in _SUMS}

        def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)

        out: dict[str, np.ndarray] = {}
        for suffix in ("", "_nosink"):
            mass, count = np_["mass" + suffix], np_["count" + suffix]
            nq = np_["n_queries" + suffix]
            share = ratio(mass, count)
            out["share" + suffix] = share
            out["share_mean" + suffix] = _nanmean_heads(share)
            out["share_total" + suffix] = ratio(mass, nq[..., None])
            out["count" + suffix] = count
        ent = ratio(np_["entropy"], np_["n_queries"])
        out["entropy"] = ent
        out["entropy_mean"] = _nanmean_heads(ent)
        out["n_queries"] = np_["n_queries"]
        out["n_samples"] = np_["n_samples"]
        out["sinks_per_sample"] = ratio(np_["n_sinks"], np_["n_samples"][:, None])
        return AttentionStats(**out)

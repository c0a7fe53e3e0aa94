"""Training of structural probes for every layer at once (Hewitt & Manning 2019).

A structural probe (Hewitt & Manning, NAACL 2019, john-hewitt/structural-probes;
used for multimodal BERTs by Milewski et al., ACL 2022, arXiv:2203.09306) is a
linear map ``B`` (rank x D) such that

* depth probe:    ``d_i  = ||B h_i||^2``          approximates the tree depth of word i;
* distance probe: ``d_ij = ||B (h_i - h_j)||^2``  approximates the tree distance of i, j.

Loss (Hewitt's): L1 between prediction and gold, summed over a sentence's words
(depth) or word pairs (distance), divided by the sentence length n (depth) or
n^2 (distance), averaged over the sentences of a batch.

Here one tensor program trains one probe per layer for all L layers together:
``B`` has shape (L, rank, D); a minibatch of sentences is padded to
(L, S, Tmax, D) with a mask; each layer has its own Adam moments, learning rate,
plateau schedule, early stopping and best-dev snapshot (Adam is elementwise,
so summing the per-layer losses keeps the layers independent).  Several
probes on the same states (a modality's depth and distance probes, or a
control task's) train side by side in the same way (:func:`fit_probes`):
one gather of the states and one matrix product per minibatch serve them all.

Regimens:

* ``"paper"`` — Hewitt's: init ``U(-0.05, 0.05)``, batches of 20 sentences,
  Adam lr 1e-3, at most 40 epochs, lr x0.1 when the dev loss does not improve
  (``ReduceLROnPlateau``, patience 0, relative threshold 1e-4), stop a layer
  after 5 epochs without a dev improvement of more than 1e-4, keep each
  layer's best-dev weights.
* ``"fast"`` (default) — same loss, model and per-layer bookkeeping (plateau
  schedule, early stopping, best-dev snapshot); the ``U(-0.05, 0.05)`` init is
  rescaled per layer so that the mean prediction equals the mean gold value
  on the first training sentences; batches of 50 sentences (fewer when that
  leaves under 10 steps per epoch), Adam lr 1e-2 × min(1, √(64/D)) for
  states of width D, at most 8 epochs, stop a layer after 2 epochs without dev
  improvement.  The width scaling was added after lr 1e-2 diverged on
  768-wide ViT-B/32 region states with ~70 training sentences (image NSpr
  -0.30, root accuracy 0; with it 0.76 and 1.0; ``python -m mmdiag.bench_probes``).
  Unless a rank is given, ``fast`` fits rank-min(D, 128) probes (Hewitt & Manning
  2019 found probe quality saturating well below full rank): on ViT-B/32 states of
  256 synthetic scenes, rank 128 scored at least as well as full rank on every
  metric (text DSpr 0.812 vs 0.806, image DSpr 0.693 vs 0.599) in a quarter of
  the time (3.5 s vs 13.7 s).  Measured on synthetic
  BERT-like states (1,500 random trees of 3-30 words, 60/20/20 split,
  D = 256, 3 layers, anisotropic noise, an offset dimension; CPU, 1 thread;
  measured with lr 1e-2, before the width scaling below):
  best-layer test DSpr paper 0.973 / fast 0.973 (layers 0.576/0.942/0.973 vs
  0.547/0.940/0.973) in 165 s / 18 s of CPU time; best-layer NSpr paper
  0.962 / fast 0.963 in 138 s / 17-26 s (``tests/metrics/test_probe_fit.py``
  checks the agreement on a small planted case).  The time ratio depends on
  when the paper regimen stops early.

Chance with a fitted probe: on random Gaussian states (D = 16, trees of 4-10
words, ~30 training sentences) the fast regimen reaches test DSpr 0.39, UUAS
0.28, NSpr -0.06, root accuracy 0.10; on the same trees embedded exactly
(``||h_i - h_j||^2`` = tree distance): DSpr 0.97, UUAS 1.0, NSpr 0.95, root
accuracy 1.0 (``tests/metrics/test_probe_fit.py``).

Sentences are scored with the metrics of :mod:`mmdiag.metrics.probe_scores`.
Note that NSpr/DSpr stay below 1 even for an almost exact fit: gold depths and
distances are full of ties, which any real-valued prediction breaks.

Control tasks (Hewitt & Liang, EMNLP 2019, arXiv:1909.03368) give each word
*type* a random structure so that selectivity = probe score - control score
tells apart what the representation encodes from what a probe can memorise:
:func:`control_depths`, :func:`control_heads`, :func:`control_distances`.
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import numpy as np
import torch

from mmdiag.metrics.probe_scores import tree_depths, tree_distances

__all__ = [
    "ProbeData",
    "ProbeFit",
    "Regimen",
    "PAPER_REGIMEN",
    "FAST_REGIMEN",
    "fit_depth_probes",
    "fit_distance_probes",
    "fit_probes",
    "ProbeTask",
    "split_indices",
    "control_depths",
    "control_heads",
    "control_distances",
]

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence[float]]


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------

@dataclass
class ProbeData:
    """Word states of a set of sentences and their gold structure.

    ``states``: (L, W, D) tensor, the states of the W words of all sentences
    concatenated in order, for each of L layers.  ``lengths``: words per
    sentence (sum = W).  ``heads``: per sentence, 1-based heads (0 = root);
    gold depths/distances are derived from them unless given.  ``depths``:
    optional gold depths, a (W,) array/tensor or a list of per-sentence arrays
    (e.g. :func:`control_depths`).  ``distances``: optional list of per-sentence
    (n, n) gold distance matrices (e.g. :func:`control_distances`).  ``upos``:
    optional UPOS tags per sentence (for root accuracy and UUAS).
    """

    states: torch.Tensor
    lengths: tuple[int, ...]
    heads: Optional[tuple[tuple[int, ...], ...]] = None
    depths: Optional[torch.Tensor] = None
    distances: Optional[list[np.ndarray]] = None
    upos: Optional[tuple[tuple[str, ...], ...]] = None

    def __post_init__(self) -> None:
        if not isinstance(self.states, torch.Tensor):
            self.states = torch.as_tensor(np.asarray(self.states))
        if self.states.ndim != 3:
            raise ValueError(f"ProbeData.states: expected (L, W, D), got {tuple(self.states.shape)}")
        self.lengths = tuple(int(n) for n in self.lengths)
        if any(n < 1 for n in self.lengths):
            raise ValueError("ProbeData.lengths: every sentence needs at least one word")
        W = sum(self.lengths)
        if self.states.shape[1] != W:
            raise ValueError(f"ProbeData: states hold {self.states.shape[1]} words but the "
                             f"lengths add up to {W}")
        if self.heads is not None:
            self.heads = tuple(tuple(int(h) for h in hs) for hs in self.heads)
            if [len(h) for h in self.heads] != list(self.lengths):
                raise ValueError("ProbeData.heads: per-sentence lengths differ from lengths")
        if self.upos is not None:
            self.upos = tuple(tuple(u) for u in self.upos)
            if [len(u) for u in self.upos] != list(self.lengths):
                raise ValueError("ProbeData.upos: per-sentence lengths differ from lengths")
        if self.depths is None and self.heads is not None:
            self.depths = np.concatenate([tree_depths(h) for h in self.heads])
        if self.depths is not None:
            d = self.depths
            if isinstance(d, (list, tuple)):
                if [len(x) for x in d] != list(self.lengths):
                    raise ValueError("ProbeData.depths: per-sentence lengths differ from lengths")
                d = np.concatenate([np.asarray(x, dtype=np.float64) for x in d])
            d = torch.as_tensor(np.asarray(d.detach().cpu() if isinstance(d, torch.Tensor) else d,
                                           dtype=np.float32))
            if d.shape != (W,):
                raise ValueError(f"ProbeData.depths: expected ({W},), got {tuple(d.shape)}")
            self.depths = d
        if self.distances is not None:
            self.distances = [np.asarray(x, dtype=np.float64) for x in self.distances]
            if [x.shape for x in self.distances] != [(n, n) for n in self.lengths]:
                raise ValueError("ProbeData.distances: expected one (n, n) matrix per sentence")

    @classmethod
    def from_trees(cls, states: torch.Tensor, trees: Sequence) -> "ProbeData":
        """Build from ``states`` (L, W, D) and :class:`~mmdiag.data.types.DepTree` s."""
        return cls(states=states, lengths=tuple(len(t.heads) for t in trees),
                   heads=tuple(tuple(t.heads) for t in trees),
                   upos=tuple(tuple(t.upos) for t in trees) if all(
                       len(t.upos) == len(t.heads) for t in trees) else None)

    @property
    def n_sentences(self) -> int:
        return len(self.lengths)

    @property
    def offsets(self) -> np.ndarray:
        """Index of each sentence's first word in W, plus W at the end."""
        return np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)

    def gold_depths(self) -> list[np.ndarray]:
        """Gold depth targets per sentence (float64)."""
        if self.depths is None:
            raise ValueError("ProbeData has neither heads nor depths")
        off = self.offsets
        d = self.depths.numpy().astype(np.float64)
        return [d[off[s]:off[s + 1]] for s in range(self.n_sentences)]

    def gold_distances(self) -> list[np.ndarray]:
        """Gold distance targets per sentence: ``distances`` or tree distances of ``heads``."""
        if self.distances is not None:
            return list(self.distances)
        if self.heads is None:
            raise ValueError("ProbeData has neither heads nor distances")
        return [tree_distances(h) for h in self.heads]

    def subset(self, indices: Sequence[int]) -> "ProbeData":
        """The sentences ``indices`` (in that order) as a new :class:`ProbeData`."""
        idx = [int(i) for i in indices]
        off = self.offsets
        words = (np.concatenate([np.arange(off[i], off[i + 1]) for i in idx])
                 if idx else np.zeros(0, dtype=np.int64))
        wt = torch.as_tensor(words, dtype=torch.long, device=self.states.device)
        pick = lambda seq: None if seq is None else tuple(seq[i] for i in idx)  # noqa: E731
        return ProbeData(
            states=self.states.index_select(1, wt),
            lengths=tuple(self.lengths[i] for i in idx),
            heads=pick(self.heads),
            depths=None if self.depths is None else self.depths[torch.as_tensor(words)],
            distances=None if self.distances is None else [self.distances[i] for i in idx],
            upos=pick(self.upos),
        )


def split_indices(n_sentences: int, seed: int,
                  fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random train/dev/test split of ``range(n_sentences)``.

    A permutation from ``numpy.random.default_rng(seed)`` is cut into parts of
    sizes ``floor(f * n)``, the remaining sentences going one each to the parts
    with the largest remainders ``f * n - floor(f * n)`` (ties to the earlier
    part).  Each part with a positive fraction gets at least one sentence when
    ``n`` allows it (taken from the largest part).  Fractions must be >= 0 and
    sum to 1.  Returns three sorted int64 arrays, disjoint, covering 0..n-1;
    the same ``(n, seed, fractions)`` always gives the same split.
    """
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (3,) or np.any(f < 0) or not math.isclose(float(f.sum()), 1.0, abs_tol=1e-9):
        raise ValueError(f"split_indices: fractions must be 3 numbers >= 0 summing to 1, "
                         f"got {fractions}")
    n = int(n_sentences)
    if n < 0:
        raise ValueError("split_indices: n_sentences must be >= 0")
    raw = f * n
    sizes = np.floor(raw).astype(np.int64)
    rest = n - int(sizes.sum())
    order = sorted(range(3), key=lambda k: (-(raw[k] - sizes[k]), k))
    for k in order[:rest]:
        sizes[k] += 1
    for k in range(3):
        if f[k] > 0 and sizes[k] == 0:
            big = int(np.argmax(sizes))
            if sizes[big] > 1:
                sizes[big] -= 1
                sizes[k] += 1
    perm = np.random.default_rng(seed).permutation(n)
    a, b = int(sizes[0]), int(sizes[0] + sizes[1])
    return np.sort(perm[:a]), np.sort(perm[a:b]), np.sort(perm[b:])


# --------------------------------------------------------------------------
# control tasks
# --------------------------------------------------------------------------

def _type_uniform(word: str, seed: int, salt: str) -> float:
    """A deterministic uniform number in [0, 1) for (word type, seed)."""
    h = hashlib.blake2b(f"{seed}\x00{salt}\x00{word}".encode("utf-8", "surrogatepass"),
                        digest_size=8).digest()
    return int.from_bytes(h, "little") / 2.0 ** 64


def control_depths(words: Sequence[Sequence[str]], seed: int,
                   gold_depths: Optional[Sequence[ArrayLike]] = None,
                   max_depth: int = 10) -> list[np.ndarray]:
    """Control depth targets (after Hewitt & Liang 2019, arXiv:1909.03368).

    Each word *type* (exact form) gets one fixed random depth, the same in
    every sentence: drawn from the empirical distribution of ``gold_depths``
    (pooled over the corpus) when given, else uniformly from ``0..max_depth``.
    The draw is a hash of ``(seed, type)``, so a type gets the same depth
    whether the corpus is processed whole or split by split (as long as
    ``gold_depths`` is the same pooled sample).
    """
    pool = None
    if gold_depths is not None:
        pool = np.sort(np.concatenate([np.asarray(g, dtype=np.float64).ravel()
                                       for g in gold_depths]))
        if pool.size == 0:
            raise ValueError("control_depths: gold_depths is empty")
    out = []
    for sent in words:
        u = np.array([_type_uniform(w, seed, "depth") for w in sent])
        if pool is not None:
            out.append(pool[np.minimum((u * pool.size).astype(np.int64), pool.size - 1)])
        else:
            out.append(np.floor(u * (max_depth + 1)).astype(np.float64))
    return out


def control_heads(words: Sequence[Sequence[str]], seed: int) -> list[np.ndarray]:
    """Control trees: each word type has a fixed random attachment behaviour.

    Adapted from Hewitt & Liang's dependency control task (attach to itself,
    the first or the last word), made into a tree: the first word is the root;
    the last word attaches to the first; every other word attaches, according
    to its type's behaviour (drawn from ``(seed, type)``), to the previous
    word, the first word or the last word.  Returns 1-based heads (0 = root).
    """
    out = []
    for sent in words:
        n = len(sent)
        heads = np.zeros(n, dtype=np.int64)
        for i in range(1, n):
            if i == n - 1:
                heads[i] = 1
                continue
            b = int(_type_uniform(sent[i], seed, "attach") * 3)
            heads[i] = (i, 1, n)[b]  # 1-based: previous word, first word, last word
        out.append(heads)
    return out


def control_distances(words: Sequence[Sequence[str]], seed: int) -> list[np.ndarray]:
    """Control distance targets: tree distances of :func:`control_heads`."""
    return [tree_distances(h) for h in control_heads(words, seed)]


# --------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Regimen:
    """Optimisation settings of a probe-training regimen."""

    name: str
    batch_size: int
    lr: float
    max_epochs: int
    stop_patience: int          # stop a layer after this many epochs without dev gain
    scaled_init: bool           # rescale the init so mean prediction = mean gold
    min_steps_per_epoch: int = 0  # shrink the batch on small training sets
    plateau_factor: float = 0.1
    init_range: float = 0.05
    #: scale the learning rate by min(1, sqrt(64 / D)) for states of width D (wide states need smaller steps)
    width_scaled_lr: bool = False
    #: default probe rank when none is asked for: min(D, max_rank); 0 = D (full rank, Hewitt's default)
    max_rank: int = 0

    def batch_for(self, n_train: int) -> int:
        """Sentences per step: ``batch_size``, smaller when that would leave fewer
        than ``min_steps_per_epoch`` steps per epoch."""
        if self.min_steps_per_epoch <= 0:
            return self.batch_size
        return max(1, min(self.batch_size, math.ceil(n_train / self.min_steps_per_epoch)))


PAPER_REGIMEN = Regimen("paper", batch_size=20, lr=1e-3, max_epochs=40, stop_patience=5,
                        scaled_init=False)
FAST_REGIMEN = Regimen("fast", batch_size=50, lr=1e-2, max_epochs=8, stop_patience=2,
                       scaled_init=True, min_steps_per_epoch=10, width_scaled_lr=True, max_rank=128)
_REGIMENS = {"paper": PAPER_REGIMEN, "fast": FAST_REGIMEN}

_EVAL_BATCH = 100
_KINDS = ("depth", "distance")


@dataclass
class ProbeFit:
    """Probes fitted for every layer.

    ``B``: (L, rank, D) best-dev probe matrices (on the training device);
    ``kind``: ``"depth"`` or ``"distance"``; ``best_dev_loss``: (L,) the dev loss
    of the kept weights (Hewitt's loss, mean over dev sentences);
    ``best_epoch``: (L,) the 0-based epoch they come from; ``epochs``: (L,)
    epochs each layer trained before it stopped; ``seconds``: wall time of
    the fit (of the whole joint program when several probes were fitted
    together by :func:`fit_probes`); ``regimen``: its name; ``history``: per
    epoch, the (L,) dev losses (NaN for layers already stopped).
    """

    B: torch.Tensor
    kind: str
    best_dev_loss: np.ndarray
    best_epoch: np.ndarray
    epochs: np.ndarray
    seconds: float
    regimen: str
    history: list[np.ndarray] = field(default_factory=list, repr=False)

    @property
    def n_layers(self) -> int:
        return int(self.B.shape[0])

    def _projections(self, data: ProbeData):
        """Yield (sentence indices, P (L, b, T, rank) on the device) batches."""
        words = _Words(data, self.B.device)
        S = data.n_sentences
        for start in range(0, S, _EVAL_BATCH):
            batch = words.batch(torch.arange(start, min(S, start + _EVAL_BATCH), device=self.B.device))
            with torch.no_grad():
                P = words.project(self.B.float(), batch, None)
            yield range(start, min(S, start + _EVAL_BATCH)), P

    def predict_depths(self, data: ProbeData) -> list[list[np.ndarray]]:
        """``||B_l h_i||^2`` per layer l, per sentence: ``out[l][s]`` has shape (n_s,)."""
        _check_dim(self, data)
        out: list[list[np.ndarray]] = [[] for _ in range(self.n_layers)]
        for sents, P in self._projections(data):
            d = (P * P).sum(-1).double().cpu().numpy()
            for k, s in enumerate(sents):
                for l in range(self.n_layers):
                    out[l].append(d[l, k, :data.lengths[s]].copy())
        return out

    def predict_distances(self, data: ProbeData) -> list[list[np.ndarray]]:
        """``||B_l (h_i - h_j)||^2`` per layer, per sentence: ``out[l][s]`` is (n_s, n_s).

        Computed from explicit differences (not the Gram expansion) so the
        diagonal is exactly 0 and the matrices are exactly symmetric.
        """
        _check_dim(self, data)
        out: list[list[np.ndarray]] = [[] for _ in range(self.n_layers)]
        for sents, P in self._projections(data):
            with torch.no_grad():
                dist = torch.cdist(P, P, compute_mode="donot_use_mm_for_euclid_dist").pow(2)
            dist = dist.double().cpu().numpy()
            for k, s in enumerate(sents):
                m = data.lengths[s]
                for l in range(self.n_layers):
                    d = dist[l, k, :m, :m].copy()
                    d = (d + d.T) / 2.0
                    np.fill_diagonal(d, 0.0)
                    out[l].append(d)
        return out


def _check_dim(fit: ProbeFit, data: ProbeData) -> None:
    if data.states.shape[0] != fit.B.shape[0] or data.states.shape[2] != fit.B.shape[2]:
        raise ValueError(f"states of shape (L={data.states.shape[0]}, W, D={data.states.shape[2]}) "
                         f"do not fit probes of shape {tuple(fit.B.shape)}")


@dataclass
class _Batch:
    """A minibatch of sentences: ``sel`` (b,), lengths ``n`` (b,), word ``mask`` (b, T),
    the flat indices of its ``words`` (sum n,) and their positions ``slots`` in the (b * T) padding."""

    sel: torch.Tensor
    n: torch.Tensor
    mask: torch.Tensor
    words: torch.Tensor
    slots: torch.Tensor


class _Words:
    """The states of a :class:`ProbeData` on a device, cut into padded minibatches."""

    def __init__(self, data: ProbeData, device: torch.device) -> None:
        self.data = data
        self.states = data.states.to(device)
        lengths = np.asarray(data.lengths, dtype=np.int64)
        self.n = torch.as_tensor(lengths, device=device)
        self.off = torch.as_tensor(data.offsets[:-1], device=device)
        self.ar = torch.arange(int(lengths.max()) if lengths.size else 0, device=device)

    def batch(self, sel: torch.Tensor) -> _Batch:
        n = self.n[sel]
        T = int(n.max())
        mask = self.ar[None, :T] < n[:, None]
        words = (self.off[sel][:, None] + self.ar[None, :T])[mask]
        return _Batch(sel, n, mask, words, mask.reshape(-1).nonzero().squeeze(1))

    def project(self, Bm: torch.Tensor, batch: _Batch, layers: Optional[torch.Tensor]) -> torch.Tensor:
        """``P[l, s, t] = B_l h_{l, s, t}``: (La, R, D) probes -> (La, b, T, R), zero at padding.

        Only the batch's words are multiplied (no work on padding); the result is
        scattered into the padded layout, which the distance loss needs.
        """
        return self.pad(torch.bmm(self.gather(batch, layers), Bm.transpose(1, 2)), batch)

    def gather(self, batch: _Batch, layers: Optional[torch.Tensor]) -> torch.Tensor:
        """The states of the batch's words, (La, sum n, D) float32."""
        if layers is None:
            X = self.states.index_select(1, batch.words)
        else:
            X = self.states[layers[:, None], batch.words[None, :]]
        return X.float()

    @staticmethod
    def pad(P: torch.Tensor, batch: _Batch) -> torch.Tensor:
        """Per-word projections (La, sum n, R) -> (La, b, T, R), zero at padding."""
        b, T = batch.mask.shape
        padded = P.new_zeros(P.shape[0], b * T, P.shape[2]).index_copy(1, batch.slots, P)
        return padded.reshape(P.shape[0], b, T, P.shape[2])


class _Targets:
    """Gold depths or distances of one probe task, cut to minibatches of :class:`_Words`."""

    def __init__(self, data: ProbeData, kind: str, words: _Words) -> None:
        self.kind = kind
        self.words = words
        device = words.n.device
        if kind == "depth":
            if data.depths is None:
                raise ValueError("depth probe: ProbeData has neither heads nor depths")
            self.target = data.depths.to(device)
        else:
            mats = data.gold_distances()
            self.target = torch.as_tensor(np.concatenate([m.ravel() for m in mats]), dtype=torch.float32,
                                          device=device)
            sq = np.asarray(data.lengths, dtype=np.int64) ** 2
            self.doff = torch.as_tensor(np.concatenate([[0], np.cumsum(sq)[:-1]]), device=device)

    def batch(self, batch: _Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded targets and their 0/1 weights: (b, T) for depths, (b, T, T) for distances."""
        mask, n, sel = batch.mask, batch.n, batch.sel
        T = mask.shape[1]
        ar = self.words.ar[:T]
        if self.kind == "depth":
            idx = torch.where(mask, self.words.off[sel][:, None] + ar[None, :],
                              torch.zeros_like(mask, dtype=torch.long))
            return self.target[idx] * mask, mask.float()
        m2 = mask[:, :, None] & mask[:, None, :]
        idx = self.doff[sel][:, None, None] + ar[None, :, None] * n[:, None, None] + ar[None, None, :]
        idx = torch.where(m2, idx, torch.zeros_like(idx))
        m2 = m2 & (ar[:, None] != ar[None, :])  # the diagonal is 0 = 0 by construction
        return self.target[idx] * m2, m2.float()


def _predictions(P: torch.Tensor, kind: str) -> torch.Tensor:
    """Probe predictions from projections P (La, b, T, rank): (La, b, T) depths or (La, b, T, T) distances.

    Distances use ``||p_i||^2 + ||p_j||^2 - 2 p_i.p_j`` (clamped at 0) so that no
    (La, b, T, T, rank) difference tensor is built.
    """
    sq = (P * P).sum(-1)
    if kind == "depth":
        return sq
    G = torch.matmul(P, P.transpose(-1, -2))
    return (sq[..., :, None] + sq[..., None, :] - 2.0 * G).clamp_min(0.0)


def _sentence_loss(P: torch.Tensor, y: torch.Tensor, m: torch.Tensor, n: torch.Tensor, kind: str) -> torch.Tensor:
    """Hewitt's normalised L1 loss of each sentence for each layer: (La, b)."""
    err = (_predictions(P, kind) - y).abs() * m
    if kind == "depth":
        return err.sum(-1) / n
    return err.sum((-1, -2)) / (n * n)


@dataclass(frozen=True)
class ProbeTask:
    """One probe to fit for every layer: its ``kind`` (``"depth"`` or ``"distance"``)
    and its ``train``/``dev`` data (gold targets from their heads, depths or distances)."""

    kind: str
    train: ProbeData
    dev: ProbeData


def _same_words(a: ProbeData, b: ProbeData) -> bool:
    return a.lengths == b.lengths and (a.states is b.states or (
        a.states.shape == b.states.shape and torch.equal(a.states, b.states)))


def _rank_for(cfg: Regimen, D: int, rank: Optional[int]) -> int:
    r = (min(D, cfg.max_rank) if cfg.max_rank else D) if rank is None else int(rank)
    if r < 1:
        raise ValueError("rank must be >= 1")
    return r


def _init_scale(B: torch.Tensor, words: _Words, targets: _Targets, n_train: int) -> torch.Tensor:
    """Per-layer factor for B so that the mean prediction equals the mean gold value
    on the first training sentences (the fast regimen's init); 1 where undefined."""
    batch = words.batch(torch.arange(min(n_train, _EVAL_BATCH), device=B.device))
    with torch.no_grad():
        y, m = targets.batch(batch)
        pred = _predictions(words.project(B, batch, None), targets.kind)
        pred_sum = (pred * m).sum(tuple(range(1, pred.ndim)))
        scale = torch.sqrt((y * m).sum() / pred_sum)
    ok = torch.isfinite(scale) & (scale > 0)
    return torch.where(ok, scale, torch.ones_like(scale))


def _dev_losses(B: torch.Tensor, words: _Words, targets: Sequence[_Targets], rank: int,
                layers: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean over dev sentences of each task's per-sentence loss, per layer: (K, La) float64."""
    S = words.data.n_sentences
    Bm = B if layers is None else B.index_select(0, layers)
    total = torch.zeros(len(targets), Bm.shape[0], device=B.device, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, S, _EVAL_BATCH):
            batch = words.batch(torch.arange(start, min(S, start + _EVAL_BATCH), device=B.device))
            P = words.project(Bm, batch, layers)
            for k, t in enumerate(targets):
                y, m = t.batch(batch)
                Pk = P[..., k * rank:(k + 1) * rank]
                total[k] += _sentence_loss(Pk, y, m, batch.n.float(), t.kind).sum(1).double()
    return total / S


def fit_probes(tasks: Sequence[ProbeTask], rank: Optional[int] = None, regimen: str = "fast", seed: int = 0,
               device: Optional[Union[str, torch.device]] = None) -> list[ProbeFit]:
    """Fit several probes on the same word states in one batched program: one :class:`ProbeFit` per task.

    The tasks must share their words (same states and lengths in train, and in
    dev); they differ in kind and gold targets, e.g. the depth probe, the
    distance probe and the control task's distance probe of one modality.  Each
    task's result is that of fitting it alone with the same arguments (same init
    draw, same minibatches, its own per-layer Adam moments, plateau schedule,
    early stopping and best-dev snapshot): the probes of all tasks sit side by
    side in one ``(L, K * rank, D)`` tensor, so the states are gathered once per
    minibatch and projected by one matrix product, and the summed loss keeps the
    tasks' gradients apart.  A probe that has stopped early keeps its weights
    (learning rate 0) while the others train on.
    """
    t0 = time.perf_counter()
    if regimen not in _REGIMENS:
        raise ValueError(f"regimen must be one of {sorted(_REGIMENS)}, got {regimen!r}")
    if not tasks:
        raise ValueError("fit_probes: no tasks")
    for t in tasks:
        if t.kind not in _KINDS:
            raise ValueError(f"probe kind must be one of {_KINDS}, got {t.kind!r}")
    cfg = _REGIMENS[regimen]
    train, dev = tasks[0].train, tasks[0].dev
    if train.states.shape[0] != dev.states.shape[0] or train.states.shape[2] != dev.states.shape[2]:
        raise ValueError("train and dev states differ in number of layers or width")
    if any(not _same_words(t.train, train) or not _same_words(t.dev, dev) for t in tasks[1:]):
        raise ValueError("fit_probes: the tasks must share their train and dev states (they differ only in targets)")
    if train.n_sentences == 0 or dev.n_sentences == 0:
        raise ValueError("probe fitting needs at least one train and one dev sentence")
    dev_ = torch.device(device) if device is not None else train.states.device
    L, _, D = train.states.shape
    r, K = _rank_for(cfg, D, rank), len(tasks)
    wtrain, wdev = _Words(train, dev_), _Words(dev, dev_)
    ytrain = [_Targets(t.train, t.kind, wtrain) for t in tasks]
    ydev = [_Targets(t.dev, t.kind, wdev) for t in tasks]

    gen = torch.Generator().manual_seed(int(seed))
    B0 = ((torch.rand(L, r, D, generator=gen) * 2 - 1) * cfg.init_range).to(dev_)
    blocks = [B0 * _init_scale(B0, wtrain, y, train.n_sentences)[:, None, None] if cfg.scaled_init else B0
              for y in ytrain]
    B = torch.cat(blocks, 1).contiguous()  # task k's probes are rows k*r .. (k+1)*r - 1

    base_lr = cfg.lr * min(1.0, math.sqrt(64.0 / D)) if cfg.width_scaled_lr else cfg.lr
    lr = np.full((K, L), base_lr)
    m1, m2 = torch.zeros_like(B), torch.zeros_like(B)
    steps = torch.zeros(L, device=dev_)
    beta1, beta2, eps = 0.9, 0.999, 1e-8

    best = np.full((K, L), np.inf)
    sched_best = np.full((K, L), np.inf)
    best_B = B.clone()
    best_epoch = np.full((K, L), -1, dtype=np.int64)
    epochs = np.zeros((K, L), dtype=np.int64)
    active = np.ones((K, L), dtype=bool)
    history: list[list[np.ndarray]] = [[] for _ in range(K)]
    S = train.n_sentences
    batch_size = cfg.batch_for(S)

    for epoch in range(cfg.max_epochs):
        on = active.any(0)
        everyone = bool(on.all())
        act = None if everyone else torch.as_tensor(np.flatnonzero(on), device=dev_)
        weight = torch.as_tensor(active[:, on].T, dtype=torch.float32, device=dev_)          # (La, K)
        step_lr = torch.as_tensor((lr * active)[:, on].T, dtype=torch.float32, device=dev_)  # (La, K)
        step_lr = step_lr.repeat_interleave(r, dim=1)[:, :, None]                            # (La, K*r, 1)
        perm = torch.randperm(S, generator=gen).to(dev_)
        for start in range(0, S, batch_size):
            batch = wtrain.batch(perm[start:start + batch_size])
            X = wtrain.gather(batch, act)
            Bm = B if everyone else B.index_select(0, act)
            with torch.no_grad():
                flat = torch.bmm(X, Bm.transpose(1, 2)).requires_grad_(True)  # (La, words, K*r)
            P = wtrain.pad(flat, batch)
            n = batch.n.float()
            loss = sum((_sentence_loss(P[..., k * r:(k + 1) * r], *y.batch(batch), n, y.kind).mean(1)
                        * weight[:, k]).sum() for k, y in enumerate(ytrain) if active[k].any())
            # autograd as far as the projections; the gradient of B, dP^T X, by hand so that it comes out
            # contiguous in B's layout (autograd's is a transposed view, which slows every Adam operation)
            (dflat,) = torch.autograd.grad(loss, flat)
            g = torch.bmm(dflat.transpose(1, 2), X)
            with torch.no_grad():
                if everyone:  # Adam in place on the whole tensor
                    steps += 1
                    m1.mul_(beta1).add_(g, alpha=1 - beta1)
                    m2.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                    bc1, bc2 = 1 - beta1 ** steps, 1 - beta2 ** steps
                    denom = (m2 / bc2[:, None, None]).sqrt_().add_(eps)
                    B.addcdiv_(m1 * (step_lr / bc1[:, None, None]), denom, value=-1.0)
                else:
                    steps[act] += 1
                    t = steps[act][:, None, None]
                    ma = m1[act] * beta1 + (1 - beta1) * g
                    va = m2[act] * beta2 + (1 - beta2) * g * g
                    m1[act], m2[act] = ma, va
                    B[act] = Bm.detach() - step_lr * ((ma / (1 - beta1 ** t)) / ((va / (1 - beta2 ** t)).sqrt() + eps))
        epochs[active] += 1
        losses = np.full((K, L), np.nan)
        losses[:, on] = _dev_losses(B, wdev, ydev, r, act).cpu().numpy()
        for k in range(K):
            history[k].append(np.where(active[k], losses[k], np.nan))
            for l in np.flatnonzero(active[k]):
                v = float(losses[k, l])
                # ReduceLROnPlateau(mode="min", factor=0.1, patience=0, threshold=1e-4 rel)
                if v < sched_best[k, l] * (1 - 1e-4):
                    sched_best[k, l] = v
                else:
                    lr[k, l] *= cfg.plateau_factor
                # Hewitt's checkpointing and early stopping
                if v < best[k, l] - 1e-4:
                    best[k, l] = v
                    best_B[l, k * r:(k + 1) * r] = B[l, k * r:(k + 1) * r]
                    best_epoch[k, l] = epoch
                elif best_epoch[k, l] < epoch - (cfg.stop_patience - 1):
                    active[k, l] = False
        if not active.any():
            break

    seconds = time.perf_counter() - t0
    return [ProbeFit(B=best_B[:, k * r:(k + 1) * r].contiguous(), kind=t.kind, best_dev_loss=best[k].copy(),
                     best_epoch=best_epoch[k].copy(), epochs=epochs[k].copy(), seconds=seconds, regimen=cfg.name,
                     history=[h.copy() for h in history[k]]) for k, t in enumerate(tasks)]


def fit_depth_probes(train: ProbeData, dev: ProbeData, rank: Optional[int] = None,
                     regimen: str = "fast", seed: int = 0,
                     device: Optional[Union[str, torch.device]] = None) -> ProbeFit:
    """Fit a depth probe ``d_i = ||B_l h_i||^2`` for every layer l (Hewitt & Manning 2019).

    Loss per sentence ``sum_i |d_i - depth_i| / n``; ``rank`` defaults to the
    regimen's (D for ``paper``, min(D, 128) for ``fast``); ``regimen`` is
    ``"fast"`` or ``"paper"`` (see the module docstring); ``device`` defaults to
    the device of ``train.states``.  Deterministic for a given ``seed`` on a
    given device.
    """
    return fit_probes([ProbeTask("depth", train, dev)], rank, regimen, seed, device)[0]


def fit_distance_probes(train: ProbeData, dev: ProbeData, rank: Optional[int] = None,
                        regimen: str = "fast", seed: int = 0,
                        device: Optional[Union[str, torch.device]] = None) -> ProbeFit:
    """Fit a distance probe ``d_ij = ||B_l (h_i - h_j)||^2`` for every layer l.

    Loss per sentence ``sum_ij |d_ij - dist_ij| / n^2`` (Hewitt & Manning 2019);
    other arguments as :func:`fit_depth_probes`.
    """
    return fit_probes([ProbeTask("distance", train, dev)], rank, regimen, seed, device)[0]

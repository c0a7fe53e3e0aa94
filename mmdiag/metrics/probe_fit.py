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
so summing the per-layer losses keeps the layers independent).

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


@dataclass
class ProbeFit:
    """Probes fitted for every layer.

    ``B``: (L, rank, D) best-dev probe matrices (on the training device);
    ``kind``: ``"depth"`` or ``"distance"``; ``best_dev_loss``: (L,) the dev loss
    of the kept weights (Hewitt's loss, mean over dev sentences);
    ``best_epoch``: (L,) the 0-based epoch they come from; ``epochs``: (L,)
    epochs each layer trained before it stopped; ``seconds``: wall time of
    the fit; ``regimen``: its name; ``history``: per epoch, the (L,) dev
    losses (NaN for layers already stopped).
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
        """Yield (sentence indices, P (L, b, T, rank) on the device, lengths) batches."""
        dev = self.B.device
        prep = _Prepared(data, None, dev)
        S = data.n_sentences
        for start in range(0, S, _EVAL_BATCH):
            sel = torch.arange(start, min(S, start + _EVAL_BATCH), device=dev)
            X, _, n = prep.batch_states(sel, None)
            with torch.no_grad():
                P = _project(self.B.float(), X)
            yield range(start, min(S, start + _EVAL_BATCH)), P, n

    def predict_depths(self, data: ProbeData) -> list[list[np.ndarray]]:
        """``||B_l h_i||^2`` per layer l, per sentence: ``out[l][s]`` has shape (n_s,)."""
        _check_dim(self, data)
        out: list[list[np.ndarray]] = [[] for _ in range(self.n_layers)]
        for sents, P, n in self._projections(data):
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
        for sents, P, n in self._projections(data):
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


class _Prepared:
    """Padded indices and targets of a :class:`ProbeData` on a device."""

    def __init__(self, data: ProbeData, kind: Optional[str], device: torch.device) -> None:
        self.data = data
        self.device = device
        self.states = data.states.to(device)
        lengths = np.asarray(data.lengths, dtype=np.int64)
        off = data.offsets
        self.n = torch.as_tensor(lengths, device=device)
        self.off = torch.as_tensor(off[:-1], device=device)
        self.ar = torch.arange(int(lengths.max()) if lengths.size else 0, device=device)
        self.target = None
        if kind == "depth":
            if data.depths is None:
                raise ValueError("depth probe: ProbeData has neither heads nor depths")
            self.target = data.depths.to(device)
        elif kind == "distance":
            mats = data.gold_distances()
            self.target = torch.as_tensor(np.concatenate([m.ravel() for m in mats]),
                                          dtype=torch.float32, device=device)
            sq = lengths ** 2
            self.doff = torch.as_tensor(np.concatenate([[0], np.cumsum(sq)[:-1]]), device=device)

    def batch_states(self, sel: torch.Tensor, layers: Optional[torch.Tensor]):
        """States (La, b, T, D) float32, word mask (b, T), lengths (b,)."""
        n = self.n[sel]
        T = int(n.max())
        ar = self.ar[:T]
        mask = ar[None, :] < n[:, None]
        idx = torch.where(mask, self.off[sel][:, None] + ar[None, :], torch.zeros_like(mask,
                                                                                     dtype=torch.long))
        if layers is None:
            X = self.states[:, idx]
        else:
            X = self.states[layers[:, None, None], idx[None]]
        X = X.float()
        return X, mask, n

    def batch_targets(self, sel: torch.Tensor, kind: str, mask: torch.Tensor, n: torch.Tensor):
        T = mask.shape[1]
        if kind == "depth":
            idx = torch.where(mask, self.off[sel][:, None] + self.ar[None, :T],
                              torch.zeros_like(mask, dtype=torch.long))
            return self.target[idx] * mask, mask.float()
        ar = self.ar[:T]
        m2 = mask[:, :, None] & mask[:, None, :]
        idx = self.doff[sel][:, None, None] + ar[None, :, None] * n[:, None, None] + ar[None, None, :]
        idx = torch.where(m2, idx, torch.zeros_like(idx))
        m2 = m2 & (ar[:, None] != ar[None, :])  # the diagonal is 0 = 0 by construction
        return self.target[idx] * m2, m2.float()


def _project(Bm: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """``P[l, s, t] = B_l x[l, s, t]``: (La, rank, D) x (La, b, T, D) -> (La, b, T, rank)."""
    La, b, T, D = X.shape
    return torch.bmm(X.reshape(La, b * T, D), Bm.transpose(1, 2)).reshape(La, b, T, -1)


def _predictions(Bm: torch.Tensor, X: torch.Tensor, kind: str) -> torch.Tensor:
    """Probe predictions of a padded batch: (La, b, T) depths or (La, b, T, T) distances.

    Distances use ``||p_i||^2 + ||p_j||^2 - 2 p_i.p_j`` (clamped at 0) so that no
    (La, b, T, T, rank) difference tensor is built.
    """
    P = _project(Bm, X)
    sq = (P * P).sum(-1)
    if kind == "depth":
        return sq
    G = torch.matmul(P, P.transpose(-1, -2))
    return (sq[..., :, None] + sq[..., None, :] - 2.0 * G).clamp_min(0.0)


def _per_sentence_loss(Bm: torch.Tensor, X: torch.Tensor, y: torch.Tensor, m: torch.Tensor,
                       n: torch.Tensor, kind: str) -> torch.Tensor:
    """Hewitt's normalised L1 loss of each sentence for each layer: (La, b)."""
    err = (_predictions(Bm, X, kind) - y).abs() * m
    if kind == "depth":
        return err.sum(-1) / n
    return err.sum((-1, -2)) / (n * n)


def _dev_loss(B: torch.Tensor, prep: _Prepared, kind: str,
              layers: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean over dev sentences of the per-sentence loss, per layer: (La,)."""
    S = prep.data.n_sentences
    Bm = B if layers is None else B.index_select(0, layers)
    total = torch.zeros(Bm.shape[0], device=B.device, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, S, _EVAL_BATCH):
            sel = torch.arange(start, min(S, start + _EVAL_BATCH), device=B.device)
            X, mask, n = prep.batch_states(sel, layers)
            y, m = prep.batch_targets(sel, kind, mask, n)
            total += _per_sentence_loss(Bm, X, y, m, n.float(), kind).sum(1).double()
    return total / S


def _fit(kind: str, train: ProbeData, dev: ProbeData, rank: Optional[int], regimen: str,
         seed: int, device) -> ProbeFit:
    t0 = time.perf_counter()
    if regimen not in _REGIMENS:
        raise ValueError(f"regimen must be one of {sorted(_REGIMENS)}, got {regimen!r}")
    cfg = _REGIMENS[regimen]
    if train.states.shape[0] != dev.states.shape[0] or train.states.shape[2] != dev.states.shape[2]:
        raise ValueError("train and dev states differ in number of layers or width")
    dev_ = torch.device(device) if device is not None else train.states.device
    L, _, D = train.states.shape
    if rank is None:
        r = min(D, cfg.max_rank) if cfg.max_rank else D
    else:
        r = int(rank)
    if r < 1:
        raise ValueError("rank must be >= 1")
    if train.n_sentences == 0 or dev.n_sentences == 0:
        raise ValueError("probe fitting needs at least one train and one dev sentence")
    ptrain = _Prepared(train, kind, dev_)
    pdev = _Prepared(dev, kind, dev_)

    gen = torch.Generator().manual_seed(int(seed))
    B = ((torch.rand(L, r, D, generator=gen) * 2 - 1) * cfg.init_range).to(dev_)
    if cfg.scaled_init:
        # one scale per layer: mean prediction = mean gold over the first sentences
        sel = torch.arange(min(train.n_sentences, _EVAL_BATCH), device=dev_)
        with torch.no_grad():
            X, mask, n = ptrain.batch_states(sel, None)
            y, m = ptrain.batch_targets(sel, kind, mask, n)
            axes = (1, 2) if kind == "depth" else (1, 2, 3)
            pred_sum = (_predictions(B, X, kind) * m).sum(axes)
            scale = torch.sqrt((y * m).sum() / pred_sum)
            ok = torch.isfinite(scale) & (scale > 0)
            B = B * torch.where(ok, scale, torch.ones_like(scale))[:, None, None]

    base_lr = cfg.lr * min(1.0, math.sqrt(64.0 / D)) if cfg.width_scaled_lr else cfg.lr
    lr = torch.full((L,), base_lr, device=dev_)
    m1 = torch.zeros_like(B)
    m2 = torch.zeros_like(B)
    steps = torch.zeros(L, device=dev_)
    beta1, beta2, eps = 0.9, 0.999, 1e-8

    best = torch.full((L,), float("inf"), dtype=torch.float64, device=dev_)
    sched_best = torch.full((L,), float("inf"), dtype=torch.float64, device=dev_)
    best_B = B.clone()
    best_epoch = np.full(L, -1, dtype=np.int64)
    epochs = np.zeros(L, dtype=np.int64)
    active = np.ones(L, dtype=bool)
    history: list[np.ndarray] = []
    S = train.n_sentences
    batch = cfg.batch_for(S)

    for epoch in range(cfg.max_epochs):
        act = torch.as_tensor(np.flatnonzero(active), device=dev_)
        perm = torch.randperm(S, generator=gen).to(dev_)
        for start in range(0, S, batch):
            sel = perm[start:start + batch]
            X, mask, n = ptrain.batch_states(sel, act)
            y, m = ptrain.batch_targets(sel, kind, mask, n)
            Bm = B.index_select(0, act).detach().requires_grad_(True)
            loss = _per_sentence_loss(Bm, X, y, m, n.float(), kind).mean(1).sum()
            (g,) = torch.autograd.grad(loss, Bm)
            with torch.no_grad():
                steps[act] += 1
                t = steps[act][:, None, None]
                ma = m1[act] * beta1 + (1 - beta1) * g
                va = m2[act] * beta2 + (1 - beta2) * g * g
                m1[act] = ma
                m2[act] = va
                upd = (ma / (1 - beta1 ** t)) / ((va / (1 - beta2 ** t)).sqrt() + eps)
                B[act] = Bm.detach() - lr[act][:, None, None] * upd
        epochs[active] += 1
        dl = _dev_loss(B, pdev, kind, act)
        full = torch.full((L,), float("nan"), dtype=torch.float64, device=dev_)
        full[act] = dl
        history.append(full.cpu().numpy())
        for k, l in enumerate(act.tolist()):
            v = float(dl[k])
            # ReduceLROnPlateau(mode="min", factor=0.1, patience=0, threshold=1e-4 rel)
            if v < float(sched_best[l]) * (1 - 1e-4):
                sched_best[l] = v
            else:
                lr[l] = lr[l] * cfg.plateau_factor
            # Hewitt's checkpointing and early stopping
            if v < float(best[l]) - 1e-4:
                best[l] = v
                best_B[l] = B[l]
                best_epoch[l] = epoch
            elif best_epoch[l] < epoch - (cfg.stop_patience - 1):
                active[l] = False
        if not active.any():
            break

    return ProbeFit(B=best_B, kind=kind, best_dev_loss=best.cpu().numpy(),
                    best_epoch=best_epoch, epochs=epochs,
                    seconds=time.perf_counter() - t0, regimen=cfg.name, history=history)


def fit_depth_probes(train: ProbeData, dev: ProbeData, rank: Optional[int] = None,
                     regimen: str = "fast", seed: int = 0,
                     device: Optional[Union[str, torch.device]] = None) -> ProbeFit:
    """Fit a depth probe ``d_i = ||B_l h_i||^2`` for every layer l (Hewitt & Manning 2019).

    Loss per sentence ``sum_i |d_i - depth_i| / n``; ``rank`` defaults to D;
    ``regimen`` is ``"fast"`` or ``"paper"`` (see the module docstring);
    ``device`` defaults to the device of ``train.states``.  Deterministic for a
    given ``seed`` on a given device.
    """
    return _fit("depth", train, dev, rank, regimen, seed, device)


def fit_distance_probes(train: ProbeData, dev: ProbeData, rank: Optional[int] = None,
                        regimen: str = "fast", seed: int = 0,
                        device: Optional[Union[str, torch.device]] = None) -> ProbeFit:
    """Fit a distance probe ``d_ij = ||B_l (h_i - h_j)||^2`` for every layer l.

    Loss per sentence ``sum_ij |d_ij - dist_ij| / n^2`` (Hewitt & Manning 2019);
    other arguments as :func:`fit_depth_probes`.
    """
    return _fit("distance", train, dev, rank, regimen, seed, device)

"""Probe states that stay on disk: a view of some rows and layers of a :class:`~mmdiag.recording.store.LayerFiles`.

:class:`StateView` stands in for the ``(L, W, D)`` tensor of a
:class:`~mmdiag.probing.data.ProbeData` when the states were recorded to disk
(every run's word and region states are). It holds only an index: which rows
(words, in order) and which layers of the files. Cutting splits
(``index_select(1, words)``) and picking layers (``view[a:b]``) compose the
index and read nothing; :meth:`StateView.gather` reads one minibatch's words
from the files (mapped for that read only) and puts them on the training
device. So fitting probes on a treebank of any size holds the probes, their
Adam moments and one minibatch, never the treebank's states.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

__all__ = ["StateView", "same_states"]


class StateView:
    """Rows ``rows`` of layers ``layers`` of ``files`` (anything with ``read(layers, rows)``, ``dim`` and
    ``device``, e.g. :class:`~mmdiag.recording.store.LayerFiles`), shaped like an ``(L, W, D)`` tensor."""

    ndim = 3

    def __init__(self, files: Any, rows: Union[np.ndarray, Sequence[int]], layers: Optional[Sequence[int]] = None,
                 device: Optional[torch.device] = None) -> None:
        self.files = files
        self.rows = np.asarray(rows, dtype=np.int64)
        self.layers = tuple(range(files.n_layers) if layers is None else (int(k) for k in layers))
        self.device = torch.device(device) if device is not None else torch.device(files.device)

    @property
    def shape(self) -> tuple[int, int, int]:
        return len(self.layers), len(self.rows), int(self.files.dim)

    def __repr__(self) -> str:
        return f"StateView(shape={self.shape}, device={self.device})"

    def to(self, device: Union[str, torch.device]) -> "StateView":
        """The same view, read onto ``device``."""
        return StateView(self.files, self.rows, self.layers, torch.device(device))

    def index_select(self, dim: int, index: Union[torch.Tensor, np.ndarray, Sequence[int]]) -> "StateView":
        """The words ``index`` (``dim`` must be 1, the word axis), in that order; nothing is read."""
        if dim != 1:
            raise ValueError("StateView.index_select: only the word axis (dim=1) can be selected")
        idx = index.detach().cpu().numpy() if isinstance(index, torch.Tensor) else np.asarray(index, dtype=np.int64)
        return StateView(self.files, self.rows[idx.astype(np.int64)], self.layers, self.device)

    def __getitem__(self, key: slice) -> "StateView":
        """Layers ``key`` (a slice), all words; nothing is read."""
        if not isinstance(key, slice):
            raise TypeError("StateView: index layers with a slice, e.g. view[3:4]")
        return StateView(self.files, self.rows, self.layers[key], self.device)

    def gather(self, layers: Optional[torch.Tensor], words: torch.Tensor) -> torch.Tensor:
        """The states of ``words`` (indices into this view's rows) at ``layers`` (indices into this view's layers;
        None: all): ``(La, len(words), D)`` float32 on :attr:`device`, read from the files."""
        picked = self.layers if layers is None else [self.layers[i] for i in layers.tolist()]
        rows = self.rows[words.detach().cpu().numpy()]
        return torch.from_numpy(self.files.read(picked, rows)).to(self.device)

    def materialize(self) -> torch.Tensor:
        """The whole view as one ``(L, W, D)`` tensor (for small data and tests: it reads everything)."""
        return self.gather(None, torch.arange(len(self.rows)))


def same_states(a: Any, b: Any) -> bool:
    """Whether two probe state holders (tensors or :class:`StateView`) hold the same states."""
    if a is b:
        return True
    if isinstance(a, StateView) or isinstance(b, StateView):
        return (isinstance(a, StateView) and isinstance(b, StateView) and a.files is b.files
                and a.layers == b.layers and np.array_equal(a.rows, b.rows))
    return a.shape == b.shape and torch.equal(a, b)

"""Word and region states on disk: one raw float32 file per layer, appended batch by batch, read by memory map.

A treebank of 40k sentences has about a million words; their states at every
layer of a 768-wide model are ~40 GB of float32, far beyond what a run may hold
in memory. :class:`LayerFiles` writes each batch's ``(w, D)`` states of every
layer to the end of that layer's file as the forward pass goes, so the process
holds one batch at a time. Readers (the probe trainer's minibatches,
:mod:`mmdiag.probing.states`) map a file only for the duration of one read, so
pages they touched leave the process's resident set when the read is done:
peak RSS is bounded by one read, not by the treebank (``python -m mmdiag.bench
--treebank-memory`` measures it; docs/performance.md).

The files live in a fresh directory under ``$MMDIAG_STATE_DIR`` (default: the
system temporary directory) and are removed when the :class:`LayerFiles` is
garbage-collected or the interpreter exits.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

__all__ = ["STATE_DIR_ENV", "LayerFiles"]

#: environment variable naming where the state files go (default: the system temporary directory)
STATE_DIR_ENV = "MMDIAG_STATE_DIR"


class LayerFiles:
    """``(L, W, D)`` float32 states, layer ``k``'s ``(W, D)`` rows in its own file, appended in order.

    ``device``: where readers should put what they read (the model's device, where the states came from).
    """

    def __init__(self, n_layers: int, device: Optional[torch.device] = None,
                 directory: Optional[str] = None) -> None:
        parent = directory or os.environ.get(STATE_DIR_ENV) or None
        if parent is not None:
            Path(parent).mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="mmdiag-states-", dir=parent))
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.dir), True)
        self.paths = [self.dir / f"layer{k:03d}.f32" for k in range(n_layers)]
        self._files: Optional[list] = [open(p, "wb") for p in self.paths]
        self.n_rows = 0
        self.dim = 0
        self.device = torch.device("cpu") if device is None else torch.device(device)

    @property
    def n_layers(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.n_layers, self.n_rows, self.dim

    def append(self, layers: Sequence[torch.Tensor]) -> None:
        """Write one batch: ``layers[k]`` is layer ``k``'s ``(w, D)`` states (any device or dtype)."""
        if self._files is None:
            raise ValueError("LayerFiles: append after close()")
        if len(layers) != self.n_layers:
            raise ValueError(f"LayerFiles: expected {self.n_layers} layers, got {len(layers)}")
        rows = {int(t.shape[0]) for t in layers}
        dims = {int(t.shape[1]) for t in layers}
        if len(rows) != 1 or len(dims) != 1 or (self.n_rows and dims != {self.dim}):
            raise ValueError("LayerFiles: every layer of a batch needs the same (rows, width) as the others")
        for f, t in zip(self._files, layers):
            f.write(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        self.n_rows += rows.pop()
        self.dim = dims.pop()

    def close(self) -> "LayerFiles":
        """Flush and close the files (appending is over); returns self."""
        for f in self._files or ():
            f.close()
        self._files = None
        return self

    def _map(self, k: int, mode: str = "r") -> np.ndarray:
        if self._files is not None:
            for f in self._files:
                f.flush()
        return np.memmap(self.paths[k], dtype=np.float32, mode=mode, shape=(self.n_rows, self.dim))

    def read(self, layers: Sequence[int], rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` of the layers ``layers``: ``(len(layers), len(rows), D)`` float32, a copy in memory.

        Each layer's file is mapped for this read only (the mapping is dropped before returning)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(layers), len(rows), self.dim), dtype=np.float32)
        if self.n_rows == 0 or len(rows) == 0:
            return out
        for i, k in enumerate(layers):
            mapped = self._map(int(k))
            out[i] = mapped[rows]
            del mapped  # unmapped here: the pages read leave this process's resident set
        return out

    def tensors(self) -> list[torch.Tensor]:
        """Every layer as a ``(W, D)`` CPU tensor backed by its file (copy-on-write map: reading it pulls pages in,
        writing to it never changes the file); for code that wants plain tensors (the activation cache, tests)."""
        if self.n_rows == 0:
            return [torch.zeros(0, self.dim) for _ in self.paths]
        return [torch.from_numpy(self._map(k, mode="c")) for k in range(self.n_layers)]

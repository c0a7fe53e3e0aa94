"""Adam for a stack of independent probes, one per layer, with per-layer step counts and learning rates.

The probes of all L layers (and of several tasks side by side) live in one
``(L, R, D)`` tensor and are trained by one program.  ``torch.optim.Adam``
keeps one step count and one learning rate per parameter tensor; here every
layer needs its own: a layer that has stopped early must keep its weights
while the others train on, and its bias correction must not advance, and
each (task, layer) probe has its own plateau-scheduled learning rate.
Adam (Kingma & Ba, ICLR 2015) is elementwise, so with those per-layer
quantities the layers stay exactly independent:

    m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2;   t <- t + 1
    B <- B - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

with ``b1 = 0.9, b2 = 0.999, eps = 1e-8`` (PyTorch's defaults, which Hewitt's
code uses).  When every layer steps, the update runs in place on the whole
tensor; otherwise only the active layers' rows are read and written.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

__all__ = ["BatchedAdam"]


@dataclass
class BatchedAdam:
    """Adam state of ``params`` (L, R, D), updated in place by :meth:`step`.

    ``m1``, ``m2``: first and second moments, shaped like ``params``;
    ``steps``: (L,) float32 step count of each layer (its bias correction).
    """

    params: torch.Tensor
    m1: torch.Tensor
    m2: torch.Tensor
    steps: torch.Tensor
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    @classmethod
    def zeros(cls, params: torch.Tensor) -> "BatchedAdam":
        """Fresh state (zero moments, no steps taken) for ``params``."""
        return cls(params, torch.zeros_like(params), torch.zeros_like(params),
                   torch.zeros(params.shape[0], device=params.device))

    def step(self, g: torch.Tensor, lr: torch.Tensor, layers: Optional[torch.Tensor] = None,
             rows: Optional[torch.Tensor] = None) -> None:
        """One Adam step of the layers ``layers`` (all when None) with gradient ``g`` and learning rates ``lr``.

        ``g``: (La, R, D), the gradient of those layers' rows; ``lr``: (La, R, 1),
        a learning rate per row (0 freezes a row without touching the others).
        ``rows``: ``params.index_select(0, layers)`` when the caller already has it.
        """
        B, m1, m2, steps = self.params, self.m1, self.m2, self.steps
        beta1, beta2, eps = self.beta1, self.beta2, self.eps
        with torch.no_grad():
            if layers is None:  # in place on the whole tensor
                steps += 1
                m1.mul_(beta1).add_(g, alpha=1 - beta1)
                m2.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                bc1, bc2 = 1 - beta1 ** steps, 1 - beta2 ** steps
                denom = (m2 / bc2[:, None, None]).sqrt_().add_(eps)
                B.addcdiv_(m1 * (lr / bc1[:, None, None]), denom, value=-1.0)
            else:
                if rows is None:
                    rows = B.index_select(0, layers)
                steps[layers] += 1
                t = steps[layers][:, None, None]
                ma = m1[layers] * beta1 + (1 - beta1) * g
                va = m2[layers] * beta2 + (1 - beta2) * g * g
                m1[layers], m2[layers] = ma, va
                B[layers] = rows.detach() - lr * ((ma / (1 - beta1 ** t)) / ((va / (1 - beta2 ** t)).sqrt() + eps))

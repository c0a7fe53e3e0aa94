"""mmdiag: interpretability diagnostics of vision-language models as pytest checks.

The public API for writing checks and adapters (``docs/writing-checks.md``):

>>> from mmdiag import CheckContext, CheckSpec, MMDiagWarning, PlotSpec, Threshold, Trace, Adapter

and the notebook API (``docs/notebook.md``): ``mmdiag.diagnose("random:tiny-clip", samples=16)``.

Names are imported on first use, so loading the pytest plugin does not import torch.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "CheckContext": "mmdiag.api",
    "MMDiagWarning": "mmdiag.api",
    "CheckSpec": "mmdiag.checkspec",
    "PlotSpec": "mmdiag.checkspec",
    "Threshold": "mmdiag.thresholds",
    "Result": "mmdiag.thresholds",
    "Trace": "mmdiag.models.base",
    "Adapter": "mmdiag.models.base",
    "AttentionStream": "mmdiag.models.base",
    "diagnose": "mmdiag.notebook",
    "Results": "mmdiag.notebook",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mmdiag' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

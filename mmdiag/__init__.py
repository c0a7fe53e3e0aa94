"""mmdiag: interpretability diagnostics of vision-language models as pytest checks."""
from __future__ import annotations

__version__ = "0.1.0"

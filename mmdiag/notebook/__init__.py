"""The notebook API: :func:`diagnose` runs the built-in checks in-process and returns :class:`Results`
(see ``docs/notebook.md``)."""
from mmdiag.notebook.results import COLUMNS, Results, Row
from mmdiag.notebook.run import diagnose, known_checks

__all__ = ["COLUMNS", "Results", "Row", "diagnose", "known_checks"]

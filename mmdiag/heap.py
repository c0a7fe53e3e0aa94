"""Keep the garbage collector off the objects that live for the whole run.

A diagnostic run holds ~400,000 long-lived Python objects once torch,
transformers and the model are loaded, and every full collection walks them
all (~0.25 s each on a 2-core machine). pytest itself runs five full
collections at the end of a session (``gc_collect_harder``), and Python runs
more while the checks allocate. After collection, :func:`freeze` moves the
objects alive at that point into the collector's permanent generation
(``gc.freeze``) so later collections skip them; :func:`thaw` gives them back
when the run's config is cleaned up, so an in-process run (pytester, an IDE)
leaves the collector as it found it.
"""
from __future__ import annotations

import gc

_frozen = False


def freeze() -> None:
    """Collect once, then exclude every surviving object from later collections."""
    global _frozen
    if _frozen:
        return
    gc.collect()  # garbage alive now would otherwise stay until thaw()
    gc.freeze()
    _frozen = True


def thaw() -> None:
    """Undo :func:`freeze` (a no-op when it did not run)."""
    global _frozen
    if _frozen:
        gc.unfreeze()
        _frozen = False

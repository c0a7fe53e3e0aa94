"""Process-level memory settings of a diagnostic run: the C allocator and the garbage collector.

**Allocator (glibc).** A forward pass allocates and frees activation-sized
blocks (MBs) at every layer. By default glibc serves the largest from fresh
``mmap`` pages and returns freed memory at the top of the heap to the OS at
once, so the next batch touches new pages again: ViT-B/32 on 256 samples took
~0.7-1.9 million page faults, and on a virtual machine where a fault is costly
the same forward took 17.5 s or 24 s from run to run. :func:`tune_allocator`
keeps blocks up to 32 MB on the heap and freed memory in the process for reuse
(``mallopt``: ``M_MMAP_THRESHOLD`` 32 MB, ``M_TRIM_THRESHOLD`` 1 GB,
``M_TOP_PAD`` 64 MB): the same forward then made a handful of faults and took
17.1 s every time, with the same peak RSS. Settings you give glibc yourself
(``MALLOC_*_`` environment variables) are left alone; ``MMDIAG_DEFAULT_MALLOC=1``
keeps glibc's defaults.

**Garbage collector.** A run holds ~400,000 long-lived Python objects once
torch, transformers and the model are loaded, and every full collection walks
them all (~0.25 s each on 2 cores); pytest runs five at the end of a session.
:func:`freeze` (after collection) moves them to the permanent generation
(``gc.freeze``) so later collections skip them; :func:`thaw` gives them back
when the run's config is cleaned up, so an in-process run (pytester, an IDE)
leaves the collector as it found it.
"""
from __future__ import annotations

import ctypes
import gc
import os
import sys

_frozen = False
_tuned = False

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_ALLOCATOR_SETTINGS = ((_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 64 << 20))
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_",
                  "MMDIAG_DEFAULT_MALLOC")


def tune_allocator() -> bool:
    """Keep freed activation-sized blocks for reuse (glibc only); True when the settings are in effect."""
    global _tuned
    if _tuned:
        return True
    if not sys.platform.startswith("linux") or any(name in os.environ for name in _USER_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _tuned = all(mallopt(param, value) == 1 for param, value in _ALLOCATOR_SETTINGS)
    return _tuned


def allocator_tuned() -> bool:
    """Whether :func:`tune_allocator` has put its settings in effect in this process."""
    return _tuned


def freeze() -> None:
    """Exclude every object alive now from later collections.

    The young generations are collected first; cyclic garbage that already
    reached the oldest generation (startup leftovers: ~1,800 objects and no
    measurable RSS with ViT-B/32 loaded) is then kept until :func:`thaw`
    instead of costing a full pass (0.22 s) here.
    """
    global _frozen
    if _frozen:
        return
    gc.collect(1)
    gc.freeze()
    _frozen = True


def thaw() -> None:
    """Undo :func:`freeze` (a no-op when it did not run)."""
    global _frozen
    if _frozen:
        gc.unfreeze()
        _frozen = False

"""Peak memory of one bench phase: process RSS (Linux ``/proc``, ``getrusage``) and CUDA allocations.

The process-lifetime peak (``ru_maxrss``) would credit phase (b) with the
floor's memory; where Linux allows it the peak is reset at the start of each
phase (``clear_refs``) so that each phase reports its own.
"""
from __future__ import annotations

import gc
import resource
import sys
from typing import Any, Optional


def status_mb(field_name: str) -> Optional[float]:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM) in MB, or None off Linux."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def maxrss_mb() -> float:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in MB (kB on Linux, bytes on macOS)."""
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value / (1024.0 * 1024.0) if sys.platform == "darwin" else value / 1024.0


def reset_peak_rss() -> bool:
    """Reset the process's peak RSS to its current RSS (Linux ``clear_refs`` 5); False if unsupported.

    After a reset both ``VmHWM`` and ``ru_maxrss`` count from the current RSS,
    so each phase gets its own peak instead of the process-lifetime one.
    """
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class PeakTracker:
    """Peak RSS (and CUDA memory) per phase, plus the process-lifetime peak."""

    def __init__(self) -> None:
        self.lifetime_mb = maxrss_mb()
        self.resettable = False

    def start(self) -> None:
        """Begin a phase: fold the peak so far into the lifetime peak, then reset it."""
        gc.collect()
        self.lifetime_mb = max(self.lifetime_mb, maxrss_mb())
        self.resettable = reset_peak_rss()
        cuda = _cuda()
        if cuda is not None:
            cuda.empty_cache()
            cuda.reset_peak_memory_stats()

    def stop(self) -> dict[str, Optional[float]]:
        """End a phase: its peak RSS (MB), the lifetime peak so far, and its peak CUDA allocation (MB)."""
        phase = maxrss_mb()
        self.lifetime_mb = max(self.lifetime_mb, phase)
        cuda = _cuda()
        gpu = cuda.max_memory_allocated() / 2**20 if cuda is not None else None
        return {"peak_rss_mb": phase, "lifetime_peak_rss_mb": self.lifetime_mb, "peak_gpu_mb": gpu}


def _cuda() -> Any:
    """``torch.cuda`` once CUDA is in use in this process, else None (never initialises CUDA)."""
    import torch

    return torch.cuda if torch.cuda.is_available() and torch.cuda.is_initialized() else None

"""What ``python -m mmdiag.bench`` measures: its options as one dataclass, and the targets it prints.

Shared by every other module of the bench, so it imports none of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

#: families measured by --memory-scaling, each set in its own pair of processes
SCALING_SETS = (("geometry", "attention"), ("probe",))
SCALING_FACTOR = 8
#: targets the issue sets (printed beside the figures, never asserted)
RATIO_TARGET = 1.5
MEMORY_TARGET = 1.3


@dataclass
class BenchConfig:
    """What to benchmark (the CLI options)."""

    model: str = "random:clip-vit-base-patch32"
    samples: int = 256
    batch_size: int = 32
    device: str = "auto"
    dtype: str = "fp32"
    data: str = "synthetic"
    seed: int = 0
    families: Optional[tuple[str, ...]] = None  # None: every family
    select: str = "k"  # "k": -k expression; "files": the families' check files as arguments
    floor_attentions: bool = False
    floor_sdpa: bool = False  # also time the floor with the sdpa attention kernels (no attention weights)
    floor_twice: bool = False  # time the floor again after the suite (a check on machine noise)
    show_pytest: bool = False
    profile: Optional[Path] = None  # cProfile the suite phase into this file (its timings are then inflated)
    no_cache: bool = False  # pass --mm-no-cache (default: a cold activation cache in a temporary rootdir)
    suite_args: tuple[str, ...] = ()  # extra pytest arguments of the suite, e.g. --mm-probe-rank=128
    all_plugins: bool = False  # load every installed pytest plugin in the suite (default: mmdiag's only)

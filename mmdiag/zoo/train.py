"""``python -m mmdiag.zoo.train NAME``: the documented entry of the zoo's training (docs/zoo.md).

The trainers are the package :mod:`mmdiag.zoo.training`; this module only
keeps the documented command working.
"""
from __future__ import annotations

import sys

from mmdiag.zoo.training.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())

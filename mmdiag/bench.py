"""``python -m mmdiag.bench``: the documented entry of the bench (docs/performance.md).

The tool itself is the package :mod:`mmdiag.devtools.bench`; this module only
keeps the documented command working. Nothing in the plugin imports it.
"""
from __future__ import annotations

import sys

from mmdiag.devtools.bench.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())

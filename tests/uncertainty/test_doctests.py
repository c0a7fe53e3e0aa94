"""The ``>>>`` examples of every module of mmdiag.uncertainty run and hold; no module is over 500 lines."""
from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

MODULES = ["interval", "bootstrap", "batched", "batched_spectral", "grouped", "regression", "bench"]


@pytest.mark.parametrize("name", MODULES)
def test_examples(name):
    module = importlib.import_module(f"mmdiag.uncertainty.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert len(Path(module.__file__).read_text().splitlines()) <= 500


def test_the_plugin_does_not_import_the_benchmark():
    import mmdiag.uncertainty as pkg
    src = Path(pkg.__file__).read_text()
    assert "import bench" not in src and "uncertainty.bench import" not in src

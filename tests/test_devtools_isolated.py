"""The developer tools (the bench, the zoo's trainers) stay off the plugin's runtime import path.

Checked in a fresh interpreter: in this test process other tests may already
have imported the tools. Only mmdiag's own modules are looked at (torch itself
loads ``torch.utils.throughput_benchmark``).
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

TOOLS = ("bench", "zoo.train", "devtools")


def _loaded_after(statement: str) -> list[str]:
    code = (f"import sys, json; {statement}; "
            "print(json.dumps(sorted(m for m in sys.modules if m == 'mmdiag' or m.startswith('mmdiag.'))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_plugin_runtime_imports_no_devtool():
    loaded = _loaded_after("import mmdiag.plugin, mmdiag.runner, mmdiag.session")
    assert "mmdiag.plugin" in loaded and "mmdiag.session" in loaded
    assert [m for m in loaded if any(tool in m for tool in TOOLS)] == []


@pytest.mark.parametrize("module", ["mmdiag.bench", "mmdiag.zoo.train"])
def test_the_check_sees_a_tool_once_imported(module):
    """The filter above is not vacuous: importing a tool's entry module shows up in it."""
    loaded = _loaded_after(f"import {module}")
    assert [m for m in loaded if any(tool in m for tool in TOOLS)]

"""mmdiag.heap: allocator settings and the frozen garbage-collector generation."""
import gc
import json
import os
import subprocess
import sys

import pytest

from mmdiag import heap

GROWING_BLOCKS = r"""
import ctypes, json, resource, sys
from mmdiag import heap
tuned = heap.tune_allocator() if sys.argv[1] == "tune" else False
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
out = []
for n in (20 << 20, 24 << 20, 28 << 20):  # blocks growing from batch to batch, as a forward pass's activations do
    f0 = faults(); p = libc.malloc(n); ctypes.memset(p, 1, n); libc.free(p); out.append(faults() - f0)
print(json.dumps({"tuned": tuned, "faults": out}))
"""


def _run(mode: str, **env: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", GROWING_BLOCKS, mode], capture_output=True, text=True, check=True,
                          env={**os.environ, **env})
    return json.loads(proc.stdout)


def _glibc() -> bool:
    try:
        return sys.platform.startswith("linux") and (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError, AttributeError):
        return False


@pytest.mark.skipif(not _glibc(), reason="glibc's mallopt")
def test_tuned_allocator_reuses_freed_blocks_instead_of_faulting_in_new_pages():
    pages = lambda mb: mb * 256  # 4 KiB pages  # noqa: E731
    default, tuned = _run("default"), _run("tune")
    assert tuned["tuned"] is True and default["tuned"] is False
    # glibc's defaults map every block afresh; tuned, a block reuses the freed one and faults only its growth
    assert all(f >= 0.9 * pages(mb) for f, mb in zip(default["faults"][1:], (24, 28)))
    assert all(f <= 2 * pages(4) for f in tuned["faults"][1:])


def test_user_settings_and_the_opt_out_are_left_alone():
    assert _run("tune", MMDIAG_DEFAULT_MALLOC="1")["tuned"] is False
    assert _run("tune", MALLOC_TOP_PAD_="0")["tuned"] is False


def test_freeze_and_thaw():
    assert gc.get_freeze_count() == 0
    heap.freeze()
    try:
        assert gc.get_freeze_count() > 1000
        heap.freeze()  # idempotent
    finally:
        heap.thaw()
    assert gc.get_freeze_count() == 0
    heap.thaw()  # a no-op when nothing is frozen

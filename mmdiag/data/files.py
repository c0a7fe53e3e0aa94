"""Files that are what they claim: regular files only, and image paths that stay inside the data directory.

A FIFO, a character device (``/dev/zero``), a socket or a directory given where a
file is expected would block the run or read forever: every reader here
``os.stat``-s the path first and opens only regular files, and then opens with
``O_NONBLOCK`` and checks again with ``fstat`` (the path may have been replaced
in between), so nothing that could block is ever waited on.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO, Optional, Union

from mmdiag.errors import DataError

PathLike = Union[str, Path]

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def kind_of(mode: int) -> str:
    """What a ``st_mode`` is, in words (``a FIFO (named pipe)``, ``a character device``, ...)."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def regular_file_problem(path: PathLike) -> Optional[str]:
    """None for an existing regular file (symlinks followed); else what is wrong, e.g. ``no such file``."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "no such file"
    except (OSError, ValueError) as exc:
        return f"cannot be stat-ed ({getattr(exc, 'strerror', None) or exc})"
    if stat.S_ISREG(mode):
        return None
    return f"is {kind_of(mode)}, not a regular file"


def open_regular(path: PathLike, what: str = "file") -> BinaryIO:
    """``path`` opened for binary reading if it is a regular file; a DataError naming it otherwise.

    The path is stat-ed before it is opened and the open itself is non-blocking, so a FIFO or a
    device is refused without waiting on it.
    """
    problem = regular_file_problem(path)
    if problem is not None:
        raise DataError(f"{what} {problem}" if problem.startswith("is ") else f"cannot read {what} ({problem})", path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise DataError(f"cannot read {what} ({exc.strerror or exc})", path) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise DataError(f"{what} is {kind_of(mode)}, not a regular file", path)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular_bytes(path: PathLike, what: str = "file") -> bytes:
    """The bytes of a regular file (see :func:`open_regular`)."""
    with open_regular(path, what) as handle:
        try:
            return handle.read()
        except OSError as exc:
            raise DataError(f"cannot read {what} ({exc.strerror or exc})", path) from None


def outside_root(image: Path, root: Path) -> Optional[Path]:
    """Where ``image`` really is (symlinks resolved) when that is outside ``root``; None when inside."""
    try:
        real_root = root.resolve()
        real = image.resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop: it cannot be opened either, the stat check says so
        return None
    if real == real_root or real_root in real.parents:
        return None
    return real


#: how a refused path is explained; the option name is the way out
OUTSIDE_HINT = ("images must lie inside the data directory; pass --mm-allow-outside-data (ini mm_allow_outside_data) "
                "to read it anyway")


def check_inside(image: Path, root: Path, name: str, source: Path, line: Optional[int]) -> None:
    """Refuse ``image`` (named ``name`` in ``source`` at ``line``) if it resolves outside ``root``."""
    real = outside_root(image, root)
    if real is not None:
        raise DataError(f"image {name!r} resolves outside the data directory {root} (to {real}); {OUTSIDE_HINT}",
                        source, line)

"""mmdiag's own exception types.

Anything a user can cause (a bad option, file, spec or treebank) raises a
subclass of :class:`MMDiagError`; the plugin turns those into
``pytest.UsageError`` (exit 4) or a failed check with the message, never a raw
traceback.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union


class MMDiagError(Exception):
    """Base class for errors caused by the user's input, not by mmdiag."""


class SpecError(MMDiagError):
    """A model/data spec or an option value that cannot be used."""


class DataError(MMDiagError):
    """A data file that cannot be read; names the file and line when known."""

    def __init__(self, message: str, path: Optional[Union[str, Path]] = None,
                 line: Optional[int] = None) -> None:
        self.path = None if path is None else str(path)
        self.line = line
        where = ""
        if self.path is not None:
            where = self.path if line is None else f"{self.path}:{line}"
            where += ": "
        super().__init__(where + message)

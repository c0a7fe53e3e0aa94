"""Progress of the forward passes (the model's, the treebank's, the controls') and of probe fitting, written past
pytest's output capture.

The pass runs in the setup of the first check, after pytest has written that file's prefix
(``test_mm_cone.py ``) and perhaps some result letters; the progress takes its own line(s) and then
writes the prefix back, so the letters that follow stay attributed to their file. On a terminal the line
is rewritten in place (the prefix is overwritten, then restored under it); in a non-TTY CI log a line is
printed at each quarter, so logs stay short and readable.
"""
from __future__ import annotations

from typing import Any, Optional


class Progress:
    """Callable taking the number of samples just finished."""

    def __init__(self, config: Any, total: Optional[int] = None) -> None:
        self.config = config
        self.total = total
        self.done = 0
        self._next_quarter = 1
        self._prefix = ""
        self._drawn = 0

    def _writer(self) -> Any:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        return None if reporter is None else reporter._tw

    def start(self, total: int, label: str = "forward pass", unit: str = "samples") -> None:
        self.total, self.done, self._next_quarter, self.label, self.unit = total, 0, 1, label, unit

    def __call__(self, n: int) -> None:
        try:
            capture = self.config.pluginmanager.get_plugin("capturemanager")
            if capture is None:
                self._show(n)
                return
            with capture.global_and_fixture_disabled():
                self._show(n)
        except Exception as exc:  # progress display must never break a run
            import os
            if os.environ.get("MMDIAG_DEBUG"):
                raise exc

    def _show(self, n: int) -> None:
        writer = self._writer()
        if writer is None or not self.total or self.config.get_verbosity() < 0:
            return
        if self.done == 0:  # what pytest has on the current line (the file's prefix and its letters so far)
            self._prefix = str(getattr(writer, "_current_line", "") or "")
            self._drawn = len(self._prefix)
        self.done += n
        finished = self.done >= self.total
        text = (f"mmdiag: {getattr(self, 'label', 'forward pass')} {min(self.done, self.total)}/{self.total} "
                f"{getattr(self, 'unit', 'samples')}")
        stream = getattr(writer, "_file", None)
        if stream is not None and getattr(stream, "isatty", lambda: False)():
            writer.write("\r" + text + " " * max(0, self._drawn - len(text)), flush=True)
            self._drawn = max(self._drawn, len(text))
            if finished:
                writer.write("\n" + self._prefix, flush=True)
            return
        if self.done == n and self._prefix:
            writer.line("")
        if finished or self.done * 4 >= self._next_quarter * self.total:
            while self._next_quarter * self.total <= self.done * 4:
                self._next_quarter += 1
            writer.line(text)
            if finished and self._prefix:
                writer.write(self._prefix, flush=True)

"""Progress of the forward passes (the model's, the treebank's, the controls') and of probe fitting, written past
pytest's output capture.

On a terminal the line is rewritten in place; in a non-TTY CI log a line is
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
        self.done += n
        text = f"mmdiag: {getattr(self, 'label', 'forward pass')} {self.done}/{self.total} {getattr(self, 'unit', 'samples')}"
        stream = getattr(writer, "_file", None)
        if stream is not None and getattr(stream, "isatty", lambda: False)():
            writer.write("\r" + text + ("\n" if self.done >= self.total else ""), flush=True)
            return
        if self.done == n:
            writer.line("")
        if self.done >= self.total or self.done * 4 >= self._next_quarter * self.total:
            while self._next_quarter * self.total <= self.done * 4:
                self._next_quarter += 1
            writer.line(text)

"""The gate's verdict over a run's results: counts by status and one honest sentence.

Shared by the terminal table, the HTML report and the Markdown summary, so the three
never disagree. Skipped checks are not counted as having run; a value without a
threshold (``info``) is reported, not counted as a pass.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

#: statuses in display order (DESIGN.md §8); any other status string follows
STATUS_ORDER = ("fail", "error", "warn", "pass", "info", "skip")


def _status(result: Any) -> str:
    status = result.get("status") if isinstance(result, Mapping) else getattr(result, "status", None)
    return str(status or "unknown")


@dataclass(frozen=True)
class Verdict:
    """Counts of a run's results by status, and the gate's outcome."""

    counts: dict
    total: int

    @classmethod
    def of(cls, results: Iterable[Any]) -> "Verdict":
        statuses = [_status(r) for r in results]
        return cls(dict(Counter(statuses)), len(statuses))

    def count(self, status: str) -> int:
        return int(self.counts.get(status, 0))

    @property
    def ran(self) -> int:
        """Results that produced an outcome (every status but skip)."""
        return self.total - self.count("skip")

    @property
    def outcome(self) -> str:
        """``fail`` (a failure or error), ``warn``, ``pass``, or ``empty`` (nothing produced a value)."""
        if self.count("fail") or self.count("error"):
            return "fail"
        if self.ran == 0:
            return "empty"
        return "warn" if self.count("warn") else "pass"

    def sentence(self) -> str:
        """E.g. ``2 of 145 results failed or errored; 3 warn; 120 info (no threshold); 8 skipped.``"""
        if self.total == 0:
            return "No results."
        skipped = self.count("skip")
        tail = []
        if self.count("info"):
            tail.append(f"{self.count('info')} info (no threshold)")
        if skipped:
            tail.append(f"{skipped} skipped")
        bad = self.count("fail") + self.count("error")
        gated = self.count("pass") + self.count("warn") + self.count("fail")
        if self.outcome == "empty":
            return f"No check produced a value ({skipped} skipped)."
        if bad:
            head = f"{bad} of {self.ran} results failed or errored"
            if self.count("warn"):
                tail.insert(0, f"{self.count('warn')} warn")
        elif self.count("warn"):
            head = f"No failures; {self.count('warn')} of {gated} gated results warn"
        elif gated:
            head = f"All {gated} gated results passed"
        else:
            head = "No result has a threshold"
        return "; ".join([head, *tail]) + "."

    def ordered(self) -> list[tuple[str, int]]:
        """(status, count) in display order, then any other status."""
        known = [(s, self.count(s)) for s in STATUS_ORDER if self.count(s)]
        return known + sorted((s, n) for s, n in self.counts.items() if s not in STATUS_ORDER)

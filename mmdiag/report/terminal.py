"""The rich summary table printed after pytest's own summary."""
from __future__ import annotations

import io
import math
from typing import Iterable, Optional

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mmdiag.checkspec import FAMILY_ORDER
from mmdiag.report.verdict import Verdict
from mmdiag.thresholds import Result, param_id

STYLES = {"pass": "green", "warn": "yellow", "fail": "bold red", "skip": "dim", "error": "bold magenta",
          "info": "cyan"}


def family(check: str) -> str:
    return check.split(".", 1)[0]


def format_value(value: Optional[float]) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.4g}"


def build_table(results: Iterable[Result], title: str, with_deltas: bool = False) -> Table:
    """One row per result, grouped by family (a section line between families); the title and every cell are
    printed literally (rich markup in them is text, not style)."""
    rows = sorted(results, key=lambda r: (FAMILY_ORDER.index(family(r.check)) if family(r.check) in FAMILY_ORDER
                                          else len(FAMILY_ORDER), r.check))
    table = Table(title=Text(title), title_justify="left", show_lines=False, expand=False)
    table.add_column("check", no_wrap=True)
    table.add_column("params", no_wrap=True)
    table.add_column("value", justify="right")
    table.add_column("threshold")
    if with_deltas:
        table.add_column("Δ baseline", justify="right")
    table.add_column("status")
    previous = None
    for r in rows:
        if previous is not None and family(r.check) != previous:
            table.add_section()
        previous = family(r.check)
        # every cell is a Text, never a markup string: a check name, parameter or threshold a user wrote
        # ("[bold]", "[/]") is printed literally instead of restyling the table or crashing rich
        cells = [Text(str(r.check)), Text(param_id(r.params)), Text(format_value(r.value)),
                 Text(r.threshold.describe() if r.threshold else "-")]
        if with_deltas:
            delta = (r.baseline or {}).get("delta")
            cells.append(Text("-" if delta is None else f"{delta:+.4g}"))
        cells.append(Text(str(r.status), style=STYLES.get(r.status, "")))
        table.add_row(*cells)
    return table


def table_notes(results: Iterable[Result]) -> dict[str, list[str]]:
    """The distinct ``details["note"]`` remarks of the results (e.g. probes fitted on few sentences), each with
    the checks and params that carry it: printed under the table, which has no message column."""
    notes: dict[str, list[str]] = {}
    for r in results:
        note = (r.details or {}).get("note") if isinstance(r.details, dict) else None
        if note:
            where = f"{r.check}[{r.params['modality']}]" if "modality" in (r.params or {}) else r.check
            if where not in notes.setdefault(str(note), []):
                notes[str(note)].append(where)
    return notes


def render(results: list[Result], title: str, width: int, color: bool, with_deltas: bool = False) -> str:
    """Render the table to a string for pytest's terminal writer (ANSI only when ``color``)."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=max(width, 60), force_terminal=color, no_color=not color,
                      color_system="standard" if color else None, highlight=False, emoji=False)
    console.print(build_table(results, title, with_deltas))
    for note, checks in table_notes(results).items():
        console.print(Text(f"note ({', '.join(checks)}): {note}"), soft_wrap=True)  # one greppable line
    verdict = Verdict.of(results)
    console.print(Text(verdict.sentence() + "  (" + ", ".join(f"{n} {status}" for status, n in verdict.ordered())
                       + ")"))
    return buffer.getvalue()

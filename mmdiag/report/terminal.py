"""The rich summary table printed after pytest's own summary.

``--mm-table=compact`` (default) prints a per-layer check as one row per check and modality (the layer
range, min..max over the layers, and, where the terminal is wide enough, a sparkline with the peak layer;
see :mod:`mmdiag.report.compact`); ``--mm-table=full`` one row per layer. Lines carry no trailing blanks
and the verdict never wraps mid-phrase, so an 80-column CI log stays readable.
"""
from __future__ import annotations

import io
import math
from typing import Iterable, Optional

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mmdiag.checkspec import FAMILY_ORDER
from mmdiag.report.compact import Row, rows, sparkline
from mmdiag.report.verdict import Verdict
from mmdiag.thresholds import Result

STYLES = {"pass": "green", "warn": "yellow", "fail": "bold red", "skip": "dim", "error": "bold magenta",
          "info": "cyan"}
TABLES = ("compact", "full")


def family(check: str) -> str:
    return check.split(".", 1)[0]


def format_value(value: Optional[float]) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value + 0.0:.4g}"  # + 0.0: a negative zero prints as 0


def _value_cell(row: Row) -> str:
    if not row.grouped:
        return format_value(row.results[0].value)
    found = row.value_range()
    if found is None:
        return "-"
    low, high = found
    return format_value(low) if low == high else f"{format_value(low)}..{format_value(high)}"


def _layers_cell(row: Row) -> str:
    if not row.grouped:
        return ""
    peak = row.peak_layer()
    spark = sparkline(row.values())
    return f"{spark} max L{peak:02d}" if peak is not None and spark else spark


def _status_style(status: str) -> str:
    return STYLES.get(status.split(" ", 1)[0], "")


def build_table(results: Iterable[Result], title: Optional[str], with_deltas: bool = False, table: str = "compact",
                layers_column: bool = True, narrow: bool = False) -> Table:
    """Rows grouped by family (a section line between families); the title and every cell are printed
    literally (rich markup in them is text, not style). ``table``: ``compact`` or ``full`` (see the module);
    ``narrow``: no vertical rules (what fits an 80-column log)."""
    ordered = sorted(results, key=lambda r: (FAMILY_ORDER.index(family(r.check)) if family(r.check) in FAMILY_ORDER
                                             else len(FAMILY_ORDER), r.check))
    lines = rows(ordered, compact=table == "compact")
    with_layers = layers_column and any(row.grouped for row in lines)
    # narrow: a rule under the header only, and one blank between columns' paddings (no box edges)
    out = Table(title=Text(title) if title else None, title_justify="left", show_lines=False, expand=False,
                **({"box": box.SIMPLE_HEAD, "pad_edge": False, "show_edge": False, "collapse_padding": True}
                   if narrow else {}))
    out.add_column("check", no_wrap=True)
    out.add_column("params", no_wrap=True)
    out.add_column("value", justify="right", no_wrap=True)
    if with_layers:
        out.add_column("per layer", no_wrap=True)
    out.add_column("threshold")
    if with_deltas:
        out.add_column("Δ baseline", justify="right")
    out.add_column("status", no_wrap=True)
    previous = None
    for row in lines:
        if previous is not None and family(row.check) != previous:
            out.add_section()
        previous = family(row.check)
        # every cell is a Text, never a markup string: a check name, parameter or threshold a user wrote
        # ("[bold]", "[/]") is printed literally instead of restyling the table or crashing rich
        cells = [Text(str(row.check)), Text(row.params()), Text(_value_cell(row))]
        if with_layers:
            cells.append(Text(_layers_cell(row)))
        cells.append(Text(row.threshold()))
        if with_deltas:
            delta = row.delta()
            cells.append(Text("-" if delta is None else f"{delta:+.4g}"))
        status = row.status()
        cells.append(Text(status, style=_status_style(status)))
        out.add_row(*cells)
    return out


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


def fold(title: str, width: int, separator: str = " · ") -> str:
    """``title`` broken at its separators into lines of at most ``width`` (a part longer than that keeps its
    own line), continuation lines indented by two spaces."""
    lines: list[str] = []
    for part in title.split(separator):
        if lines and len(lines[-1]) + len(separator) + len(part) <= width:
            lines[-1] += separator + part
        else:
            lines.append(part if not lines else "  " + part)
    return "\n".join(lines)


def _fits(console: Console, table: Table, width: int) -> bool:
    """Whether ``table`` renders within ``width`` without wrapping a cell (measured unclamped)."""
    return console.measure(table, options=console.options.update_width(10 ** 4)).maximum <= width


def render(results: list[Result], title: str, width: int, color: bool, with_deltas: bool = False,
           table: str = "compact") -> str:
    """Render the table to a string for pytest's terminal writer (ANSI only when ``color``).

    The sparkline column, then the vertical rules, are dropped when the table would not fit ``width``.
    """
    buffer = io.StringIO()
    width = max(width, 60)
    console = Console(file=buffer, width=width, force_terminal=color, no_color=not color,
                      color_system="standard" if color else None, highlight=False, emoji=False)
    results = list(results)
    # the widest layout that fits: with the sparklines, without them, without vertical rules
    for layers_column, narrow in ((True, False), (False, False), (False, True)):
        built = build_table(results, None, with_deltas, table, layers_column, narrow)
        if _fits(console, built, width):
            break
    console.print(Text(fold(title, width)), soft_wrap=True)  # never broken mid-path by rich
    console.print(built)
    if narrow:  # no bottom rule: a blank line ends the table
        console.print()
    for note, checks in table_notes(results).items():
        console.print(Text(f"note ({', '.join(checks)}): {note}"), soft_wrap=True)  # one greppable line
    verdict = Verdict.of(results)
    sentence = verdict.sentence()
    counts = "(" + ", ".join(f"{n} {status}" for status, n in verdict.ordered()) + ")"
    console.print(Text(f"{sentence}  {counts}" if len(sentence) + 2 + len(counts) <= width else
                       f"{sentence}\n{counts}"))
    return "".join(line.rstrip(" ") + "\n" for line in buffer.getvalue().splitlines())

"""The example-tree figure: one sentence, its gold tree above and the probe's tree below.

Hand-written SVG rather than matplotlib: words sit on a line, gold arcs (head →
dependent) are drawn above and the distance probe's predicted edges (the
minimum spanning tree of its distances) below, green when they are gold edges
and red and dashed when not, so a reader sees *which* attachments the probe
gets wrong.  Words are escaped with :func:`markupsafe.escape`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Optional

from markupsafe import escape

from mmdiag.report.figures.coerce import num

__all__ = ["MAX_TREE_WORDS", "tree_svg"]

#: Most words drawn in the example tree.
MAX_TREE_WORDS = 60
_TREE_FONT = 13
_CHAR_W = 7.4  # average advance of a 13px sans-serif character, for the layout only
_GOLD = "#444444"
_OK = "#2ca02c"
_BAD = "#d62728"


def _arc(x1: float, x2: float, y: float, h: float) -> str:
    """A cubic Bézier from (x1, y) to (x2, y) whose peak is ``h`` away (h<0: above)."""
    c = y + h * 4.0 / 3.0
    return f"M{x1:.1f} {y:.1f}C{x1:.1f} {c:.1f} {x2:.1f} {c:.1f} {x2:.1f} {y:.1f}"


def tree_svg(example: Any) -> Optional[str]:
    """An example sentence with its gold tree above and predicted tree below.

    ``example`` is ``series["probe"]["example"]``: ``{"words": [...],
    "gold_heads": [...] (1-based, 0 = root, as in DepTree), "pred_edges":
    [[i, j], ...] (0-based word indices, undirected: the minimum spanning tree
    of the probe's predicted distances)}``.  Gold arcs point from head to
    dependent; a predicted edge is green when it is a gold edge (either
    direction) and red and dashed when it is not.  Out-of-range indices are
    ignored.  Returns None without words.
    """
    if not isinstance(example, Mapping):
        return None
    words = example.get("words")
    if not isinstance(words, (list, tuple)) or not words:
        return None
    words = ["" if w is None else str(w) for w in words[:MAX_TREE_WORDS]]
    n = len(words)

    gold: list[tuple[int, int]] = []  # (head, dependent), 0-based
    root: Optional[int] = None
    heads = example.get("gold_heads")
    if isinstance(heads, (list, tuple)):
        for dep, head in enumerate(heads[:n]):
            h = num(head)
            if not math.isfinite(h) or h != int(h):
                continue
            h = int(h)
            if h == 0 and root is None:
                root = dep
            elif 1 <= h <= n and h - 1 != dep:
                gold.append((h - 1, dep))
    gold_set = {frozenset(e) for e in gold}

    pred: list[tuple[int, int]] = []
    edges = example.get("pred_edges")
    if isinstance(edges, (list, tuple)):
        for e in edges:
            if isinstance(e, (list, tuple)) and len(e) == 2:
                a, b = num(e[0]), num(e[1])
                if (math.isfinite(a) and math.isfinite(b) and a == int(a) and b == int(b)
                        and 0 <= a < n and 0 <= b < n and a != b):
                    pred.append((int(a), int(b)))

    widths = [max(28.0, _CHAR_W * len(w) + 14.0) for w in words]
    xs, x = [], 10.0
    for w in widths:
        xs.append(x + w / 2)
        x += w
    width = x + 10.0

    def height(i: int, j: int) -> float:
        return min(150.0, 10.0 + 11.0 * abs(i - j))

    up = max([height(a, b) for a, b in gold] + ([26.0] if root is not None else [0.0])) + 18
    down = max([height(a, b) for a, b in pred] + [0.0]) + 8
    y_gold = up + 4
    y_text = y_gold + _TREE_FONT + 2
    y_pred = y_text + 6
    legend_y = y_pred + down + 14
    total_h = legend_y + 8
    n_ok = sum(frozenset(e) in gold_set for e in pred)
    summary = (f"above: gold tree (head → dependent) · below: predicted tree; "
               f"green = gold edge, red dashed = not a gold edge · {n_ok}/{len(pred)} correct")
    width = max(width, 6.4 * len(summary) + 20.0)

    out = [f'<svg class="tree" data-plot="probe-tree" width="{width:.0f}" height="{total_h:.0f}" '
           f'viewBox="0 0 {width:.0f} {total_h:.0f}" role="img" '
           f'aria-label="gold tree above the words, predicted tree below">',
           '<defs><marker id="probe-tree-arrow" viewBox="0 0 10 10" refX="9" refY="5" '
           'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
           f'<path d="M0 0L10 5L0 10z" fill="{_GOLD}"/></marker></defs>',
           f'<g font-family="DejaVu Sans, Arial, Helvetica, sans-serif" font-size="{_TREE_FONT}">']
    for head, dep in gold:
        # leave the head a little towards the dependent so arcs sharing a word part
        x_head = xs[head] + (5.0 if dep > head else -5.0)
        out.append(f'<path class="gold" d="{_arc(x_head, xs[dep], y_gold, -height(head, dep))}" '
                   f'fill="none" stroke="{_GOLD}" stroke-width="1.3" '
                   'marker-end="url(#probe-tree-arrow)"/>')
    if root is not None:
        top = y_gold - up + 6
        out.append(f'<path class="gold root" d="M{xs[root]:.1f} {top:.1f}V{y_gold:.1f}" '
                   f'stroke="{_GOLD}" stroke-width="1.3" stroke-dasharray="2 2" '
                   'marker-end="url(#probe-tree-arrow)"/>')
        out.append(f'<text x="{xs[root] + 5:.1f}" y="{top + 8:.1f}" '
                   f'font-size="10" fill="{_GOLD}">ROOT</text>')
    for i, w in enumerate(words):
        out.append(f'<text class="word" x="{xs[i]:.1f}" y="{y_text:.1f}" '
                   f'text-anchor="middle">{escape(w)}</text>')
    for a, b in pred:
        ok = frozenset((a, b)) in gold_set
        style = f'stroke="{_OK}"' if ok else f'stroke="{_BAD}" stroke-dasharray="4 3"'
        out.append(f'<path class="pred {"ok" if ok else "bad"}" '
                   f'd="{_arc(xs[a], xs[b], y_pred, height(a, b))}" fill="none" {style} '
                   'stroke-width="1.5"/>')
    out.append(f'<text x="10" y="{legend_y:.1f}" font-size="11" fill="#555">{escape(summary)}</text>')
    out.append("</g></svg>")
    return "\n".join(out)

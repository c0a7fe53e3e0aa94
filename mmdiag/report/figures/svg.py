"""A matplotlib figure as an SVG fragment that can be inlined in the HTML page.

The figure is saved with ``svg.fonttype = "none"`` (see :mod:`.style`: text
stays text, no embedded glyphs).  The XML prolog, DOCTYPE, metadata and
namespace declarations are stripped (the HTML parser does not need them), and
every ``id`` is prefixed with the plot's own prefix so that several inline SVGs
never collide in one document.  Text from the data is XML-escaped by
matplotlib's SVG writer.
"""
from __future__ import annotations

import io
import re
from collections import Counter

from matplotlib.figure import Figure

__all__ = ["prefix_ids", "to_svg"]

_NO_METADATA = {"Creator": None, "Date": None, "Format": None, "Type": None}
_ID_RE = re.compile(r'\bid="([^"]+)"')
_REF_RE = re.compile(r'\bid="([^"]+)"|\bhref="#([^"]+)"|url\(#([^)]+)\)')


def prefix_ids(svg: str, prefix: str) -> str:
    """Prefix every id (and every reference to it) with ``prefix``."""
    ids = set(_ID_RE.findall(svg))
    if not ids:
        return svg

    seen: Counter = Counter()

    def repl(m: re.Match) -> str:
        if m.group(1) is not None:
            # matplotlib can repeat an id (identical images): keep ids unique
            name = m.group(1)
            seen[name] += 1
            extra = "" if seen[name] == 1 else f"-{seen[name]}"
            return f'id="{prefix}-{name}{extra}"'
        for group, fmt in ((2, 'href="#{}"'), (3, "url(#{})")):
            name = m.group(group)
            if name is not None:
                return fmt.format(f"{prefix}-{name}") if name in ids else m.group(0)
        return m.group(0)  # pragma: no cover - one group always matches

    return _REF_RE.sub(repl, svg)


def to_svg(fig: Figure, prefix: str) -> str:
    """Serialise ``fig`` as an inline-ready ``<svg class="plot" data-plot=prefix>`` string."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata=_NO_METADATA)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)
    svg = re.sub(r'\s+xmlns(?::\w+)?="[^"]*"', "", svg)
    svg = re.sub(r"\n\s*", "\n", svg)  # indentation is a few % of the bytes
    svg = prefix_ids(svg, prefix)
    return svg.replace("<svg ", f'<svg class="plot" data-plot="{prefix}" ', 1).strip()

"""What mmdiag knows about a check, declared once: :class:`CheckSpec`.

A check is a pytest function marked ``@pytest.mark.mm(SPEC)``. Its spec says
everything the rest of mmdiag needs: how the check is parametrised, its default
threshold, which direction of change is worse (for baseline comparison), what
the forward pass must record for it, the series and plots it publishes, and
what the value means. Thresholds, baselines, the HTML report, the terminal
table, the recorder and the docs all read the spec; nothing keeps a second table.

>>> from mmdiag import CheckSpec
>>> spec = CheckSpec("mine.spread", title="Spread of the embeddings", over=("modality",),
...                  threshold="<:0.5", higher_is_better=False)
>>> spec.family, spec.threshold.describe()
('mine', '< 0.5 (fail)')
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional, Union

from mmdiag.errors import SpecError
from mmdiag.thresholds import LEVELS, OPS, Threshold

#: Families in report order with their titles; a user's own family follows in order of appearance.
FAMILIES: dict[str, str] = {
    "cone": "Cone effect",
    "gap": "Modality gap",
    "geometry": "Representation geometry",
    "probe": "Structural probes",
    "attention": "Attention and hidden states",
}
FAMILY_ORDER: tuple[str, ...] = tuple(FAMILIES)

#: What a check can ask the forward pass to record (beyond pooled states and final embeddings, always recorded).
RECORDINGS = ("words", "regions", "attentions")
#: Parametrisation axes a check may be expanded over (``over=``); a user's own parametrize arguments come on top.
AXES = (("modality",), ("modality", "layer"), ("direction",), ("direction", "layer"), ("layer",))
#: How a check's uncertainty is estimated (see the release-gate docs).
UNCERTAINTY = ("samples", "sentences", "none")

_NAME = re.compile(r"^[a-z_][a-z_0-9]*\.[a-z_][a-z_0-9]*$")
_THRESHOLD = re.compile(r"^\s*(?P<op><=|>=|<|>)\s*:\s*(?P<value>[^:\s]+)\s*(?::\s*(?P<level>\w+))?\s*$")


@dataclass(frozen=True)
class PlotSpec:
    """A figure a check's series feeds: ``figure`` names a function in :mod:`mmdiag.report.figures`.

    ``series`` is the path into results.json's ``series`` (``("probe", "example")``).
    Plots are drawn once per page even when several checks declare the same ``id``.
    """

    id: str
    series: tuple[str, ...]
    figure: str
    caption: str

    def to_json(self) -> dict:
        return {"id": self.id, "series": list(self.series), "figure": self.figure, "caption": self.caption}


def parse_threshold(text: str, where: str) -> Threshold:
    """``"<:0.5"`` or ``"<=:1.19:warn"`` into a :class:`Threshold`; ``where`` names the source in errors."""
    match = _THRESHOLD.match(text)
    if not match:
        raise SpecError(f"{where}: threshold {text!r} is not OP:VALUE[:LEVEL] (operators {', '.join(OPS)}; "
                        f"levels {', '.join(LEVELS)})")
    try:
        value = float(match["value"])
    except ValueError:
        raise SpecError(f"{where}: threshold value {match['value']!r} is not a number") from None
    if value != value:
        raise SpecError(f"{where}: threshold value is NaN; give a number")
    level = match["level"] or "fail"
    if level not in LEVELS:
        raise SpecError(f"{where}: unknown level {level!r}; levels: {', '.join(LEVELS)}")
    return Threshold(match["op"], value, level)


@dataclass(frozen=True)
class CheckSpec:
    """One check's declaration. Only ``name`` is required; everything else has a sensible default.

    - ``name``: ``family.metric`` (lower case); the family is the part before the dot.
    - ``title``: a few words for tables and the report.
    - ``over``: parametrisation axes expanded from the model's layout (see :data:`AXES`).
    - ``threshold``: the default threshold (a :class:`Threshold` or ``"OP:VALUE[:LEVEL]"``); None = not gated.
    - ``higher_is_better``: True / False, or None when any change matters (baseline comparison).
    - ``needs``: recordings of the forward pass (:data:`RECORDINGS`).
    - ``series`` / ``plots``: the series keys it publishes and the figures they feed.
    - ``meaning``, ``healthy``, ``source``: what the value says, the healthy range, the paper.
    - ``uncertainty``: how the value's sampling uncertainty is estimated (:data:`UNCERTAINTY`).
    - ``tolerance``: the default allowed worsening against a baseline (``"5%"`` or absolute ``"0.02"``).
    - ``blocks``: layers are transformer blocks 1..L (attention) rather than hidden-state entries 0..L.
    - ``needs_joint``: only one (skipping) item for models without joint text-image attention;
      ``cross_ok``: models with cross-attention streams (region-feature models) count as joint.
    - ``pairs``: needs matched image-caption pairs (skips on ``--mm-data=noise``).
    """

    name: str
    title: str = ""
    over: tuple[str, ...] = ()
    threshold: Optional[Threshold] = None
    higher_is_better: Optional[bool] = None
    needs: frozenset = frozenset()
    series: tuple[str, ...] = ()
    plots: tuple[PlotSpec, ...] = ()
    meaning: str = ""
    healthy: str = ""
    source: str = ""
    uncertainty: str = "samples"
    tolerance: str = "5%"
    blocks: bool = False
    needs_joint: bool = False
    cross_ok: bool = False
    pairs: bool = False

    def __post_init__(self) -> None:
        where = f"CheckSpec({self.name!r})"
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise SpecError(f"{where}: a check name is 'family.metric' in lower case, e.g. 'mine.spread'")
        over = tuple(self.over)
        if over and over not in AXES:
            raise SpecError(f"{where}: over={over!r} is not one of {', '.join(map(str, AXES))}; "
                            "add other parameters with @pytest.mark.parametrize")
        object.__setattr__(self, "over", over)
        if isinstance(self.threshold, str):
            object.__setattr__(self, "threshold", parse_threshold(self.threshold, where))
        elif self.threshold is not None and not isinstance(self.threshold, Threshold):
            raise SpecError(f"{where}: threshold must be a Threshold or 'OP:VALUE[:LEVEL]'")
        needs = frozenset((self.needs,) if isinstance(self.needs, str) else self.needs)
        unknown = sorted(needs - set(RECORDINGS))
        if unknown:
            raise SpecError(f"{where}: unknown needs {', '.join(unknown)}; accepted: {', '.join(RECORDINGS)}")
        object.__setattr__(self, "needs", needs)
        object.__setattr__(self, "series", tuple((self.series,) if isinstance(self.series, str) else self.series))
        object.__setattr__(self, "plots", tuple(self.plots))
        if self.uncertainty not in UNCERTAINTY:
            raise SpecError(f"{where}: uncertainty={self.uncertainty!r}; accepted: {', '.join(UNCERTAINTY)}")
        if self.higher_is_better not in (True, False, None):
            raise SpecError(f"{where}: higher_is_better is True, False or None (any change matters)")

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def worse_direction(self) -> int:
        """+1 when a larger value is worse, -1 when a smaller one is, 0 when any change counts."""
        if self.higher_is_better is None:
            return 0
        return -1 if self.higher_is_better else +1

    @property
    def gated(self) -> bool:
        return self.threshold is not None

    def to_json(self) -> dict:
        """The facts a report needs to render this check without importing it."""
        doc: dict[str, Any] = {"title": self.title, "family": self.family, "over": list(self.over),
                               "higher_is_better": self.higher_is_better,
                               "threshold": self.threshold.to_json() if self.threshold else None,
                               "meaning": self.meaning, "healthy": self.healthy, "source": self.source,
                               "uncertainty": self.uncertainty, "tolerance": self.tolerance}
        if self.plots:
            doc["plots"] = [p.to_json() for p in self.plots]
        return doc

    @classmethod
    def from_json(cls, name: str, doc: Mapping[str, Any]) -> "CheckSpec":
        """The inverse of :meth:`to_json` (what a results.json says about a check); unknown keys are ignored."""
        t = doc.get("threshold")
        threshold = Threshold(t["op"], float(t["value"]), t.get("level", "fail")) if isinstance(t, Mapping) else None
        plots = tuple(PlotSpec(p["id"], tuple(p["series"]), p["figure"], p.get("caption", ""))
                      for p in doc.get("plots", ()) if isinstance(p, Mapping))
        hib = doc.get("higher_is_better")
        return cls(name, title=str(doc.get("title") or ""), over=tuple(doc.get("over") or ()), threshold=threshold,
                   higher_is_better=hib if hib in (True, False) else None, plots=plots,
                   meaning=str(doc.get("meaning") or ""), healthy=str(doc.get("healthy") or ""),
                   source=str(doc.get("source") or ""),
                   uncertainty=doc.get("uncertainty") if doc.get("uncertainty") in UNCERTAINTY else "samples",
                   tolerance=str(doc.get("tolerance") or "5%"))


_FIELDS = {f.name for f in fields(CheckSpec)} - {"name"}


def spec_from_marker(args: tuple, kwargs: Mapping[str, Any], where: str) -> CheckSpec:
    """The spec of ``@pytest.mark.mm(SPEC)`` or ``@pytest.mark.mm("name", over=..., threshold=..., ...)``."""
    if len(args) != 1:
        raise SpecError(f"{where}: @pytest.mark.mm takes one CheckSpec or a check name, e.g. "
                        "@pytest.mark.mm('mine.spread', over=('modality',))")
    first: Union[CheckSpec, str] = args[0]
    if isinstance(first, CheckSpec):
        if kwargs:
            raise SpecError(f"{where}: @pytest.mark.mm(spec) takes no keywords; put them in the CheckSpec")
        return first
    unknown = sorted(set(kwargs) - _FIELDS)
    if unknown:
        raise SpecError(f"{where}: @pytest.mark.mm got unknown keywords {', '.join(unknown)}; "
                        f"accepted: {', '.join(sorted(_FIELDS))}")
    try:
        return CheckSpec(first, **dict(kwargs))
    except TypeError as exc:
        raise SpecError(f"{where}: {exc}") from None


def marker_spec(node: Any) -> Optional[CheckSpec]:
    """The spec of a collected item or function definition carrying ``@pytest.mark.mm`` (None without one)."""
    marker = node.get_closest_marker("mm")
    if marker is None:
        return None
    return spec_from_marker(tuple(marker.args), marker.kwargs, getattr(node, "nodeid", "") or str(node))


__all__ = ["AXES", "CheckSpec", "FAMILIES", "FAMILY_ORDER", "PlotSpec", "RECORDINGS", "UNCERTAINTY",
           "marker_spec", "parse_threshold", "spec_from_marker"]

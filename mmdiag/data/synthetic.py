"""The built-in ``synthetic`` dataset: rendered shapes with gold structure.

Each sample is a PIL-rendered scene of 2–4 coloured shapes (circle, square,
triangle, star, diamond; three sizes) in distinct cells of a 3×3 grid on a plain
or lightly noisy background, and a caption from a small grammar that describes
some or all of them with spatial relations read off the rendered positions. The
grammar emits, word by word, a gold dependency tree in Universal Dependencies
conventions (UPOS tags, UD v2 deprels), the grounded noun phrases
(``det (adj)* noun`` → the shape's pixel bounding box), and from those the
scene tree of Milewski et al. (2022, arXiv:2203.09306, see
:mod:`mmdiag.data.scene_tree`).

Caption shapes (recursively combined, so lengths and tree depths vary, about
5–30 words):

* existential: ``there is a small red circle and a blue star .``
* copular: ``a red circle is above a large blue square .``
* verbal: ``the green triangle sits to the left of a yellow star .``
* listing: ``the image shows a circle , a purple square and a star .``
* noun modifiers: a prepositional phrase (``a circle below the star``) or a
  relative clause (``a circle that is next to the star``), nested;
* clause coordination: ``... and a purple square is below it .``

UD analyses used: copular PP predicates are the clause root (``nsubj``,
``cop``, ``case`` attach to the PP's noun); ``to the left of X`` has ``left``
as head with ``X`` as its ``nmod``; ``next to`` is ``case`` + ``fixed``;
existential ``there`` is ``expl`` of ``is``; conjuncts attach to the first
conjunct (``conj``) and ``cc``/``,`` (``punct``) to the following conjunct;
the final ``.`` is ``punct`` of the root.

Generation is deterministic: sample ``i`` depends only on ``(seed, i,
image_size)``, so ``make_synthetic(5, s)`` is a prefix of ``make_synthetic(10, s)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
from PIL import Image, ImageDraw

from mmdiag.data.scene_tree import scene_parents
from mmdiag.data.trees import validate_heads
from mmdiag.data.types import DeferredImage, DepTree, Phrase, Sample

__all__ = ["SYNTHETIC_VOCAB", "COLOURS", "SHAPES", "make_synthetic"]

#: Shape colours (RGB); shapes are drawn solid in exactly these values.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 0),
    "purple": (130, 40, 170),
    "orange": (250, 120, 0),
    "black": (20, 20, 20),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond")
#: Radius of each size as a fraction of a grid cell's side.
_SIZE_RADIUS = {"small": 0.17, "medium": 0.28, "large": 0.42}
_SIZE_WORDS = {"small": ("small", "tiny"), "large": ("large", "big")}
_BACKGROUNDS = ((255, 255, 255), (238, 238, 238), (245, 240, 225), (228, 236, 244))
_GRID = 3

_VERBS = ("sits", "rests", "lies", "stands", "appears")
_LIST_NOUNS = ("image", "picture", "scene")
_LIST_VERBS = ("shows", "contains")
_REL_PRONOUNS = ("that", "which")

SYNTHETIC_VOCAB: tuple[str, ...] = tuple(sorted(set(
    ("a", "an", "the", "there", "is", "it", "and", ",", ".",
     "above", "below", "under", "to", "left", "right", "of", "next", "beside", "near")
    + tuple(COLOURS) + SHAPES
    + tuple(w for ws in _SIZE_WORDS.values() for w in ws)
    + _VERBS + _LIST_NOUNS + _LIST_VERBS + _REL_PRONOUNS)))


@dataclass(frozen=True)
class _Shape:
    kind: str
    colour: str
    size: str
    cx: float
    cy: float
    box: tuple[float, float, float, float]


class _Caption:
    """Builds words, UPOS, deprels and heads left to right."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self.upos: list[str] = []
        self.rels: list[str] = []
        self.head: list[Optional[int]] = []   # 0-based, -1 = root
        self.phrases: list[Phrase] = []
        self.last: Optional[int] = None       # index of the last shape named

    def tok(self, word: str, upos: str) -> int:
        self.words.append(word)
        self.upos.append(upos)
        self.rels.append("")
        self.head.append(None)
        return len(self.words) - 1

    def attach(self, i: int, head: int, rel: str) -> None:
        self.head[i] = head
        self.rels[i] = rel


class _Grammar:
    def __init__(self, rng: np.random.Generator, shapes: list[_Shape], cell: float) -> None:
        self.rng = rng
        self.shapes = shapes
        self.cell = cell
        self.c = _Caption()

    # -- helpers ---------------------------------------------------------
    def p(self, prob: float) -> bool:
        return bool(self.rng.random() < prob)

    def pick(self, options):
        return options[int(self.rng.integers(len(options)))]

    def relation(self, a: int, b: int) -> str:
        """A spatial relation true of shape ``a`` relative to shape ``b``."""
        sa, sb = self.shapes[a], self.shapes[b]
        dx, dy = sa.cx - sb.cx, sa.cy - sb.cy
        cell = self.cell
        if np.hypot(dx, dy) < 1.5 * cell and self.p(0.3):
            return self.pick(("next to", "beside", "near"))
        if abs(dy) >= abs(dx):
            return self.pick(("below", "under")) if dy > 0 else "above"
        return "to the right of" if dx > 0 else "to the left of"

    # -- phrases ---------------------------------------------------------
    def np_(self, s: int, definite: bool = False) -> int:
        """``det (size) (colour) noun``, grounded; returns the noun's index."""
        c, sh = self.c, self.shapes[s]
        start = len(c.words)
        adjs: list[str] = []
        if sh.size in _SIZE_WORDS and self.p(0.55):
            adjs.append(self.pick(_SIZE_WORDS[sh.size]))
        if self.p(0.8):
            adjs.append(sh.colour)
        det = "the" if definite else ("an" if (adjs or [sh.kind])[0][0] in "aeiou" else "a")
        d = c.tok(det, "DET")
        a_idx = [c.tok(w, "ADJ") for w in adjs]
        n = c.tok(sh.kind, "NOUN")
        c.attach(d, n, "det")
        for i in a_idx:
            c.attach(i, n, "amod")
        c.phrases.append(Phrase(start, n + 1, sh.box, " ".join(c.words[start:n + 1])))
        c.last = s
        return n

    def np_mod(self, s: int, pool: list[int], prob: float, reserve: int = 0,
               definite: bool = False) -> int:
        """A noun phrase, optionally modified by a PP or relative clause about
        another shape taken from ``pool`` (keeping ``reserve`` shapes there)."""
        n = self.np_(s, definite=definite)
        if len(pool) > reserve and self.p(prob):
            other = pool.pop()
            rel = self.relation(s, other)
            obj = lambda: self.np_mod(  # noqa: E731
                other, pool, prob * 0.5, reserve, definite=self.p(0.3))
            c = self.c
            if self.p(0.5):
                h = self.pp(rel, obj)
                c.attach(h, n, "nmod")
            else:
                that = c.tok(self.pick(_REL_PRONOUNS), "PRON")
                cop = c.tok("is", "AUX")
                h = self.pp(rel, obj)
                c.attach(that, h, "nsubj")
                c.attach(cop, h, "cop")
                c.attach(h, n, "acl:relcl")
        return n

    def pp(self, rel: str, obj: Callable[[], int]) -> int:
        """Emit a spatial PP; returns its head (the object noun, or ``left``/``right``)."""
        c = self.c
        if rel.startswith("to the "):
            to = c.tok("to", "ADP")
            the = c.tok("the", "DET")
            side = c.tok(rel.split()[2], "NOUN")
            of = c.tok("of", "ADP")
            x = obj()
            c.attach(to, side, "case")
            c.attach(the, side, "det")
            c.attach(of, x, "case")
            c.attach(x, side, "nmod")
            return side
        if rel == "next to":
            nxt = c.tok("next", "ADJ")
            to = c.tok("to", "ADP")
            x = obj()
            c.attach(nxt, x, "case")
            c.attach(to, nxt, "fixed")
            return x
        prep = c.tok(rel, "ADP")
        x = obj()
        c.attach(prep, x, "case")
        return x

    # -- clauses ---------------------------------------------------------
    def relational(self, pool: list[int], copular: bool) -> int:
        """``NP is PP`` (copular, PP noun is root) or ``NP VERB PP`` (verb is root).

        Needs one shape in ``pool``; with only one, the object is ``it`` (the
        last shape named)."""
        c = self.c
        s = pool.pop()
        if pool:
            subj = self.np_mod(s, pool, 0.3, reserve=1, definite=self.p(0.3))
            o = pool.pop()
            obj = lambda: self.np_mod(o, pool, 0.25, definite=self.p(0.3))  # noqa: E731
        else:
            o = c.last
            assert o is not None
            subj = self.np_(s, definite=self.p(0.3))
            obj = lambda: c.tok("it", "PRON")  # noqa: E731
        rel = self.relation(s, o)
        if copular:
            cop = c.tok("is", "AUX")
            h = self.pp(rel, obj)
            c.attach(subj, h, "nsubj")
            c.attach(cop, h, "cop")
            return h
        verb = c.tok(self.pick(_VERBS), "VERB")
        h = self.pp(rel, obj)
        c.attach(subj, verb, "nsubj")
        c.attach(h, verb, "obl")
        return verb

    def existential(self, pool: list[int]) -> int:
        """``there is NP (and NP)*``."""
        c = self.c
        there = c.tok("there", "PRON")
        be = c.tok("is", "VERB")
        first = self.np_mod(pool.pop(), pool, 0.3)
        c.attach(there, be, "expl")
        c.attach(first, be, "nsubj")
        while pool and self.p(0.4):
            cc = c.tok("and", "CCONJ")
            m = self.np_mod(pool.pop(), pool, 0.2)
            c.attach(cc, m, "cc")
            c.attach(m, first, "conj")
        return be

    def listing(self, pool: list[int]) -> int:
        """``the image shows NP , NP and NP``."""
        c = self.c
        det = c.tok("the", "DET")
        noun = c.tok(self.pick(_LIST_NOUNS), "NOUN")
        verb = c.tok(self.pick(_LIST_VERBS), "VERB")
        c.attach(det, noun, "det")
        c.attach(noun, verb, "nsubj")
        k = int(self.rng.integers(2, len(pool) + 1))
        items = [pool.pop() for _ in range(k)]
        first = self.np_(items[0])
        c.attach(first, verb, "obj")
        for j, s in enumerate(items[1:], start=1):
            sep = c.tok("and" if j == k - 1 else ",", "CCONJ" if j == k - 1 else "PUNCT")
            m = self.np_(s)
            c.attach(sep, m, "cc" if j == k - 1 else "punct")
            c.attach(m, first, "conj")
        return verb

    def clause(self, pool: list[int], first: bool) -> int:
        if len(pool) >= 2 and first and self.p(0.15):
            return self.listing(pool)
        can_it = self.c.last is not None
        if len(pool) >= 2 or (pool and can_it and self.p(0.6)):
            r = self.rng.random()
            if r < 0.2:
                return self.existential(pool)
            return self.relational(pool, copular=r < 0.65)
        return self.existential(pool)

    def sentence(self) -> _Caption:
        c = self.c
        pool = [int(i) for i in self.rng.permutation(len(self.shapes))]
        if self.p(0.2):                       # describe only part of the scene
            del pool[int(self.rng.integers(1, len(pool))):]
        root = self.clause(pool, first=True)
        c.attach(root, -1, "root")
        while pool and self.p(0.75):
            cc = c.tok("and", "CCONJ")
            r2 = self.clause(pool, first=False)
            c.attach(cc, r2, "cc")
            c.attach(r2, root, "conj")
        dot = c.tok(".", "PUNCT")
        c.attach(dot, root, "punct")
        return c


def _polygon(kind: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if kind == "square":
        h = 0.85 * r
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if kind == "diamond":
        return [(cx, cy - r), (cx + 0.8 * r, cy), (cx, cy + r), (cx - 0.8 * r, cy)]
    if kind == "triangle":
        ang = np.deg2rad([-90.0, 30.0, 150.0])
    elif kind == "star":
        ang = np.deg2rad(-90.0 + 36.0 * np.arange(10))
        rad = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
        return [(cx + float(q) * np.cos(a), cy + float(q) * np.sin(a)) for a, q in zip(ang, rad)]
    else:  # pragma: no cover - internal
        raise ValueError(kind)
    return [(cx + r * float(np.cos(a)), cy + r * float(np.sin(a))) for a in ang]


def _render(rng: np.random.Generator, size: int) -> tuple[Image.Image, list[_Shape], float]:
    cell = size / _GRID
    bg = _BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))]
    if rng.random() < 0.5:
        noise = rng.integers(-8, 9, size=(size, size, 1), dtype=np.int16)
        arr = np.clip(np.asarray(bg, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, "RGB")
    else:
        img = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(img)
    k = int(rng.integers(2, 5))
    cells = rng.choice(_GRID * _GRID, size=k, replace=False)
    combos = rng.choice(len(SHAPES) * len(COLOURS), size=k, replace=False)
    colour_names = tuple(COLOURS)
    shapes: list[_Shape] = []
    for cell_id, combo in zip(cells, combos):
        kind = SHAPES[int(combo) % len(SHAPES)]
        colour = colour_names[int(combo) // len(SHAPES)]
        sz = ("small", "medium", "large")[int(rng.integers(3))]
        r = _SIZE_RADIUS[sz] * cell
        slack = max(cell / 2 - r - 2, 0.0)
        row, col = divmod(int(cell_id), _GRID)
        cx = (col + 0.5) * cell + float(rng.uniform(-slack, slack))
        cy = (row + 0.5) * cell + float(rng.uniform(-slack, slack))
        mask = Image.new("L", (size, size), 0)
        mdraw = ImageDraw.Draw(mask)
        fill = COLOURS[colour]
        if kind == "circle":
            xy = [cx - r, cy - r, cx + r, cy + r]
            draw.ellipse(xy, fill=fill)
            mdraw.ellipse(xy, fill=255)
        else:
            pts = _polygon(kind, cx, cy, r)
            draw.polygon(pts, fill=fill)
            mdraw.polygon(pts, fill=255)
        bbox = mask.getbbox()
        assert bbox is not None
        shapes.append(_Shape(kind, colour, sz, cx, cy, tuple(float(v) for v in bbox)))
    return img, shapes, cell


@dataclass(frozen=True)
class SceneImage(DeferredImage):
    """Scene ``index`` of ``seed``'s image, rendered when opened: the same pixels as the eager sample's."""

    seed: int
    index: int
    size: int

    def render(self) -> Image.Image:
        return _render(np.random.default_rng([self.seed, self.index]), self.size)[0]

    def identity(self) -> list:
        return ["synthetic", self.seed, self.index, self.size]


def _sample(seed: int, index: int, image_size: int, deferred: bool = False) -> Sample:
    rng = np.random.default_rng([int(seed), int(index)])
    image, shapes, cell = _render(rng, image_size)  # drawn first: the caption's draws follow the image's
    if deferred:
        image = SceneImage(int(seed), int(index), int(image_size))
    g = _Grammar(rng, shapes, cell)
    c = g.sentence()
    heads = tuple(h + 1 for h in c.head)  # type: ignore[operator]
    validate_heads(heads)
    words = tuple(c.words)
    tree = DepTree(words=words, heads=heads, upos=tuple(c.upos), deprels=tuple(c.rels))
    phrases = tuple(c.phrases)
    return Sample(
        uid=f"synthetic-{index:06d}",
        image=image,
        caption=" ".join(words),
        words=words,
        tree=tree,
        phrases=phrases,
        scene_parents=scene_parents(tree, phrases),
        meta={
            "source": "synthetic",
            "seed": int(seed),
            "shapes": [
                {"shape": s.kind, "colour": s.colour, "size": s.size,
                 "center": (s.cx, s.cy), "box": s.box}
                for s in shapes
            ],
        },
    )


def make_synthetic(n: int, seed: int = 0, image_size: int = 224, deferred: bool = False) -> list[Sample]:
    """Generate ``n`` rendered scenes with captions and gold structure.

    Deterministic in ``(seed, index, image_size)``; raises ValueError for
    ``n < 0`` or ``image_size < 32``. ``deferred``: each sample's image is a
    :class:`SceneImage` that renders the same pixels when opened
    (:func:`~mmdiag.data.images.open_image`), so that ``n`` samples do not hold
    ``n`` images (what a run uses).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 pixels, got {image_size}")
    return [_sample(seed, i, image_size, deferred) for i in range(n)]

"""Reader for Flickr30k Entities (Plummer et al., ICCV 2015, arXiv:1505.04870).

A Flickr30k Entities root ``DIR`` holds

* ``DIR/Sentences/<image_id>.txt``: the image's captions, one a line, with the
  grounded phrases marked up as ``[/EN#<entity>/<type>[/<type>...] words ...]``,
  e.g. ``[/EN#18/people A man] in [/EN#19/clothing an orange hat] .``;
* ``DIR/Annotations/<image_id>.xml``: PASCAL-VOC-style XML with the image
  ``<size>`` and one ``<object>`` per box; an object lists the entity ids it
  depicts in one or more ``<name>`` elements and has either a ``<bndbox>``
  (``xmin ymin xmax ymax``, 1-based inclusive pixels) or ``<nobndbox>1``;
* the images, ``DIR/flickr30k-images/<image_id>.jpg`` (or ``DIR/images/``).

:func:`read_flickr30k` turns each image (image ids in sorted order: numeric ids
by value, others after them by name) into one :class:`Sample` built from its
**first caption** (the first non-blank line of its Sentences file):

* **Words**: the markup is removed and the caption split on whitespace. The
  corpus is already tokenised (punctuation stands apart: ``... a hat .``), so
  whitespace tokens are the words; in addition, ``, ; : ! ?`` glued to the end
  of a token, and a ``.`` glued to the caption's last token, are split off as
  words of their own (an inner ``.`` as in ``Mr.`` or ``U.S.`` stays). The
  sample's ``caption`` is the words joined by single spaces.
* **Regions and scene nodes** (:mod:`mmdiag.data.scene_regions`, Milewski et
  al. 2022): the mentions of one entity id are merged into one scene node
  (coreference: "a man ... he"); ``regions="boxes"`` (default, the paper's) makes
  every box its own region (``Sample.phrases``) sharing its entity's node and
  adds the boxes of entities the caption does not mention under the image root;
  ``regions="union"`` makes one region per mentioned entity with a box, the union
  of its boxes. ``Sample.region_nodes`` maps regions to scene nodes. Entities
  without a box (``<nobndbox>``, scene entities, ``notvisual`` id 0, or ids
  absent from the XML) are scene nodes without a region. Boxes are
  ``(xmin - 1, ymin - 1, xmax, ymax)``: pixel edges with the right/bottom edge
  exclusive, clipped to the image ``<size>`` when it is given. ``label`` is the
  entity's mentions' text; ``meta["entities"]`` keeps every marked phrase
  (entity id, types, span, its number of boxes).
* **Dependency tree**: from ``parser(words) -> (heads, upos[, xpos])`` if given
  (heads 1-based, 0 for the root; PTB ``xpos`` optional), else from spaCy's ``en_core_web_sm`` when installed
  (see :func:`spacy_parser`), else none (``tree=None``; checks skip with
  :data:`SPACY_MISSING`). With a tree, ``scene_parents`` follows Milewski et al.
  (2022) via :func:`mmdiag.data.scene_tree.scene_parents` (text tree: the
  spanning tree of gold distances without ``punctuation``, ``ptb`` or ``upos``).

Malformed markup (an unbalanced ``[``/``]``, a nested ``[``, a bad
``/EN#id/type`` tag, an empty phrase), malformed XML, a bad ``<bndbox>`` and a
missing annotation file raise :class:`~mmdiag.errors.DataError` naming the file
and line (the caption's line for markup errors).
"""
from __future__ import annotations

import functools
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from mmdiag.data.files import read_regular_bytes
from mmdiag.data.scene_regions import SCENE_REGIONS, scene_layout
from mmdiag.data.trees import validate_heads
from mmdiag.data.types import DepTree, Sample
from mmdiag.errors import DataError

__all__ = [
    "SPACY_MISSING",
    "FLICKR30K_FORMAT",
    "is_flickr30k_root",
    "read_flickr30k",
    "parse_caption",
    "read_annotation",
    "spacy_parser",
]

SPACY_MISSING = ("install spaCy and its English model to parse Flickr30k captions: "
                 "pip install spacy && python -m spacy download en_core_web_sm")

FLICKR30K_FORMAT = ("a Flickr30k Entities root: Sentences/<image_id>.txt (captions marked up as "
                    "'[/EN#18/people A man] in [/EN#19/clothing an orange hat] .'), "
                    "Annotations/<image_id>.xml (PASCAL-VOC boxes whose <name> is the entity id) and "
                    "flickr30k-images/<image_id>.jpg")

#: ``parser(words) -> (heads, upos)`` or ``(heads, upos, xpos)``: 1-based heads (0 = root), UPOS and PTB tags
Parser = Callable[[Sequence[str]], tuple]

_TAG = re.compile(r"/EN#([0-9]+)((?:/[^/\s\[\]]+)+)\Z")
_GLUED = ",;:!?"
_IMAGE_DIRS = ("flickr30k-images", "images")
_IMAGE_EXTS = (".jpg", ".jpeg", ".png")


def is_flickr30k_root(path: Union[str, Path]) -> bool:
    """True when ``path`` is a directory holding both ``Sentences/`` and ``Annotations/``."""
    p = Path(path).expanduser()
    return p.is_dir() and (p / "Sentences").is_dir() and (p / "Annotations").is_dir()


# ----------------------------------------------------------------------------- captions

def _split_token(token: str, last: bool) -> list[str]:
    """A whitespace token as words: trailing ``, ; : ! ?`` (and one ``.`` on the caption's last token) split off."""
    tail: list[str] = []
    dot_left = last
    while len(token) > 1:
        if token[-1] in _GLUED:
            pass
        elif token[-1] == "." and dot_left:
            dot_left = False
        else:
            break
        tail.append(token[-1])
        token = token[:-1]
    return [token] + tail[::-1]


def parse_caption(line: str, path: Union[str, Path, None] = None, lineno: Optional[int] = None
                  ) -> tuple[list[str], list[tuple[int, int, str, tuple[str, ...]]]]:
    """Strip Flickr30k Entities markup from one caption line.

    Returns ``(words, marks)`` where ``marks`` are ``(start, end, entity_id,
    types)`` word spans ``[start, end)`` of the marked-up phrases in order (see
    the module docstring for the tokenisation). Raises :class:`DataError` at
    ``path:lineno`` for an unbalanced or nested bracket, a tag that is not
    ``/EN#<digits>/<type>...`` or a phrase without words.
    """
    # Pieces: ("text", s) outside brackets, ("phrase", tag, s) inside.
    pieces: list[tuple] = []
    pos = 0
    n = len(line)
    while pos < n:
        open_at = line.find("[", pos)
        close_at = line.find("]", pos)
        if close_at != -1 and (open_at == -1 or close_at < open_at):
            raise DataError(f"unbalanced ']' at column {close_at + 1} (no '[' before it); expected {FLICKR30K_FORMAT}",
                            path, lineno)
        if open_at == -1:
            pieces.append(("text", line[pos:]))
            break
        pieces.append(("text", line[pos:open_at]))
        end = line.find("]", open_at + 1)
        nested = line.find("[", open_at + 1)
        if end == -1:
            raise DataError(f"unbalanced '[' at column {open_at + 1} (no closing ']'); expected {FLICKR30K_FORMAT}",
                            path, lineno)
        if nested != -1 and nested < end:
            raise DataError(f"nested '[' at column {nested + 1} inside the phrase opened at column {open_at + 1}; "
                            f"expected {FLICKR30K_FORMAT}", path, lineno)
        inner = line[open_at + 1:end].split(None, 1)
        tag = inner[0] if inner else ""
        match = _TAG.match(tag)
        if match is None:
            raise DataError(f"phrase at column {open_at + 1} has tag {tag!r}, not '/EN#<id>/<type>'; "
                            f"expected {FLICKR30K_FORMAT}", path, lineno)
        if len(inner) < 2 or not inner[1].strip():
            raise DataError(f"phrase at column {open_at + 1} ({tag}) has no words", path, lineno)
        pieces.append(("phrase", match, inner[1]))
        pos = end + 1

    # Tokenise: every whitespace token, knowing which one is the caption's last.
    raw: list[tuple[int, str]] = []  # (piece index, token)
    for k, piece in enumerate(pieces):
        for tok in piece[-1].split():
            raw.append((k, tok))
    words: list[str] = []
    spans: dict[int, list[int]] = {}
    for j, (k, tok) in enumerate(raw):
        start = len(words)
        words.extend(_split_token(tok, last=j == len(raw) - 1))
        if pieces[k][0] == "phrase":
            span = spans.setdefault(k, [start, len(words)])
            span[1] = len(words)
    marks = []
    for k, piece in enumerate(pieces):
        if piece[0] == "phrase":
            match = piece[1]
            start, end = spans[k]
            marks.append((start, end, match.group(1), tuple(match.group(2).strip("/").split("/"))))
    return words, marks


def _first_caption(path: Path) -> tuple[int, str]:
    """``(line number, text)`` of the first non-blank line of a Sentences file."""
    data = read_regular_bytes(path, "sentences file")  # a FIFO or a device is refused, never read
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DataError("not valid UTF-8 text; Flickr30k sentence files must be UTF-8 encoded", path, line) from None
    for lineno, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            return lineno, line.rstrip("\r")
    raise DataError(f"no caption (the file is empty); expected {FLICKR30K_FORMAT}", path)


# ----------------------------------------------------------------------------- annotations

def _int_field(parent: ET.Element, name: str, path: Path, where: str) -> int:
    node = parent.find(name)
    if node is None or node.text is None or not node.text.strip():
        raise DataError(f"{where}: <{parent.tag}> has no <{name}>", path)
    try:
        return int(float(node.text.strip()))
    except ValueError:
        raise DataError(f"{where}: <{name}> is {node.text.strip()!r}, not a number", path) from None


def read_annotation(path: Union[str, Path]) -> tuple[Optional[tuple[int, int]], dict[str, list[tuple[float, ...]]]]:
    """Read one Annotations XML: ``(size, boxes)``.

    ``size`` is ``(width, height)`` from ``<size>`` (None when absent);
    ``boxes`` maps each entity id (``<name>`` text) to its boxes
    ``(xmin - 1, ymin - 1, xmax, ymax)``, clipped to ``size``; objects without
    ``<bndbox>`` (``<nobndbox>``, ``<scene>``) add no box. Raises
    :class:`DataError` naming the file for a missing file, malformed XML (with
    the line) or a ``<bndbox>`` without four numbers or with ``xmax < xmin``
    (naming the object by its 1-based position).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"annotation file is missing; expected {FLICKR30K_FORMAT}", p)
    try:
        root = ET.parse(p).getroot()
    except ET.ParseError as exc:
        line = getattr(exc, "position", (None,))[0]
        raise DataError(f"malformed XML ({exc}); expected PASCAL-VOC style annotations", p, line) from None
    except OSError as exc:
        raise DataError(f"cannot read annotation file ({exc.strerror or exc})", p) from None
    size = None
    size_node = root.find("size")
    if size_node is not None and size_node.find("width") is not None and size_node.find("height") is not None:
        size = (_int_field(size_node, "width", p, "<size>"), _int_field(size_node, "height", p, "<size>"))
    boxes: dict[str, list[tuple[float, ...]]] = {}
    for k, obj in enumerate(root.iter("object"), start=1):
        names = [n.text.strip() for n in obj.findall("name") if n.text and n.text.strip()]
        bnd = obj.find("bndbox")
        if bnd is None:
            continue
        where = f"<object> {k} ({', '.join(names) or 'no <name>'})"
        xmin, ymin, xmax, ymax = (_int_field(bnd, key, p, where) for key in ("xmin", "ymin", "xmax", "ymax"))
        if xmax < xmin or ymax < ymin:
            raise DataError(f"{where}: <bndbox> has xmax < xmin or ymax < ymin ({xmin}, {ymin}, {xmax}, {ymax})", p)
        box = [float(xmin - 1), float(ymin - 1), float(xmax), float(ymax)]
        if size is not None:
            w, h = size
            box = [min(max(box[0], 0.0), w), min(max(box[1], 0.0), h), min(max(box[2], 0.0), w),
                   min(max(box[3], 0.0), h)]
        for name in names:
            boxes.setdefault(name, []).append(tuple(box))
    return size, boxes


# ----------------------------------------------------------------------------- parsing

@functools.lru_cache(maxsize=1)
def spacy_parser() -> Optional[Parser]:
    """spaCy's ``en_core_web_sm`` as a ``words -> (heads, upos, xpos)`` parser, or None when not installed.

    The Doc is built from the given words (``Doc(nlp.vocab, words=words)``) and
    run through the pipeline, so spaCy keeps the caption's tokenisation. Heads
    become 1-based with 0 for the root; UPOS is ``token.pos_``, XPOS (PTB) ``token.tag_``. If spaCy splits
    the caption into several sentences, every later sentence root is attached
    to the first sentence's root, so the result is one tree.
    """
    try:
        import spacy
        from spacy.tokens import Doc
    except ImportError:
        return None
    try:
        nlp = spacy.load("en_core_web_sm")
    except (OSError, IOError, ImportError, ValueError):
        return None

    def parse(words: Sequence[str]) -> tuple[list[int], list[str], list[str]]:
        doc = Doc(nlp.vocab, words=list(words))
        for _, proc in nlp.pipeline:
            doc = proc(doc)
        heads: list[int] = []
        first_root = None
        for tok in doc:
            if tok.head.i == tok.i:
                if first_root is None:
                    first_root = tok.i
                    heads.append(0)
                else:
                    heads.append(first_root + 1)
            else:
                heads.append(tok.head.i + 1)
        return heads, [tok.pos_ or "X" for tok in doc], [getattr(tok, "tag_", "") or "_" for tok in doc]

    return parse


def _tree(words: list[str], parser: Parser, path: Path, lineno: int) -> DepTree:
    parsed = tuple(parser(words))
    if len(parsed) not in (2, 3):
        raise ValueError(f"{path}:{lineno}: the parser gave {len(parsed)} values; expected (heads, upos) or "
                         "(heads, upos, xpos)")
    heads, upos = tuple(int(h) for h in parsed[0]), tuple(str(u) for u in parsed[1])
    xpos = tuple(str(x) for x in parsed[2]) if len(parsed) == 3 else ()
    if len(heads) != len(words) or len(upos) != len(words) or len(xpos) not in (0, len(words)):
        raise ValueError(f"{path}:{lineno}: the parser gave {len(heads)} heads and {len(upos)} tags "
                         f"for {len(words)} words")
    try:
        validate_heads(heads)
    except ValueError as exc:
        raise ValueError(f"{path}:{lineno}: the parser's heads are not a tree ({exc})") from None
    return DepTree(words=tuple(words), heads=heads, upos=upos, xpos=xpos)


# ----------------------------------------------------------------------------- samples

def _id_key(image_id: str) -> tuple:
    return (0, int(image_id), image_id) if image_id.isdigit() else (1, 0, image_id)


def _image_path(root: Path, image_id: str) -> Path:
    for folder in _IMAGE_DIRS:
        for ext in _IMAGE_EXTS:
            candidate = root / folder / f"{image_id}{ext}"
            if candidate.is_file():
                return candidate
    return root / _IMAGE_DIRS[0] / f"{image_id}.jpg"


def read_flickr30k(root: Union[str, Path], limit: Optional[int] = None, parser: Optional[Parser] = None,
                   regions: str = "boxes", punctuation: str = "ptb") -> list[Sample]:
    """Samples of a Flickr30k Entities root: the first caption of each image, sorted by image id.

    ``limit`` keeps the first ``limit`` images (after sorting). ``parser``
    (``words -> (heads, upos)``) replaces spaCy; without either, samples have
    ``tree=None`` and ``scene_parents=()``. The image is the path of
    ``flickr30k-images/<id>.jpg`` (or ``images/<id>.jpg``, ``.jpeg``/``.png``
    accepted), opened later. ``uid`` is ``flickr30k-<image_id>``; ``meta``
    holds ``source`` (``file:line``), ``image_id``, ``size``, ``entities`` and ``scene_regions``.
    ``regions`` (``boxes``/``union``) and ``punctuation`` (``ptb``/``upos``): see the module docstring.
    Raises :class:`DataError` for a root without Sentences files, malformed
    markup (file and caption line), malformed XML or a missing annotation file.
    """
    if regions not in SCENE_REGIONS:
        raise ValueError(f"regions={regions!r}: accepted: {', '.join(SCENE_REGIONS)}")
    root = Path(root).expanduser()
    if not is_flickr30k_root(root):
        raise DataError(f"not a Flickr30k Entities root (needs Sentences/ and Annotations/); "
                        f"expected {FLICKR30K_FORMAT}", root)
    files = sorted((p for p in (root / "Sentences").glob("*.txt") if p.is_file()), key=lambda p: _id_key(p.stem))
    if not files:
        raise DataError(f"Sentences/ holds no <image_id>.txt file; expected {FLICKR30K_FORMAT}", root / "Sentences")
    if parser is None:
        parser = spacy_parser()
    samples: list[Sample] = []
    for sentences in files:
        if limit is not None and len(samples) >= limit:
            break
        image_id = sentences.stem
        lineno, line = _first_caption(sentences)
        words, marks = parse_caption(line, sentences, lineno)
        if not words:
            raise DataError("the caption has no words", sentences, lineno)
        size, boxes = read_annotation(root / "Annotations" / f"{image_id}.xml")
        entities = [{"id": entity, "types": list(types), "start": start, "end": end,
                     "boxes": len(boxes.get(entity, []))} for start, end, entity, types in marks]
        tree = None if parser is None else _tree(words, parser, sentences, lineno)
        layout = scene_layout(words, marks, boxes, tree, regions, punctuation)
        samples.append(Sample(
            uid=f"flickr30k-{image_id}", image=_image_path(root, image_id), caption=" ".join(words),
            words=tuple(words), tree=tree, phrases=layout.phrases, scene_parents=layout.scene_parents,
            region_nodes=layout.region_nodes,
            meta={"source": f"{sentences}:{lineno}", "image_id": image_id, "size": size, "entities": entities,
                  "scene_regions": regions}))
    return samples

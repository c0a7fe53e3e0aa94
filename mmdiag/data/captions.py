"""Image-caption loaders: JSONL (or a directory holding ``captions.jsonl``) and COCO captions JSON.

Images stay on disk as paths and are opened per batch, so memory does not grow
with the dataset. Errors name the file and line and say what is accepted.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from mmdiag.data.files import check_inside, read_regular_bytes
from mmdiag.data.types import IMAGE_KEY, Sample
from mmdiag.errors import DataError

JSONL_FORMAT = 'one JSON object per line: {"image": "relative/path.jpg", "caption": "..."}'
COCO_FORMAT = ('a COCO captions file: {"images": [{"id": 1, "file_name": "a.jpg"}, ...], '
               '"annotations": [{"image_id": 1, "caption": "..."}, ...]}')


def read_text(path: Path, what: str) -> str:
    """The file as text (UTF-8, a leading BOM dropped); a DataError names the file (and line of a bad byte)."""
    data = read_regular_bytes(path, what)  # a FIFO or a device is refused, never read (it would block)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DataError(f"not valid UTF-8 text (byte {data[exc.start]:#04x}); {what}s must be UTF-8 encoded",
                        path, line) from None


_read_text = read_text


def _loads(text: str) -> Any:
    """``json.loads`` whose failures are all :class:`json.JSONDecodeError` or ``ValueError``."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _valid_text(value: str) -> bool:
    """False for strings that cannot be encoded (lone surrogates from ``\\ud800`` escapes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_jsonl(path: Path, limit: Optional[int] = None, allow_outside: bool = False) -> list[Sample]:
    """Read a captions JSONL file; image paths are relative to the file's folder.

    An image path that resolves outside that folder (``../x.png``, an absolute
    path, a symlink pointing out) is a DataError naming the line unless
    ``allow_outside`` (``--mm-allow-outside-data``).

    Lines are split on ``\\n`` only (``\\r\\n`` accepted), so a caption holding
    U+2028 or other Unicode line breaks stays one record; blank lines are skipped.
    """
    path = Path(path)
    text = _read_text(path, "captions file")
    samples: list[Sample] = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = _loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"malformed JSON ({exc.msg}, column {exc.colno}); expected {JSONL_FORMAT}",
                            path, lineno) from None
        except ValueError as exc:
            raise DataError(f"malformed JSON ({exc}); expected {JSONL_FORMAT}", path, lineno) from None
        if not isinstance(record, dict):
            raise DataError(f"expected a JSON object, got {type(record).__name__}; {JSONL_FORMAT}", path, lineno)
        image, caption = record.get("image"), record.get("caption")
        if not isinstance(image, str) or not image.strip() or "\x00" in image or not _valid_text(image):
            raise DataError(f'missing, empty or non-string "image"; {JSONL_FORMAT}', path, lineno)
        if not isinstance(caption, str):
            raise DataError(f'missing or non-string "caption"; {JSONL_FORMAT}', path, lineno)
        if not _valid_text(caption):
            raise DataError('"caption" is not valid Unicode text (it holds a lone surrogate such as \\ud800)',
                            path, lineno)
        if not allow_outside:
            check_inside(path.parent / image, path.parent, image, path, lineno)
        samples.append(Sample(uid=f"{path.name}:{lineno}", image=path.parent / image, caption=caption.strip(),
                              meta={"source": f"{path}:{lineno}"}))
        if limit is not None and len(samples) >= limit:
            break
    if not samples:
        raise DataError(f"no samples; expected {JSONL_FORMAT}", path)
    return samples


def _coco_image_dir(path: Path) -> Path:
    """Where a COCO captions file's images live: beside it, or in ``../val2017`` for ``captions_val2017.json``."""
    stem = path.stem.split("_", 1)[-1]
    if stem in ("", ".", ".."):
        stem = "images"
    for candidate in (path.parent / stem, path.parent.parent / stem, path.parent / "images", path.parent):
        if candidate.is_dir() and candidate != path.parent:
            return candidate
    return path.parent


def _image_id(value: Any) -> Optional[Any]:
    """A usable COCO id: an int or a non-empty string (bools, floats, lists and objects are not ids)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, str) and value):
        return value
    return None


def read_coco(path: Path, limit: Optional[int] = None, allow_outside: bool = False) -> list[Sample]:
    """Read a COCO captions JSON (``images`` + ``annotations``): every caption of each image, one sample each.

    The captions of one image are consecutive samples sharing ``meta["image_key"]`` (COCO has five per image;
    the gap metrics match each caption to its image, see :mod:`mmdiag.data.groups`); ``limit`` counts captions.

    A ``file_name`` that resolves outside the image folder is a DataError naming
    the file and the image id unless ``allow_outside``.

    Entries that are not objects, have no usable id (an int or a string), no
    ``file_name`` string or no caption string are ignored; a file with no usable
    pair is a DataError.
    """
    path = Path(path)
    text = _read_text(path, "COCO captions file")
    try:
        doc = _loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"malformed JSON ({exc.msg}, column {exc.colno}); expected {COCO_FORMAT}",
                        path, exc.lineno) from None
    except ValueError as exc:
        raise DataError(f"malformed JSON ({exc}); expected {COCO_FORMAT}", path) from None
    if not (isinstance(doc, dict) and isinstance(doc.get("images"), list)
            and isinstance(doc.get("annotations"), list)):
        raise DataError(f"not a COCO captions file; expected {COCO_FORMAT}", path)
    files: dict = {}
    for img in doc["images"]:
        if not isinstance(img, dict):
            continue
        image_id, name = _image_id(img.get("id")), img.get("file_name")
        if image_id is None or not isinstance(name, str) or not name.strip() or "\x00" in name \
                or not _valid_text(name):
            continue
        files.setdefault(image_id, name)
    image_dir = _coco_image_dir(path)
    captions: dict = {}  # image id -> its captions, images in the order their first caption appears
    for ann in doc["annotations"]:
        if not isinstance(ann, dict):
            continue
        image_id, caption = _image_id(ann.get("image_id")), ann.get("caption")
        if image_id is None or image_id not in files:
            continue
        if not isinstance(caption, str) or not _valid_text(caption):
            continue
        captions.setdefault(image_id, []).append(caption.strip())
    samples: list[Sample] = []
    for image_id, texts in captions.items():
        if not allow_outside:
            check_inside(image_dir / files[image_id], image_dir, files[image_id], path, None)
        for k, caption in enumerate(texts):
            samples.append(Sample(uid=f"coco-{image_id}" if k == 0 else f"coco-{image_id}#{k}",
                                  image=image_dir / files[image_id], caption=caption,
                                  meta={"source": f"{path} image_id={image_id}", IMAGE_KEY: f"coco-{image_id}"}))
            if limit is not None and len(samples) >= limit:
                return samples
    if not samples:
        raise DataError(f"no image with a caption found in the COCO file; expected {COCO_FORMAT}", path)
    return samples

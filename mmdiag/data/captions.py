"""Image-caption loaders: JSONL (or a directory holding ``captions.jsonl``) and COCO captions JSON.

Images stay on disk as paths and are opened per batch, so memory does not grow
with the dataset. Errors name the file and line and say what is accepted.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from mmdiag.data.types import Sample
from mmdiag.errors import DataError

JSONL_FORMAT = 'one JSON object per line: {"image": "relative/path.jpg", "caption": "..."}'


def read_jsonl(path: Path, limit: Optional[int] = None) -> list[Sample]:
    """Read a captions JSONL file; image paths are relative to the file's folder."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read captions file ({exc})", path) from None
    samples: list[Sample] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"malformed JSON ({exc.msg}); expected {JSONL_FORMAT}", path, lineno) from None
        if not isinstance(record, dict):
            raise DataError(f"expected a JSON object, got {type(record).__name__}; {JSONL_FORMAT}", path, lineno)
        image, caption = record.get("image"), record.get("caption")
        if not isinstance(image, str) or not image:
            raise DataError(f'missing or non-string "image"; {JSONL_FORMAT}', path, lineno)
        if not isinstance(caption, str):
            raise DataError(f'missing or non-string "caption"; {JSONL_FORMAT}', path, lineno)
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
    for candidate in (path.parent / stem, path.parent.parent / stem, path.parent / "images", path.parent):
        if candidate.is_dir() and candidate != path.parent:
            return candidate
    return path.parent


def read_coco(path: Path, limit: Optional[int] = None) -> list[Sample]:
    """Read a COCO captions JSON (``images`` + ``annotations``): the first caption per image."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read COCO captions file ({exc})", path) from None
    except json.JSONDecodeError as exc:
        raise DataError(f"malformed JSON ({exc.msg})", path, exc.lineno) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) or not isinstance(doc.get("annotations"), list):
        raise DataError('not a COCO captions file: expected {"images": [...], "annotations": [...]}', path)
    files: dict = {}
    for img in doc["images"]:
        if isinstance(img, dict) and "id" in img and isinstance(img.get("file_name"), str):
            files[img["id"]] = img["file_name"]
    image_dir = _coco_image_dir(path)
    samples: list[Sample] = []
    seen: set = set()
    for ann in doc["annotations"]:
        if not isinstance(ann, dict):
            continue
        image_id, caption = ann.get("image_id"), ann.get("caption")
        if image_id in seen or image_id not in files or not isinstance(caption, str):
            continue
        seen.add(image_id)
        samples.append(Sample(uid=f"coco-{image_id}", image=image_dir / files[image_id], caption=caption.strip(),
                              meta={"source": f"{path} image_id={image_id}"}))
        if limit is not None and len(samples) >= limit:
            break
    if not samples:
        raise DataError("no image with a caption found in the COCO file", path)
    return samples

"""The model zoo: small trained models shipped with mmdiag (``zoo:NAME``).

Each model lives in its own folder beside this file, written by
``save_pretrained`` (safetensors weights, tokenizer, image processor).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

ZOO_DIR = Path(__file__).parent


def zoo_names() -> list[str]:
    """Names of the zoo models installed with this copy of mmdiag."""
    return sorted(p.name for p in ZOO_DIR.iterdir() if (p / "config.json").is_file())


def zoo_path(name: str) -> Optional[Path]:
    """The folder of zoo model ``name``, or None when there is none."""
    path = ZOO_DIR / name
    return path if name in zoo_names() else None

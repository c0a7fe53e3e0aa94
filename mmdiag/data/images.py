"""Opening images safely: any mode in, 8-bit RGB out, clear errors for bad files."""
from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from mmdiag.errors import DataError

#: Decompression-bomb guard: refuse images above this many pixels.
MAX_PIXELS = 64_000_000


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert grayscale, palette, RGBA, CMYK and 16-bit images to 8-bit RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(image, dtype=np.float64)
        hi = arr.max() if arr.size and arr.max() > 0 else 1.0
        image = Image.fromarray((arr / hi * 255).astype(np.uint8), mode="L")
    elif image.mode == "F":
        arr = np.nan_to_num(np.asarray(image, dtype=np.float64))
        lo, hi = arr.min(), arr.max()
        image = Image.fromarray(((arr - lo) / ((hi - lo) or 1.0) * 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.split()[-1])
        return background
    return image.convert("RGB")


def open_image(source: Union[Image.Image, Path, str]) -> Image.Image:
    """Load ``source`` fully as RGB; a missing/corrupt/truncated/huge file is a DataError naming it."""
    if isinstance(source, Image.Image):
        return to_rgb(source)
    path = Path(source)
    if not path.is_file():
        raise DataError("image file not found", path)
    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_PIXELS:
                raise DataError(f"image is {img.width}x{img.height}, above the {MAX_PIXELS:,}-pixel limit", path)
            img.load()
            return to_rgb(img)
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot read image ({exc})", path) from None

"""Opening images safely: any mode in, 8-bit RGB out, clear errors for bad files."""
from __future__ import annotations

import warnings
import io
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image

from mmdiag.data.files import open_regular, regular_file_problem
from mmdiag.data.types import DeferredImage, EncodedImage
from mmdiag.errors import DataError

#: Decompression-bomb guard: refuse images above this many pixels.
MAX_PIXELS = 64_000_000

#: modes that carry an alpha channel (composited on white); ``La`` is premultiplied LA
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert grayscale, palette, RGBA, CMYK and 16/32-bit images to 8-bit RGB.

    * 16-bit modes (``I;16*``) are scaled by 255/65535, so brightness is kept;
    * 32-bit integer ``I``: kept when the values fit 0..255, scaled by 255/65535
      when they fit 0..65535 (16-bit data Pillow opened as ``I``), else min-max
      scaled; float ``F`` is min-max scaled (NaN/inf read as 0);
    * alpha (RGBA, LA, PA, premultiplied RGBa/La, palette transparency) is
      composited on a white background; everything else goes through Pillow's
      ``convert("RGB")`` (CMYK, YCbCr, LAB, HSV, 1-bit, palette).
    """
    if image.mode.startswith("I;16"):
        arr = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(_to_uint8(arr * (255.0 / 65535.0)), mode="L")
    elif image.mode == "I":
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if lo >= 0 and hi <= 255:
            scaled = arr
        elif lo >= 0 and hi <= 65535:
            scaled = arr * (255.0 / 65535.0)
        else:
            scaled = (arr - lo) / ((hi - lo) or 1.0) * 255
        image = Image.fromarray(_to_uint8(scaled), mode="L")
    elif image.mode == "F":
        arr = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        image = Image.fromarray(_to_uint8((arr - lo) / ((hi - lo) or 1.0) * 255), mode="L")
    if image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        if image.mode == "La":
            image = image.convert("LA")
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.split()[-1])
        return background
    return image.convert("RGB")


def open_image(source: Union[Image.Image, Path, str, EncodedImage, DeferredImage]) -> Image.Image:
    """Load ``source`` fully as RGB; a missing/corrupt/truncated/huge file is a DataError naming it.

    Any failure of the decoder on a user's file (Pillow raises OSError, ValueError,
    SyntaxError, but also struct/index/EOF errors on crafted files) becomes a
    DataError; a file above :data:`MAX_PIXELS` (or Pillow's own decompression-bomb
    limit) is refused before it is decoded.
    """
    if isinstance(source, Image.Image):
        return to_rgb(source)
    if isinstance(source, EncodedImage):
        return _decode(io.BytesIO(source.data), source.source)
    if isinstance(source, DeferredImage):
        return to_rgb(source.render())
    path = Path(source)
    problem = regular_file_problem(path)  # stat first: a FIFO or a device is never opened (it would block)
    if problem is not None:
        raise DataError("image file not found" if problem == "no such file" else
                        f"{problem[3:] if problem.startswith('is ') else problem} (expected an image)", path)
    with open_regular(path, "image") as handle:
        return _decode(handle, path)


def _decode(handle: Any, where: Union[Path, str]) -> Image.Image:
    """Decode the image in the open binary ``handle`` (named ``where`` in errors) as RGB."""
    try:
        with warnings.catch_warnings():
            # the pixel limit below is mmdiag's own; Pillow's bomb warning would only repeat it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(handle) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise DataError(f"image is {img.width}x{img.height}, above the {MAX_PIXELS:,}-pixel limit",
                                    where)
                img.load()
                return to_rgb(img)
    except DataError:
        raise
    except Image.DecompressionBombError as exc:
        raise DataError(f"image is too large to decode safely ({exc})", where) from None
    except MemoryError:
        raise DataError("image is too large to decode in the available memory", where) from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure on a user's file is a data problem
        detail = str(exc) if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
        raise DataError(f"cannot read image ({detail})", where) from None

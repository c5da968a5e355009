"""Reading images, and naming the way an image file is broken.

PIL is used (not OpenCV) because it tells a truncated JPEG apart from a corrupt one: OpenCV
decodes a truncated file silently with grey rows. Images are returned in the file's own pixel
orientation (EXIF rotation is not applied, because VOC and COCO boxes are annotated on raw pixels).
High-bit-depth images are scaled to 8 bits by :func:`to_rgb8` (PIL's own ``convert("RGB")`` clips
16-bit values to 255, which turns a 16-bit grayscale PNG nearly white).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from detkd.data.records import Defect, DefectKind

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "check_image",
    "is_image_file",
    "load_image",
    "probe_image_size",
    "to_rgb8",
]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


def is_image_file(path: Path) -> bool:
    """True for files with an image extension, compared case-insensitively (``.JPG`` counts)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


class ImageReadError(OSError):
    """An image could not be used; ``defect`` says which file, what is wrong, and that it was skipped."""

    def __init__(self, defect: Defect) -> None:
        super().__init__(str(defect))
        self.defect = defect


def _fail(path: Path, kind: DefectKind, detail: str) -> ImageReadError:
    return ImageReadError(Defect(str(path), kind, detail, "skipped image"))


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise _fail(path, DefectKind.MISSING_IMAGE, "image file does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(path)
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _fail(path, DefectKind.UNREADABLE_IMAGE, f"not a readable image ({exc.__class__.__name__})") from exc
    except ImportError as exc:  # ultralytics (once imported) patches Image.open to try an optional HEIF plugin
        raise _fail(path, DefectKind.UNREADABLE_IMAGE, "not a readable image (UnidentifiedImageError)") from exc
    except OSError as exc:
        raise _fail(path, DefectKind.UNREADABLE_IMAGE, f"cannot open: {exc}") from exc


def probe_image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the file header, without decoding pixels.

    Raises:
        ImageReadError: missing file or not an image.
    """
    with _open(path) as image:
        return image.size


def load_image(path: Path) -> np.ndarray:
    """Decode an image fully to ``uint8[H, W, 3]`` RGB.

    Raises:
        ImageReadError: missing, unreadable or truncated file (``defect.kind`` tells which).
    """
    image = _open(path)
    try:
        image.load()
        return to_rgb8(image)
    except OSError as exc:
        kind = DefectKind.TRUNCATED_IMAGE if "truncated" in str(exc).lower() else DefectKind.UNREADABLE_IMAGE
        raise _fail(path, kind, f"cannot decode: {exc}") from exc
    except (ValueError, SyntaxError) as exc:  # PIL raises these for some corrupt headers
        raise _fail(path, DefectKind.UNREADABLE_IMAGE, f"cannot decode: {exc}") from exc
    finally:
        image.close()


def _float_to_uint8(values: np.ndarray) -> np.ndarray:
    """``F`` data: ``[0, 1]`` scaled by 255, any other range stretched from its min..max to 0..255."""
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min(initial=0.0)), float(values.max(initial=0.0))
    if low >= 0.0 and high <= 1.0:
        return np.rint(values * 255.0).astype(np.uint8)
    return np.rint((values - low) * (255.0 / max(high - low, 1e-12))).astype(np.uint8)


def to_rgb8(image: Image.Image) -> np.ndarray:
    """Pixels of a decoded PIL image as ``uint8[H, W, 3]`` RGB (a new, writable array).

    Single-channel high-bit-depth modes are scaled, not clipped:

    * ``I;16``, ``I;16L``, ``I;16B``, ``I;16N`` (a 16-bit grayscale PNG) and ``I`` (32-bit
      integers; what older Pillow makes of a 16-bit PNG, and no supported format holds wider
      data) are 16-bit values: clipped to ``0..65535``, then ``round(v / 257)``, so 65535 -> 255
      and 257 * k -> k.
    * ``F`` (32-bit float): values in ``[0, 1]`` are scaled by 255; any other range is stretched
      linearly from the image's own min..max to 0..255 (NaN and infinities count as 0).

    16-bit colour PNGs (48-bit RGB, 64-bit RGBA) are decoded by PIL to 8-bit ``RGB``/``RGBA``
    keeping each value's high byte, ``floor(v / 256)``, which is within 1 of ``round(v / 257)``.
    Every other mode (``L``, ``P``, ``RGBA``, ``CMYK``, ...) goes through ``convert("RGB")``.
    """
    if image.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.int64)
        gray = np.rint(np.clip(values, 0, 65535) / 257.0).astype(np.uint8)
    elif image.mode == "F":
        gray = _float_to_uint8(np.asarray(image))
    else:
        return np.array(image.convert("RGB"))  # writable copy (torch.from_numpy needs one)
    return np.repeat(gray[:, :, None], 3, axis=2)


def check_image(path: Path, mode: str) -> tuple[int, int]:
    """``(width, height)`` of an image, checked as deeply as ``mode`` asks.

    Args:
        mode: ``"header"`` reads the header only (fast; catches missing and non-image files),
            ``"full"`` decodes every pixel (also catches truncated and corrupt data).

    Raises:
        ImageReadError: the image is not usable.
    """
    if mode == "full":
        height, width = load_image(path).shape[:2]
        return width, height
    if mode == "header":
        return probe_image_size(path)
    raise ValueError(f"image check mode must be 'header' or 'full', not {mode!r}")

"""Reading images, and naming the way an image file is broken.

PIL is used (not OpenCV) because it tells a truncated JPEG apart from a corrupt one: OpenCV
decodes a truncated file silently with grey rows. Images are returned in the file's own pixel
orientation (EXIF rotation is not applied, because VOC and COCO boxes are annotated on raw pixels).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from detkd.data.records import Defect, DefectKind

__all__ = ["IMAGE_EXTENSIONS", "ImageReadError", "check_image", "is_image_file", "load_image", "probe_image_size"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp"})


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
        return np.array(image.convert("RGB"))  # writable copy (torch.from_numpy needs one)
    except OSError as exc:
        kind = DefectKind.TRUNCATED_IMAGE if "truncated" in str(exc).lower() else DefectKind.UNREADABLE_IMAGE
        raise _fail(path, kind, f"cannot decode: {exc}") from exc
    except (ValueError, SyntaxError) as exc:  # PIL raises these for some corrupt headers
        raise _fail(path, DefectKind.UNREADABLE_IMAGE, f"cannot decode: {exc}") from exc
    finally:
        image.close()


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

"""Looks of the built-in synthetic dataset: each preset is the set of ranges its images are drawn from.

- ``standard`` (the default; the demo's and the tests' dataset): five shapes (circle, cross, ring,
  square, triangle) from a quarter to 60 % of the image's short side, so at the demo's 160 px input
  they span at least a cell of a stride-32 grid; two to four per image, upright within 15 degrees;
  plain or gradient fills that stand out from a calm background; a little clutter. The class is
  still the shape alone, objects still overlap, scales vary 2.4x, image sizes vary, and there are
  unlabeled images. A small detector learns it in minutes on a CPU.
- ``hard``: the original look. Seven shapes (adding hexagon and star, each close to another
  class at low resolution) from 4 % to 60 % of the short side (many far below a stride-32 cell at
  160 px), crowded images of up to eight, any rotation, five textures on objects and backgrounds,
  heavy clutter and sensor noise. A research-scale benchmark, not a demo.

A preset only sets ranges: every image is still a pure function of ``(seed, split, index)``, and
the ``hard`` preset draws exactly the random numbers the generator drew before presets existed,
so its images and boxes are identical to those of earlier releases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from detkd.data.synthetic_shapes import CLASSES, TEXTURES

__all__ = ["DEFAULT_PRESET", "PRESETS", "SyntheticPreset", "get_preset"]


@dataclass(frozen=True)
class SyntheticPreset:
    """The ranges one preset draws from. Ranges are ``(low, high)``; count ranges exclude ``high``.

    Attributes:
        name: the preset's name (``data.generate.preset``, ``make_dataset.py --preset``).
        classes: the shapes drawn, each a class (sorted; names from the shape vocabulary
            :data:`detkd.data.synthetic_shapes.CLASSES`).
        size_range: object size as a fraction of the image's short side, log-uniform.
        aspect_range: stretch of an object (its area kept).
        rotation_range: rotation of an object in radians, uniform.
        count_range: objects per ordinary image.
        crowded_prob, crowded_count, crowded_max: chance of a crowded image, its object count and
            its largest object size (crowded images hold smaller objects, else placements fail).
        clutter_early, clutter_late: distractors drawn behind / over the objects.
        object_textures: fills an object draws from, uniformly (repeat a name to weight it).
        min_contrast, contrast_tries: an object's colour is redrawn up to ``contrast_tries`` times
            until some channel differs by ``min_contrast`` from what it covers.
        background_amplitude: amplitude of the background's low-frequency colour noise.
        background_stripes, background_grid: chances of a striped / gridded background.
        blur_prob, noise_sigma: camera finish: chance of a slight blur, sensor noise sigma range.
    """

    name: str
    classes: tuple[str, ...]
    size_range: tuple[float, float]
    aspect_range: tuple[float, float]
    rotation_range: tuple[float, float]
    count_range: tuple[int, int]
    crowded_prob: float
    crowded_count: tuple[int, int]
    crowded_max: float
    clutter_early: tuple[int, int]
    clutter_late: tuple[int, int]
    object_textures: tuple[str, ...]
    min_contrast: float
    contrast_tries: int
    background_amplitude: tuple[float, float]
    background_stripes: float
    background_grid: float
    blur_prob: float
    noise_sigma: tuple[float, float]


PRESETS: dict[str, SyntheticPreset] = {
    "standard": SyntheticPreset(
        name="standard",
        classes=("circle", "cross", "ring", "square", "triangle"),
        size_range=(0.25, 0.6),
        aspect_range=(0.8, 1.25),
        rotation_range=(-math.pi / 12, math.pi / 12),
        count_range=(2, 5),
        crowded_prob=0.0,
        crowded_count=(4, 6),
        crowded_max=0.3,
        clutter_early=(0, 3),
        clutter_late=(0, 2),
        object_textures=("solid", "solid", "gradient"),
        min_contrast=100.0,
        contrast_tries=10,
        background_amplitude=(3.0, 15.0),
        background_stripes=0.05,
        background_grid=0.05,
        blur_prob=0.3,
        noise_sigma=(1.0, 4.0),
    ),
    "hard": SyntheticPreset(
        name="hard",
        classes=CLASSES,  # the whole shape vocabulary
        size_range=(0.04, 0.6),
        aspect_range=(0.6, 1.6),
        rotation_range=(0.0, 2 * math.pi),
        count_range=(1, 6),
        crowded_prob=0.2,
        crowded_count=(6, 9),
        crowded_max=0.3,
        clutter_early=(2, 9),
        clutter_late=(0, 4),
        object_textures=TEXTURES,  # all of them
        min_contrast=50.0,
        contrast_tries=3,
        background_amplitude=(15.0, 60.0),
        background_stripes=0.25,
        background_grid=0.2,
        blur_prob=0.4,
        noise_sigma=(1.0, 6.0),
    ),
}
DEFAULT_PRESET = "standard"


def get_preset(name: str | SyntheticPreset) -> SyntheticPreset:
    """The preset called ``name`` (a :class:`SyntheticPreset` passes through); a clear error otherwise."""
    if isinstance(name, SyntheticPreset):
        return name
    if name not in PRESETS:
        raise ValueError(f"unknown synthetic preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]

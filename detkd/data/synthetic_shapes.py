"""Drawing primitives of the synthetic detection dataset: class shapes, textures, backgrounds, clutter.

Everything here is vectorised numpy or a cv2 drawing call, with all randomness taken from the
``numpy.random.Generator`` passed in, so an image is a pure function of its generator's seed.
Images are BGR ``uint8`` (OpenCV's order); colours are random, so the channel order only matters
for consistency with :func:`cv2.imencode`.

Class shapes are polygons in a unit frame (roughly ``[-1, 1]²``) that :func:`object_contours`
scales, stretches, rotates and places, and :func:`rasterise` turns into a mask. Clutter
("distractors") is deliberately made of shapes that are *not* classes: lines, curves, ellipse
fragments, irregular polygons and lumpy blobs.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = [
    "CLASSES",
    "DISTRACTOR_KINDS",
    "TEXTURES",
    "background",
    "class_polygons",
    "distractor_mask",
    "finish",
    "fill_polygons",
    "object_contours",
    "object_pixels",
    "random_colour",
    "rasterise",
    "texture",
]

CLASSES: tuple[str, ...] = ("circle", "cross", "hexagon", "ring", "square", "star", "triangle")
TEXTURES: tuple[str, ...] = ("solid", "stripes", "checker", "gradient", "noise")
DISTRACTOR_KINDS: tuple[str, ...] = ("line", "curve", "arc", "polygon", "blob")

# fillPoly's sub-pixel precision: coordinates are passed as ints scaled by 2**_SHIFT, so a shape
# moved by a fraction of a pixel changes its rasterisation (small shapes would look identical otherwise).
_SHIFT = 3


def _regular(n: int, radius: float = 1.0, phase: float = -math.pi / 2) -> np.ndarray:
    """Vertices of a regular ``n``-gon (first vertex at ``phase``), Float64[n, 2]."""
    angles = phase + np.arange(n) * (2 * math.pi / n)
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def class_polygons(name: str, rng: np.random.Generator) -> list[np.ndarray]:
    """Unit-frame contours of one instance of class ``name`` (a ring has an outer and an inner one).

    Some classes vary within the class (arm width, hole size, star depth) so the detector must
    learn the shape family rather than one template.
    """
    if name == "circle":
        return [_regular(48)]
    if name == "cross":
        t = rng.uniform(0.25, 0.45)  # half-width of the arms
        xs = [-t, t, t, 1, 1, t, t, -t, -t, -1, -1, -t]
        ys = [-1, -1, -t, -t, t, t, 1, 1, t, t, -t, -t]
        return [np.stack([xs, ys], axis=1).astype(np.float64)]
    if name == "hexagon":
        return [_regular(6, phase=0.0)]
    if name == "ring":
        # Inner contour reversed; with fillPoly's even-odd filling it becomes a hole.
        return [_regular(48), _regular(48, rng.uniform(0.45, 0.7))[::-1]]
    if name == "square":
        return [np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])]
    if name == "star":
        radii = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.38, 0.52))
        return [_regular(10) * radii[:, None]]
    if name == "triangle":
        tri = _regular(3)
        return [tri - [0.0, 0.25]]  # centre the bounding box (the centroid sits low in it)
    raise KeyError(f"unknown synthetic class {name!r}; known: {', '.join(CLASSES)}")


def fill_polygons(mask: np.ndarray, contours: list[np.ndarray], value: int = 255) -> np.ndarray:
    """Rasterise float contours (pixel coordinates) into ``mask`` in place, with sub-pixel precision."""
    pts = [np.round(c * (1 << _SHIFT)).astype(np.int32) for c in contours]
    cv2.fillPoly(mask, pts, value, lineType=cv2.LINE_8, shift=_SHIFT)
    return mask


def object_contours(
    rng: np.random.Generator,
    name: str,
    h: int,
    w: int,
    size_range: tuple[float, float],
    aspect_range: tuple[float, float],
    rotation_range: tuple[float, float],
) -> list[np.ndarray]:
    """Contours (pixel coordinates) of one object of class ``name``, placed at random in an ``h×w`` image.

    Size is log-uniform in ``size_range`` × the image's short side, then stretched by an aspect
    uniform in ``aspect_range`` (area kept) and rotated by an angle uniform in ``rotation_range`` (radians).
    """
    size = min(h, w) * math.exp(rng.uniform(math.log(size_range[0]), math.log(size_range[1])))
    aspect = rng.uniform(*aspect_range)
    scale = np.array([math.sqrt(aspect), 1.0 / math.sqrt(aspect)]) * size / 2
    angle = rng.uniform(*rotation_range)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    centre = rng.uniform(0, 1, 2) * [w, h]
    return [(c * scale) @ rot.T + centre for c in class_polygons(name, rng)]


def rasterise(contours: list[np.ndarray], h: int, w: int) -> tuple[tuple[slice, slice], np.ndarray, int] | None:
    """Rasterise a shape: ``(region inside the image, Bool mask over it, whole-shape pixel area)``.

    The shape is drawn on its own patch, which may reach outside the image, so the area counts
    the cut-off part too (a half-cut object is half visible). None when nothing lands inside.
    """
    pts = np.concatenate(contours)
    lo = np.floor(pts.min(axis=0)).astype(int)
    hi = np.ceil(pts.max(axis=0)).astype(int) + 1
    patch = fill_polygons(np.zeros((hi[1] - lo[1], hi[0] - lo[0]), np.uint8), [c - lo for c in contours])
    x0, y0 = max(lo[0], 0), max(lo[1], 0)
    x1, y1 = min(hi[0], w), min(hi[1], h)
    if x1 <= x0 or y1 <= y0:
        return None
    mask = patch[y0 - lo[1] : y1 - lo[1], x0 - lo[0] : x1 - lo[0]] > 0
    return (slice(y0, y1), slice(x0, x1)), mask, int(np.count_nonzero(patch))


def object_pixels(
    rng: np.random.Generator,
    under: np.ndarray,
    mask: np.ndarray,
    scale: float,
    kinds: tuple[str, ...],
    min_contrast: float,
    tries: int,
) -> np.ndarray:
    """Textured pixels (Float32[h, w, 3]) for an object whose Bool mask is ``mask``.

    The base colour is chosen to stand out from ``under`` (what the object covers) by
    ``min_contrast`` in some channel, though not always: after ``tries`` redraws a low-contrast
    object is kept, as happens in real photos. The fill is drawn from ``kinds`` (see :func:`texture`).
    """
    target = under[mask].mean(axis=0)
    colour = random_colour(rng)
    for _ in range(tries):
        if np.abs(colour - target).max() >= min_contrast:
            break
        colour = random_colour(rng)
    h, w = mask.shape
    pixels = np.array(texture(rng, h, w, colour, scale, kinds), dtype=np.float32)
    if rng.random() < 0.4:  # an outline, as drawn or printed objects often have
        inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        pixels[mask & ~inner] = colour * rng.uniform(0.2, 0.6)
    return pixels


def random_colour(rng: np.random.Generator) -> np.ndarray:
    """A random BGR colour, Float32[3]; half of them saturated (one channel pushed to an extreme)."""
    colour = rng.uniform(0, 255, 3)
    if rng.random() < 0.5:
        colour[rng.integers(3)] = rng.choice([rng.uniform(0, 40), rng.uniform(215, 255)])
    return colour.astype(np.float32)


def _rotated_coords(h: int, w: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates rotated by ``angle``: ``(u, v)``, each Float32[h, w] (via broadcasting)."""
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    c, s = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    return xs * c + ys * s, ys * c - xs * s


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int, channels: int = 1) -> np.ndarray:
    """Low-frequency noise in about ``[0, 1]``: a coarse random grid upsampled bicubically, Float32[h, w(, c)]."""
    gh, gw = max(2, round(cells * h / max(h, w))), max(2, round(cells * w / max(h, w)))
    shape = (gh, gw) if channels == 1 else (gh, gw, channels)
    grid = rng.random(shape, dtype=np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _weight_map(kind: str, rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """Blend weight in ``[0, 1]`` between a texture's two colours, Float32[h, w]; ``scale`` ~ object size."""
    angle = rng.uniform(0, math.pi)
    if kind == "solid":
        return np.zeros((h, w), np.float32)
    if kind == "stripes":
        u, _ = _rotated_coords(h, w, angle)
        period = max(3.0, scale * rng.uniform(0.12, 0.35))
        return ((u / period) % 1.0 < rng.uniform(0.3, 0.7)).astype(np.float32)
    if kind == "checker":
        u, v = _rotated_coords(h, w, angle)
        cell = max(2.0, scale * rng.uniform(0.1, 0.3))
        return ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
    if kind == "gradient":
        u, _ = _rotated_coords(h, w, angle)
        span = max(float(u.max() - u.min()), 1.0)
        return np.broadcast_to((u - u.min()) / span, (h, w)).astype(np.float32)
    if kind == "noise":
        blotches = _smooth_noise(rng, h, w, int(rng.integers(3, 9)))
        grain = rng.random((h, w), dtype=np.float32) * 0.4
        return np.clip(blotches * 1.3 - 0.15 + grain - 0.2, 0.0, 1.0)
    raise KeyError(f"unknown texture {kind!r}; known: {', '.join(TEXTURES)}")


def texture(
    rng: np.random.Generator, h: int, w: int, colour: np.ndarray, scale: float, kinds: tuple[str, ...]
) -> np.ndarray:
    """A texture drawn uniformly from ``kinds`` (names in :data:`TEXTURES`; repeat one to weight it)
    of base ``colour`` over an ``h×w`` patch, Float32[h, w, 3]."""
    kind = kinds[int(rng.integers(len(kinds)))]
    other = random_colour(rng)
    if kind == "solid":
        return np.broadcast_to(colour, (h, w, 3))
    weight = _weight_map(kind, rng, h, w, scale)[..., None]
    return colour * (1.0 - weight) + other * weight


def background(
    rng: np.random.Generator,
    h: int,
    w: int,
    amplitude: tuple[float, float],
    stripes: float,
    grid: float,
) -> np.ndarray:
    """A textured background: a gradient plus low-frequency colour noise of an amplitude uniform in
    ``amplitude``, with chance ``stripes`` of soft stripes, else chance ``grid`` of a grid.

    Returns Float32[h, w, 3] in ``[0, 255]`` (not yet quantised, so later layers blend in float).
    """
    ramp = _weight_map("gradient", rng, h, w, max(h, w))[..., None]
    img = random_colour(rng) * (1.0 - ramp) + random_colour(rng) * ramp
    noise_amplitude = rng.uniform(*amplitude)
    img += (_smooth_noise(rng, h, w, int(rng.integers(3, 10)), channels=3) - 0.5) * (2 * noise_amplitude)
    pattern = rng.random()
    if pattern < stripes:  # soft stripes, like a wall or fabric
        u, _ = _rotated_coords(h, w, rng.uniform(0, math.pi))
        period = rng.uniform(0.03, 0.15) * max(h, w)
        img += (np.sin(u * (2 * math.pi / period)) * rng.uniform(10, 35))[..., None]
    elif pattern < stripes + grid:  # a grid of thin lines, like tiles or graph paper
        step = max(6, int(rng.uniform(0.05, 0.2) * max(h, w)))
        line = np.zeros((h, w), bool)
        line[:: step, :] = True
        line[:, :: step] = True
        img[line] = img[line] * 0.5 + random_colour(rng) * 0.5
    return np.clip(img, 0, 255)


def _irregular_polygon(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random-vertex polygon in the unit frame: random angles and radii, so it matches no class."""
    angles = np.sort(rng.uniform(0, 2 * math.pi, n))
    radii = rng.uniform(0.25, 1.0, n)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1) * radii[:, None]


def _blob(rng: np.random.Generator) -> np.ndarray:
    """A lumpy closed outline: a circle whose radius wobbles with a few harmonics (never round)."""
    angles = np.linspace(0, 2 * math.pi, 40, endpoint=False)
    radius = np.ones_like(angles)
    for k in (2, 3, 4):
        radius += rng.uniform(0.12, 0.3) * np.sin(k * angles + rng.uniform(0, 2 * math.pi))
    return np.stack([np.cos(angles), np.sin(angles)], axis=1) * np.clip(radius, 0.2, None)[:, None]


def _place(contour: np.ndarray, rng: np.random.Generator, h: int, w: int, size: float) -> np.ndarray:
    """Scale a unit-frame contour by ``size`` pixels (random stretch and rotation), centre it in the image."""
    angle = rng.uniform(0, 2 * math.pi)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    stretch = np.array([1.0, rng.uniform(0.3, 1.0)]) * size / 2
    centre = np.array([rng.uniform(0, w), rng.uniform(0, h)])
    return (contour * stretch) @ rot.T + centre


def distractor_mask(rng: np.random.Generator, h: int, w: int, late: bool) -> np.ndarray:
    """Draw one random clutter shape (see :data:`DISTRACTOR_KINDS`) into a fresh Uint8[h, w] mask.

    ``late`` distractors are drawn over the objects, so they are kept thinner and smaller: they
    should occlude a little, not hide objects.
    """
    mask = np.zeros((h, w), np.uint8)
    side = max(h, w)
    kind = DISTRACTOR_KINDS[int(rng.integers(len(DISTRACTOR_KINDS)))]
    size = side * math.exp(rng.uniform(math.log(0.04), math.log(0.2 if late else 0.45)))
    thickness = int(rng.integers(1, 3 if late else 5))
    if kind == "line":
        p = rng.uniform([0, 0], [w, h], (2, 2))
        if late:  # a short stroke, not a line across the whole image
            p[1] = p[0] + rng.normal(0, size, 2)
        cv2.line(mask, tuple(int(v) for v in p[0]), tuple(int(v) for v in p[1]), 255, thickness, cv2.LINE_8)
    elif kind == "curve":
        ctrl = rng.uniform(0, 1, (3, 2)) * [w, h]
        if late:
            ctrl = ctrl[:1] + rng.normal(0, size, (3, 2))
        t = np.linspace(0, 1, 24)[:, None]
        pts = (1 - t) ** 2 * ctrl[0] + 2 * (1 - t) * t * ctrl[1] + t**2 * ctrl[2]  # quadratic Bézier
        cv2.polylines(mask, [np.round(pts).astype(np.int32)], False, 255, thickness, cv2.LINE_8)
    elif kind == "arc":
        centre = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        axes = (max(2, int(size / 2)), max(1, int(size / 2 * rng.uniform(0.3, 1.0))))
        start = rng.uniform(0, 360)
        fill = -1 if rng.random() < 0.5 else thickness  # filled ellipse sector or open arc
        cv2.ellipse(mask, centre, axes, rng.uniform(0, 180), start, start + rng.uniform(60, 270), 255, fill)
    else:
        contour = _irregular_polygon(rng, int(rng.integers(5, 10))) if kind == "polygon" else _blob(rng)
        fill_polygons(mask, [_place(contour, rng, h, w, size)])
    return mask


def finish(rng: np.random.Generator, img: np.ndarray, blur_prob: float, noise_sigma: tuple[float, float]) -> np.ndarray:
    """Camera-like finish → Uint8: with chance ``blur_prob`` a slight blur, contrast/brightness
    jitter, and sensor noise of a sigma uniform in ``noise_sigma``."""
    if rng.random() < blur_prob:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.1))
    gain, offset = rng.uniform(0.8, 1.15), rng.uniform(-20, 20)
    noise = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(*noise_sigma))
    return np.clip(img * gain + offset + noise, 0, 255).astype(np.uint8)

"""The built-in synthetic detection dataset: procedurally drawn shapes on cluttered, textured backgrounds.

It is the dataset of the demo and of the tests, and small enough detectors can learn it on a CPU,
so it is made to be worth learning: the class is the *shape* (see :data:`CLASSES`), while scale,
stretch, rotation, colour and texture vary at random, independently of the class; objects overlap,
clutter that belongs to no class is drawn behind and over them, and image sizes vary.

Boxes are the *visible* extent of each object: after everything is drawn, each object's box is
read back from a per-pixel instance-id map, so an occluded or cut-off object gets the box of what
can be seen. A placement that would leave an earlier object less than :data:`MIN_VISIBLE` visible
is rejected; objects under 50 % visible or with a visible box under 8 px on its short side are
flagged ``difficult``.

Every image is a pure function of ``(seed, split, index)`` (its generator is seeded from
``SeedSequence([seed, split_index, image_index])``), so any number of worker processes produce the
same bytes. Layout written by :func:`generate_synthetic` under ``out``::

    JPEGImages/<split>_<index:06d>.jpg   Annotations/*.xml   ImageSets/Main/{train,val,test}.txt
    annotations/instances_<split>.json    unlabeled/unlabeled_<index:06d>.jpg   classes.txt
    .detkd-generated.json   (the generator's stamp: its arguments; see detkd.data.synthetic_folder)

It only writes into a new or empty folder or one it made itself (:mod:`detkd.data.synthetic_folder`).
"""

from __future__ import annotations

import math
import multiprocessing
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from detkd.data.records import DatasetIndex, ImageRecord
from detkd.data.synthetic_shapes import (
    CLASSES,
    background,
    distractor_mask,
    finish,
    object_contours,
    object_pixels,
    random_colour,
    rasterise,
    texture,
)
from detkd.data.synthetic_folder import LABELED_SPLITS, UNLABELED, image_path, prepare_output
from detkd.data.synthetic_presets import DEFAULT_PRESET, PRESETS, SyntheticPreset, get_preset
from detkd.data.writers import write_coco, write_voc
from detkd.fileio import atomic_write_bytes, atomic_write_text

__all__ = [
    "CLASSES",
    "DEFAULT_PRESET",
    "LABELED_SPLITS",
    "MIN_VISIBLE",
    "PRESETS",
    "SPLITS",
    "SyntheticImage",
    "generate_synthetic",
    "perturb_detections",
    "render_image",
]

SPLITS: tuple[str, ...] = (*LABELED_SPLITS, UNLABELED)  # train val test unlabeled; position = seed's split_index
MIN_VISIBLE = 0.4  # no placement may leave an earlier object less visible than this
DIFFICULT_VISIBLE = 0.5  # below this visible fraction an object is flagged difficult ...
DIFFICULT_SIDE = 8.0  # ... and so is one whose visible box is thinner than this many pixels
JPEG_QUALITY = 90

_MIN_AREA = 12  # pixels: smaller shapes carry no shape information at all
_MIN_INSIDE = 0.7  # at most 30 % of a new object may fall outside the image
_PLACEMENT_TRIES = 8


@dataclass
class SyntheticImage:
    """One rendered image and its ground truth.

    Attributes:
        image: Uint8[H, W, 3] BGR pixels, as written to the JPEG (before compression).
        instance_map: Int32[H, W]; ``k`` where object ``k - 1`` is visible, 0 elsewhere.
        boxes: Float32[N, 4] xyxy visible extent of each object (continuous pixel coordinates).
        labels: Int64[N] indices into the preset's ``classes``.
        difficult: Bool[N].
        visible_fraction: Float32[N] visible pixels / pixels of the whole shape.
    """

    image: np.ndarray
    instance_map: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    visible_fraction: np.ndarray

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass
class _Canvas:
    """The image being drawn (float, so layers blend before quantisation) and its instance map."""

    img: np.ndarray
    inst: np.ndarray
    labels: list[int] = field(default_factory=list)
    areas: list[int] = field(default_factory=list)  # whole-shape pixel area of each object
    visible: list[int] = field(default_factory=list)  # pixels of each object still visible

    def covered(self, region: tuple[slice, slice], mask: np.ndarray) -> np.ndarray:
        """Pixels of each object (Int64[N]) that painting ``mask`` at ``region`` would hide."""
        return np.bincount(self.inst[region][mask], minlength=len(self.areas) + 1)[1:]

    def keeps_visible(self, region: tuple[slice, slice], mask: np.ndarray) -> bool:
        """Whether every object stays at least :data:`MIN_VISIBLE` visible after painting ``mask``."""
        if not self.areas:
            return True
        left = np.asarray(self.visible) - self.covered(region, mask)
        return bool(np.all(left >= MIN_VISIBLE * np.asarray(self.areas)))

    def paint(self, region: tuple[slice, slice], mask: np.ndarray, pixels: np.ndarray, instance: int) -> None:
        """Paint ``pixels`` where ``mask`` is set and record ``instance`` (0 = clutter) there."""
        hidden = self.covered(region, mask)
        self.visible = [v - int(c) for v, c in zip(self.visible, hidden, strict=True)]
        self.img[region][mask] = pixels[mask]
        self.inst[region][mask] = instance


def _image_rng(seed: int, split_index: int, image_index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, split_index, image_index]))


def _place_object(canvas: _Canvas, rng: np.random.Generator, label: int, max_frac: float, preset: SyntheticPreset) -> bool:
    """Try once to add an object of class ``label``; False when the placement was rejected."""
    h, w = canvas.inst.shape
    contours = object_contours(rng, preset.classes[label], h, w, (preset.size_range[0], max_frac), preset.aspect_range,
                               preset.rotation_range)
    drawn = rasterise(contours, h, w)
    if drawn is None:
        return False
    region, mask, area = drawn
    inside = int(np.count_nonzero(mask))
    if area < _MIN_AREA or inside < _MIN_INSIDE * area or not canvas.keeps_visible(region, mask):
        return False
    scale = math.sqrt(area)
    pixels = object_pixels(rng, canvas.img[region], mask, scale, preset.object_textures, preset.min_contrast,
                           preset.contrast_tries)
    canvas.paint(region, mask, pixels, len(canvas.areas) + 1)
    canvas.labels.append(label)
    canvas.areas.append(area)
    canvas.visible.append(inside)
    return True


def _add_clutter(canvas: _Canvas, rng: np.random.Generator, count: int, late: bool, kinds: tuple[str, ...]) -> None:
    """Draw ``count`` distractors; late ones (over the objects) must respect :data:`MIN_VISIBLE`."""
    h, w = canvas.inst.shape
    for _ in range(count):
        full = distractor_mask(rng, h, w, late)
        x, y, bw, bh = cv2.boundingRect(full)
        if bw == 0 or bh == 0:
            continue
        region = (slice(y, y + bh), slice(x, x + bw))
        mask = full[region] > 0
        if late and not canvas.keeps_visible(region, mask):
            continue
        pixels = np.array(texture(rng, bh, bw, random_colour(rng), float(max(bw, bh)), kinds), dtype=np.float32)
        canvas.paint(region, mask, pixels, 0)


def _read_boxes(canvas: _Canvas) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Visible boxes (Float32[N, 4]), visible fractions and difficult flags from the instance map."""
    n = len(canvas.areas)
    boxes = np.zeros((n, 4), np.float32)
    for k in range(n):
        mask = canvas.inst == k + 1
        cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
        # Pixel (c, r) covers [c, c+1) × [r, r+1), so the box ends one past the last pixel.
        boxes[k] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    counts = np.bincount(canvas.inst.ravel(), minlength=n + 1)[1:]
    fraction = (counts / np.maximum(np.asarray(canvas.areas, dtype=np.float64), 1)).astype(np.float32)
    short = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    difficult = (fraction < DIFFICULT_VISIBLE) | (short < DIFFICULT_SIDE)
    return boxes, fraction, difficult


def render_image(
    seed: int, split_index: int, image_index: int, size: int = 320, preset: str | SyntheticPreset = DEFAULT_PRESET
) -> SyntheticImage:
    """Draw image ``image_index`` of split ``SPLITS[split_index]`` for ``seed`` (pure function)
    with the look of ``preset`` (see :mod:`detkd.data.synthetic_presets`).

    Width and height are each ``size`` × U(0.75, 1.25), so letterboxing gets exercised.
    """
    look = get_preset(preset)
    rng = _image_rng(seed, split_index, image_index)
    h, w = (round(size * f) for f in rng.uniform(0.75, 1.25, 2))
    img = background(rng, h, w, look.background_amplitude, look.background_stripes, look.background_grid)
    canvas = _Canvas(img=img, inst=np.zeros((h, w), np.int32))
    _add_clutter(canvas, rng, int(rng.integers(*look.clutter_early)), False, look.object_textures)
    crowded = rng.random() < look.crowded_prob
    count = int(rng.integers(*look.crowded_count)) if crowded else int(rng.integers(*look.count_range))
    max_frac = look.crowded_max if crowded else look.size_range[1]
    for _ in range(count):
        label = int(rng.integers(len(look.classes)))
        for _ in range(_PLACEMENT_TRIES):
            if _place_object(canvas, rng, label, max_frac, look):
                break
    _add_clutter(canvas, rng, int(rng.integers(*look.clutter_late)), True, look.object_textures)
    boxes, fraction, difficult = _read_boxes(canvas)
    return SyntheticImage(
        image=finish(rng, canvas.img, look.blur_prob, look.noise_sigma),
        instance_map=canvas.inst,
        boxes=boxes,
        labels=np.asarray(canvas.labels, dtype=np.int64),
        difficult=difficult,
        visible_fraction=fraction,
    )


@dataclass(frozen=True)
class _Task:
    """One image to render and write (picklable, for worker processes)."""

    path: Path
    seed: int
    split_index: int
    image_index: int
    size: int
    preset: str


@dataclass(frozen=True)
class _Result:
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray


def _run_task(task: _Task) -> _Result:
    """Render one image, write its JPEG and return its annotations."""
    rendered = render_image(task.seed, task.split_index, task.image_index, task.size, task.preset)
    ok, encoded = cv2.imencode(".jpg", rendered.image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"cv2.imencode failed for {task.path}")
    atomic_write_bytes(task.path, encoded.tobytes())
    return _Result(rendered.width, rendered.height, rendered.boxes, rendered.labels, rendered.difficult)


def _start_method() -> str:
    """``fork`` where the OS has it, else ``spawn``.

    A spawned worker re-imports ``detkd.data``, whose ``__init__`` pulls in torch (seconds per
    worker); a forked one starts at once. Workers never call torch, and :func:`_run_tasks` stops
    OpenCV's thread pool before forking (a child inheriting it would deadlock in OpenCV).
    """
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def _init_spawned_worker() -> None:
    cv2.setNumThreads(1)


def _run_tasks(tasks: list[_Task], workers: int, progress: bool) -> list[_Result]:
    """Run tasks in order, in ``workers`` processes when more than one; results in task order."""
    results: list[_Result] = []
    # disable=None: no bar when stderr is not a terminal (a log file would get every refresh)
    with tqdm(total=len(tasks), desc="synthetic", unit="img", file=sys.stderr, disable=None if progress else True) as bar:
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                results.append(_run_task(task))
                bar.update()
            return results
        chunk = max(1, min(16, len(tasks) // (workers * 8)))
        cv_threads = cv2.getNumThreads()
        # One thread per worker process: the cores are taken already, and with a single thread
        # OpenCV shuts its pool down, so forked children inherit no half-alive thread pool.
        cv2.setNumThreads(1)
        try:
            method = _start_method()
            init = _init_spawned_worker if method == "spawn" else None  # forked ones inherit the setting
            with multiprocessing.get_context(method).Pool(min(workers, len(tasks)), initializer=init) as pool:
                for result in pool.imap(_run_task, tasks, chunksize=chunk):
                    results.append(result)
                    bar.update()
        finally:
            cv2.setNumThreads(cv_threads)
    return results


def _check_args(seed: int, counts: dict[str, int], size: int, workers: int, preset: str) -> None:
    get_preset(preset)  # a clear error for an unknown name
    unknown = set(counts) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}; expected keys among {list(SPLITS)}")
    if any(n < 0 for n in counts.values()):
        raise ValueError(f"image counts must be >= 0, got {counts}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if size < 32:
        raise ValueError(f"size must be >= 32 pixels, got {size}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")


def generate_synthetic(
    out: Path,
    seed: int,
    counts: dict[str, int],
    size: int = 320,
    workers: int = 2,
    progress: bool = True,
    preset: str = DEFAULT_PRESET,
) -> dict[str, DatasetIndex]:
    """Generate the synthetic dataset under ``out`` in VOC layout, COCO JSON and an unlabeled folder.

    Args:
        out: output folder: new, empty, or made by the generator before (the files of that earlier
            run are removed first); any other folder is refused before anything is written.
        seed: non-negative; the same seed gives byte-identical files whatever ``workers`` is.
        counts: images per split, keys among ``train``, ``val``, ``test``, ``unlabeled`` (missing = 0).
        size: nominal image side in pixels (>= 32); actual sides vary in [0.75, 1.25] × size.
        workers: processes drawing images.
        progress: show a tqdm bar on stderr.
        preset: the look (``standard`` or ``hard``, see :mod:`detkd.data.synthetic_presets`).

    Returns:
        One :class:`DatasetIndex` per labeled split (``train``, ``val``, ``test``), image ids 1..N.

    Raises:
        DatasetError: ``out`` is not empty and was not made by the generator.
    """
    _check_args(seed, counts, size, workers, preset)
    look = get_preset(preset)
    out = Path(out)
    all_counts = {split: int(counts.get(split, 0)) for split in SPLITS}
    prepare_output(out, {"seed": seed, "counts": all_counts, "size": size, "preset": preset})
    tasks = [
        _Task(image_path(out, split, i), seed, split_index, i, size, preset)
        for split_index, split in enumerate(SPLITS)
        for i in range(counts.get(split, 0))
    ]
    results = iter(_run_tasks(tasks, workers, progress))
    indices: dict[str, DatasetIndex] = {}
    for split in LABELED_SPLITS:
        records = []
        for i in range(counts.get(split, 0)):
            res, path = next(results), image_path(out, split, i)
            ann_file = out / "Annotations" / f"{path.stem}.xml"
            records.append(
                ImageRecord(i + 1, path, res.width, res.height, res.boxes, res.labels, res.difficult, ann_file)
            )
        # The source names no folder, so the JSON is byte-identical wherever it is generated.
        source = f"synthetic shapes (preset={preset}, seed={seed}, split={split})"
        index = DatasetIndex(records, list(look.classes), [], source)
        index.num_annotated_boxes = index.num_boxes
        write_voc(index, out, split)
        write_coco(index, out / "annotations" / f"instances_{split}.json", img_root=out / "JPEGImages")
        indices[split] = index
    atomic_write_text(out / "classes.txt", "".join(f"{name}\n" for name in look.classes))
    return indices


def _clipped_xywh(x1: float, y1: float, x2: float, y2: float, width: int, height: int) -> list[float] | None:
    """``[x, y, w, h]`` of a box clipped to the image, rounded to 0.01 px; None when nothing is left."""
    x1, x2 = (round(min(max(v, 0.0), width), 2) for v in (x1, x2))
    y1, y2 = (round(min(max(v, 0.0), height), 2) for v in (y1, y2))
    if x2 - x1 < 0.5 or y2 - y1 < 0.5:
        return None
    return [x1, y1, round(x2 - x1, 2), round(y2 - y1, 2)]


def _false_positive(rng: np.random.Generator, width: int, height: int) -> list[float] | None:
    side = min(width, height) * math.exp(rng.uniform(math.log(0.04), math.log(0.5)))
    aspect = rng.uniform(0.5, 2.0)
    w, h = side * math.sqrt(aspect), side / math.sqrt(aspect)
    x, y = rng.uniform(0, width), rng.uniform(0, height)
    return _clipped_xywh(x - w / 2, y - h / 2, x + w / 2, y + h / 2, width, height)


def _detected(
    rng: np.random.Generator, ann: dict, size: tuple[int, int], jitter: float, confusion: float, cat_ids: list[int]
) -> dict | None:
    """The simulated detection of one ground-truth annotation (None when it falls outside the image)."""
    x, y, w, h = (float(v) for v in ann["bbox"])
    cx, cy = x + w * (0.5 + rng.normal(0, jitter)), y + h * (0.5 + rng.normal(0, jitter))
    w, h = w * math.exp(rng.normal(0, jitter)), h * math.exp(rng.normal(0, jitter))
    score, category = 0.5 + 0.5 * float(rng.beta(4.0, 1.5)), int(ann["category_id"])
    if len(cat_ids) > 1 and rng.random() < confusion:
        category = int(rng.choice([c for c in cat_ids if c != category]))
        score *= 0.6  # a confused detector is usually less sure, too
    bbox = _clipped_xywh(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, *size)
    if bbox is None:
        return None
    return {"image_id": int(ann["image_id"]), "category_id": category, "bbox": bbox, "score": round(score, 4)}


def perturb_detections(
    coco_gt: dict,
    seed: int,
    jitter: float = 0.05,
    miss_rate: float = 0.1,
    fp_per_image: float = 0.5,
    confusion_rate: float = 0.05,
) -> list[dict]:
    """Detections of a simulated, imperfect detector, in COCO results format, from a COCO GT dict.

    Each ground-truth box is missed with probability ``miss_rate``, else reported with its centre
    and size jittered by about ``jitter`` × its size and a high score; ``confusion_rate`` of them
    get a wrong class (and a lower score). Each image also gets Poisson(``fp_per_image``) false
    positives with low scores. Boxes are clipped to their image, scores lie in (0, 1]. The result
    is deterministic per ``seed``: a sanity detections file whose AP is high but below 1.
    """
    rng = np.random.default_rng(seed)
    cat_ids = sorted(int(c["id"]) for c in coco_gt["categories"])
    by_image: dict[int, list[dict]] = {}
    for ann in sorted(coco_gt["annotations"], key=lambda a: a["id"]):
        by_image.setdefault(int(ann["image_id"]), []).append(ann)
    results: list[dict] = []
    for image in sorted(coco_gt["images"], key=lambda i: i["id"]):
        size = (int(image["width"]), int(image["height"]))
        for ann in by_image.get(int(image["id"]), []):
            if ann.get("iscrowd", 0) or rng.random() < miss_rate:
                continue
            if (det := _detected(rng, ann, size, jitter, confusion_rate, cat_ids)) is not None:
                results.append(det)
        for _ in range(int(rng.poisson(fp_per_image))):
            bbox, category = _false_positive(rng, *size), int(rng.choice(cat_ids))
            if bbox is not None:
                score = round(float(rng.uniform(0.01, 0.45)), 4)
                results.append({"image_id": int(image["id"]), "category_id": category, "bbox": bbox, "score": score})
    return results

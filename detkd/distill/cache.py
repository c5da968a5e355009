"""Teacher predictions computed once (``teacher.cache=True``).

Before training, the frozen teacher runs once over every training image, labeled and unlabeled, at
its own input size with no augmentation, and keeps each image's top-N candidates
(:meth:`~detkd.models.detector.Detector.candidates`: boxes in the image file's pixels, objectness,
class distribution over the teacher's classes) in float16. The file is keyed by the teacher
checkpoint's SHA-256, the image list (paths and sizes), the teacher's input size and N, written
atomically into the cache folder (``$DETKD_CACHE/teacher_cache``) and reused by every run and seed
that asks for the same key.

In training, :class:`~detkd.data.dataset.DetectionDataset` moves an image's cached boxes through its
geometric augmentation (letterbox, affine scale/translate, flip) exactly like the ground truth; the
distiller turns them back into candidates in the student's pixels and projects them like online
ones (:meth:`detkd.distill.teachers.TeacherAdapter.project_cached`). Photometric augmentation is not
seen by a cached teacher (it saw the image as it is), and FitNets hints need the online teacher.

The top-N cut is the one place where a cached teacher differs from the online one, which projects
every candidate: in a crowded image a dense teacher spends many candidates on each large object
(the BCCD SSD: 6.7 per red cell), and the small, less certain objects fall below the N-th. The cache
counts what it drops at objectness >= :data:`DROP_WARN` (``TeacherCache.dropped``) and the runner
warns with those counts; on BCCD N = 100 kept 19 % of the SSD's platelets, N = 1000 kept 95 %.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from detkd._env import cache_dir
from detkd.data.images import ImageReadError, load_image
from detkd.data.records import ImageRecord
from detkd.data.transforms import letterbox
from detkd.errors import TeacherError
from detkd.fileio import atomic_write_bytes, file_sha256

__all__ = ["TeacherCache", "cache_key", "teacher_sha256"]

FORMAT = 1

DROP_WARN = 0.1  # a candidate the top-N cut drops at or above this objectness is counted (TeacherCache.dropped)


def teacher_sha256(teacher: nn.Module, checkpoint: str | Path) -> str:
    """The teacher's identity: its checkpoint file's SHA-256, or for a teacher that is no file (an
    ultralytics model name such as ``yolov8n.yaml``) the SHA-256 of its weights."""
    if Path(checkpoint).is_file():
        return file_sha256(checkpoint)
    digest = hashlib.sha256(str(checkpoint).encode())
    for name, tensor in sorted(teacher.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_key(teacher_sha: str, records: Sequence[ImageRecord], imgsz: int, top_n: int) -> str:
    """What the cached candidates depend on: the teacher's weights, the images, the input size, N."""
    digest = hashlib.sha256(f"{FORMAT}|{teacher_sha}|{imgsz}|{top_n}".encode())
    for record in records:
        digest.update(f"|{record.path}|{record.width}x{record.height}".encode())
    return digest.hexdigest()[:20]


class TeacherCache:
    """Cached candidates of every training image (see the module docstring).

    Attributes:
        path: the cache file.
        index: image path (as a string) -> row range in the arrays.
        boxes, obj, cls: Float16[T, 4] xyxy file pixels, Float16[T], Float16[T, K].
    """

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        offsets = data["offsets"].tolist()
        self.index = {p: (offsets[i], offsets[i + 1]) for i, p in enumerate(data["paths"])}
        self.boxes, self.obj, self.cls = data["boxes"].numpy(), data["obj"].numpy(), data["cls"].numpy()
        self.class_names: list[str] = list(data["class_names"])
        # what the top-N cut left out at objectness >= DROP_WARN (files written before it was counted: unknown)
        self.dropped: dict[str, int] | None = data.get("dropped")

    def lookup(self, path: Path) -> dict[str, np.ndarray] | None:
        """The candidates of one image, or None when it was not cached (it could not be read)."""
        rows = self.index.get(str(path))
        if rows is None:
            return None
        a, b = rows
        return {"boxes": self.boxes[a:b].astype(np.float32), "obj": self.obj[a:b], "cls": self.cls[a:b]}

    @classmethod
    def load_or_build(cls, teacher: nn.Module, checkpoint: str | Path, records: Sequence[ImageRecord], top_n: int = 100,
                      folder: str | Path | None = None, batch_size: int = 16) -> TeacherCache:
        """The cache for ``teacher`` (loaded from ``checkpoint``) over ``records``: read when its key
        exists, else computed once (with a progress bar) and written atomically."""
        imgsz = int(teacher.imgsz)
        key = cache_key(teacher_sha256(teacher, checkpoint), records, imgsz, top_n)
        path = Path(folder) if folder is not None else cache_dir() / "teacher_cache"
        path = path / f"teacher_{key}.pt"
        if path.is_file():
            try:
                return cls(path, torch.load(path, map_location="cpu", weights_only=True))
            except Exception:  # a damaged cache is recomputed, never trusted
                path.unlink(missing_ok=True)
        data = _compute(teacher, records, imgsz, top_n, batch_size)
        buffer = io.BytesIO()
        torch.save(data, buffer)
        atomic_write_bytes(path, buffer.getvalue())
        return cls(path, data)


@torch.no_grad()
def _compute(teacher: nn.Module, records: Sequence[ImageRecord], imgsz: int, top_n: int, batch_size: int) -> dict[str, Any]:
    """Run ``teacher`` once per image (letterboxed to ``imgsz``) and keep its top-``top_n`` candidates."""
    if not callable(getattr(teacher, "candidates", None)):
        raise TeacherError(f"{type(teacher).__name__} has no candidates(): it cannot be cached")
    teacher.eval()
    device = next(teacher.parameters()).device
    paths: list[str] = []
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    batch: list[tuple[str, np.ndarray, tuple[float, float]]] = []
    dropped = {"candidates": 0, "images": 0}

    def flush() -> None:
        images = torch.from_numpy(np.stack([b[1] for b in batch])).permute(0, 3, 1, 2).to(device).float() / 255.0
        cands = teacher.candidates(teacher(images))
        for i, (path, _, (sx, sy)) in enumerate(batch):
            obj = cands.obj[i].float()
            top = torch.topk(obj, min(top_n, obj.numel())).indices
            lost = int((obj >= DROP_WARN).sum()) - int((obj[top] >= DROP_WARN).sum())
            dropped["candidates"] += lost
            dropped["images"] += int(lost > 0)
            boxes = cands.boxes[i][top].float().cpu() / torch.tensor([sx, sy, sx, sy])
            parts.append((boxes.half(), obj[top].cpu().half(), cands.cls[i][top].float().cpu().half()))
            paths.append(path)
        batch.clear()

    for record in tqdm(records, desc="teacher cache", unit="img", disable=None):
        try:
            image = load_image(record.path)
        except ImageReadError:
            continue  # the dataset skips it too
        canvas, _, scale = letterbox(image, np.zeros((0, 4), np.float32), imgsz)
        batch.append((str(record.path), canvas, scale))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    counts = [len(p[1]) for p in parts]
    num_k = len(teacher.class_names)
    return {
        "format": FORMAT,
        "paths": paths,
        "offsets": torch.tensor(np.concatenate([[0], np.cumsum(counts)]), dtype=torch.int64),
        "boxes": torch.cat([p[0] for p in parts]) if parts else torch.zeros(0, 4, dtype=torch.float16),
        "obj": torch.cat([p[1] for p in parts]) if parts else torch.zeros(0, dtype=torch.float16),
        "cls": torch.cat([p[2] for p in parts]) if parts else torch.zeros(0, num_k, dtype=torch.float16),
        "class_names": list(teacher.class_names),
        "dropped": dropped,
    }

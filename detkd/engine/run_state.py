"""Run state: what a work dir holds — its latest checkpoint, its best by recorded score, whether its
run finished, and the parameters that run was started with. Training, distillation stages, pruning,
the demo and the benchmarks all ask here instead of globbing file names themselves.

``W/run.json`` (written atomically) records ``{"stage", "params", "finished"}``. Starting a run in
a work dir (:meth:`RunState.begin`):

- removes the temporary files an interrupted atomic write left behind (:func:`detkd.fileio.remove_temp_files`);
- an empty or new work dir starts a new run;
- a work dir whose run had other parameters is refused, naming the first changed settings: pick a
  new ``--work-dir`` (a finished stage is never silently reused for other settings);
- an unfinished run with the same parameters continues only with ``--resume``; without it, it is
  refused rather than silently overwriting ``epoch_1.pth``; ``--resume`` with more ``train.epochs``
  (and nothing else changed) continues a run to train it longer;
- a work dir with checkpoints but no ``run.json`` (another tool, an older detkd) is refused
  without ``--resume``.

The best checkpoint is chosen by the score each ``best_*.pth`` records (mmengine stores the best
score in the checkpoint's runtime info when it saves it), never by its epoch in the file name, so a
leftover of an interrupted save or of an older run cannot win by being later.
"""

from __future__ import annotations

import inspect
import json
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from detkd.errors import CheckpointError, RunStateError
from detkd.fileio import atomic_write_json, atomic_write_text, remove_temp_files

__all__ = ["RUN_FILE", "RunState", "best_checkpoint", "describe_changes", "plain_params"]

RUN_FILE = "run.json"
_EPOCH = re.compile(r"epoch_(\d+)\.pth$")


def plain_params(obj: Any) -> Any:
    """Config values as JSON: classes and functions (``type=SGD``) by their qualified name."""
    if isinstance(obj, Mapping):
        return {str(k): plain_params(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_params(v) for v in obj]
    if inspect.isclass(obj) or inspect.isfunction(obj):
        return f"{obj.__module__}.{obj.__qualname__}"
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return repr(obj)


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): obj}


def describe_changes(old: Mapping[str, Any], new: Mapping[str, Any], limit: int = 3) -> str:
    """``"train.epochs 10 -> 20, imgsz 160 -> 224"``: the first ``limit`` settings that differ."""
    a, b = _flatten(old), _flatten(new)
    keys = [k for k in dict.fromkeys([*a, *b]) if a.get(k, "<unset>") != b.get(k, "<unset>")]
    parts = [f"{k} {a.get(k, '<unset>')!r} -> {b.get(k, '<unset>')!r}" for k in keys[:limit]]
    return ", ".join(parts) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _only_epochs_differ(old: Any, new: Mapping[str, Any]) -> bool:
    """A run resumed to train longer (``train.epochs`` raised, nothing else changed) continues."""
    if not isinstance(old, Mapping) or not isinstance(old.get("train"), Mapping) or not isinstance(new.get("train"), Mapping):
        return False
    strip = lambda p: {**p, "train": {k: v for k, v in p["train"].items() if k != "epochs"}}  # noqa: E731
    return strip(old) == strip(new) and new["train"].get("epochs", 0) > old["train"].get("epochs", 0)


def _epoch(path: Path) -> int:
    match = _EPOCH.search(path.name)
    return int(match.group(1)) if match else -1


def _recorded_score(path: Path) -> float | None:
    """The best score a ``best_*.pth`` recorded when it was saved (None: unreadable or none)."""
    from detkd.engine.checkpoint import load_checkpoint_file  # engine level; loads torch lazily

    try:
        checkpoint = load_checkpoint_file(path)
    except CheckpointError as exc:
        warnings.warn(f"{path}: skipped as best checkpoint: {exc}", stacklevel=3)
        return None
    info = (checkpoint.get("message_hub") or {}).get("runtime_info") or {}
    score = info.get("best_score")
    return float(score) if isinstance(score, (int, float)) else None


class RunState:
    """The state of one work dir (see the module docstring)."""

    def __init__(self, work_dir: str | Path) -> None:
        self.work_dir = Path(work_dir)

    @property
    def record_path(self) -> Path:
        return self.work_dir / RUN_FILE

    def record(self) -> dict[str, Any] | None:
        """``run.json``, or None when absent or unreadable."""
        try:
            data = json.loads(self.record_path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def epoch_checkpoints(self) -> list[Path]:
        """``epoch_N.pth`` files, oldest first."""
        return sorted(self.work_dir.glob("epoch_*.pth"), key=_epoch)

    def finished(self, params: Mapping[str, Any] | None = None) -> bool:
        """Whether the run finished (with these ``params``, when given)."""
        record = self.record()
        if record is None or not record.get("finished"):
            return False
        return params is None or record.get("params") == plain_params(params)

    def latest(self) -> Path | None:
        """The newest epoch checkpoint (mmengine's ``last_checkpoint`` when it names an existing file)."""
        pointer = self.work_dir / "last_checkpoint"
        try:
            named = Path(pointer.read_text().strip())
        except OSError:
            named = None
        if named is not None and named.name and named.is_file():
            return named
        epochs = self.epoch_checkpoints()
        return epochs[-1] if epochs else None

    def best(self) -> Path:
        """The best checkpoint by its recorded score (ties: the later epoch), else the latest.

        Raises:
            CheckpointError: the work dir holds no checkpoint.
        """
        scored = [(score, _epoch(p), p) for p in self.work_dir.glob("best_*.pth") if (score := _recorded_score(p)) is not None]
        if scored:
            return max(scored, key=lambda item: (item[0], item[1]))[2]
        latest = self.latest()
        if latest is None:
            raise CheckpointError(f"{self.work_dir}: no checkpoint (did its training run?)")
        return latest

    def best_score(self) -> float | None:
        """The score the best checkpoint recorded (the save_best metric, e.g. val mAP50); None without one."""
        scores = [score for p in self.work_dir.glob("best_*.pth") if (score := _recorded_score(p)) is not None]
        return max(scores) if scores else None

    def check(self, params: Mapping[str, Any], resume: bool) -> bool:
        """Whether a run with ``params`` may start here (nothing is written); returns whether it resumes.

        Raises:
            RunStateError: the work dir holds another run, or an unfinished one without ``resume``.
        """
        params = plain_params(params)
        record = self.record()
        has_run = bool(self.epoch_checkpoints() or list(self.work_dir.glob("best_*.pth")))
        if not has_run:
            return False  # nothing to lose: a record of a run that failed before its first checkpoint is replaced
        old = (record or {}).get("params")
        longer = record is not None and _only_epochs_differ(old, params)
        if longer and not resume:
            raise RunStateError(f"{self.work_dir} holds a run of {old['train']['epochs']} epochs; pass --resume to train it "
                                f"to {params['train']['epochs']}, or a new --work-dir")
        if record is not None and old != params and not longer:
            raise RunStateError(f"{self.work_dir} holds a run with other settings ({describe_changes(old or {}, params)}); "
                                f"pass a new --work-dir")
        if not resume:
            if record is not None and record.get("finished"):
                raise RunStateError(f"{self.work_dir} holds a finished run with these settings; to train again, pass a new --work-dir")
            what = "an unfinished run" if record is not None else "checkpoints of another run"
            raise RunStateError(f"{self.work_dir} holds {what}; pass --resume to continue it, or a new --work-dir")
        return True

    def begin(self, stage: str, params: Mapping[str, Any], resume: bool) -> bool:
        """:meth:`check`, then clean up after a crash (temporary files, a dangling ``last_checkpoint``)
        and record ``params``; returns whether the run resumes."""
        resume = self.check(params, resume)
        remove_temp_files(self.work_dir)
        self._repair_pointer()
        atomic_write_json(self.record_path, {"stage": stage, "params": plain_params(params), "finished": False})
        return resume

    def finish(self) -> None:
        """Mark the run finished (its parameters stay recorded)."""
        record = self.record() or {}
        atomic_write_json(self.record_path, {**record, "finished": True})

    def _repair_pointer(self) -> None:
        """Point ``last_checkpoint`` (written non-atomically by mmengine) at the newest existing epoch
        checkpoint if a crash left it empty or naming a file that is gone."""
        pointer = self.work_dir / "last_checkpoint"
        if not pointer.exists():
            return
        latest = self.latest()
        named = pointer.read_text().strip()
        if latest is not None and named != str(latest):
            atomic_write_text(pointer, str(latest))
        elif latest is None:
            pointer.unlink()


def best_checkpoint(work_dir: str | Path) -> Path:
    """The best checkpoint of a work dir by recorded score (see :meth:`RunState.best`)."""
    return RunState(work_dir).best()

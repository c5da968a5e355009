#!/usr/bin/env python
"""The distillation table on the test split: a teacher, the F-YOLO student labels-only, distilled, distilled with
extra unlabeled images, and ultralytics' YOLOv8n as the peer, 3 seeds per student row.

    python benchmarks/distill_table.py --dataset voc_subset [--seeds 0 1 2] [--only METHOD ...] [--work DIR]
    python benchmarks/distill_table.py --report

The protocol, in code (detkd.engine.results):
- Every row is a **recipe**, a config committed before its test rows (``configs/recipes/*.py``; a row records
  ``recipe = <file>@<commit>`` and the script refuses a recipe with uncommitted changes). Nothing here tunes
  anything: the settings were chosen on val, elsewhere.
- **Checkpoint rule, every row alike**: the best val mAP50 of the validations at epochs 5, 10, 15, 20
  (``selected_on: val``); rows are **reported on test** (``split: test``), computed once per recipe and seed. The
  results writer refuses a row whose ``split`` is its ``selected_on``. The YOLOv8n peer keeps ultralytics'
  checkpoint of every epoch and takes the one of those four epochs with the best val mAP50 ultralytics logged.
- **Seeds**: each student row is trained once per ``--seeds`` value (``train.seed``: data order, augmentation and
  initialisation); the teacher once, seed 0. The unlabeled pool is a folder no reported split holds (training
  refuses one that shares an image with val or test).
- **Paired timing**: each row's graph is timed in alternation with its teacher's (5 rounds of 30 runs, ONNX
  Runtime, batch 1, one process), its ``timing`` record keeps every round and the machine fingerprint, and the
  speedup is the median of the per-round ratios; the YOLOv8n rows are timed beside the teacher and beside the
  student recipe's graph (its network; a graph's latency does not depend on its weights), so "faster than the
  peer" is a paired ratio too.

Datasets: ``voc_subset`` (real VOC2012 images, 19 classes present: train 1,697 / val 832 / test 897, plus 1,181
unlabeled images in ``unlabeled/``), read through ``--data`` as a user's VOC folder is. Work folders (checkpoints,
ONNX graphs) go to ``--work`` (default ``benchmarks/work/distill_table``); the teacher is kept in the repository
(``benchmarks/subjects/``) when it finishes, since a machine's work folders do not outlive it. Resumable: a training
resumes from its last checkpoint, and a row already in the results file is skipped.

Outputs: ``benchmarks/results/distill_table.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

from common import DATA_ROOTS, REPO, RESULTS, WORK, kept_subject, kept_subjects, python, recipe_id, run

import detkd  # noqa: F401  (offline environment first)
from detkd.engine.results import (ResultsFile, markdown_table, mean_sd, paired_speedup, plot_map_vs_fps, seed_verdict,
                                  write_markdown)

RESULTS_FILE = RESULTS / "distill_table.json"
RECIPES = {
    "teacher": "configs/recipes/ssd_teacher_320.py",
    "labels_only": "configs/recipes/fyolo_student_320.py",
    "distilled": "configs/recipes/fyolo_distill_320.py",
    "distilled_unlabeled": "configs/recipes/fyolo_distill_unlabeled_320.py",
}
PEER = "yolov8n"  # ultralytics' YOLOv8n from its yaml, labels only, the student recipe's epochs, size and batch
METHODS = ["teacher", "labels_only", "distilled", "distilled_unlabeled", PEER]
# unlabeled: the dataset has images beyond its splits (``unlabeled/``); teacher: a kept subject to distill from instead
# of the teacher recipe (BCCD: the width-0.5 SSD of the val-era tables, trained on train and chosen on val, never shown
# test; 30 epochs of configs/train/ssd_cpu_bccd.py, its command in benchmarks/subjects/subjects.json)
DATASETS = {"voc_subset": dict(unlabeled=True, teacher=None), "bccd": dict(unlabeled=False, teacher="ssd_cpu_w0.5_bccd")}
SELECTION_EPOCHS = (5, 10, 15, 20)  # the recipes validate every 5 epochs of 20: the checkpoint is the best of these
CHECKPOINT_RULE = "best val mAP50, validated every 5 epochs"  # every row's, the kept teachers' included
PAIR_ROUNDS = 5
ARCH = "student_recipe_graph"  # the student recipe's network (untrained), timed beside the peer
KEY = ("method", "dataset", "seed", "recipe")
COLUMNS = ["method", "seed", "mAP50", "AP", "val_mAP50", "best_epoch", "onnx_latency_ms", "teacher_latency_ms", "speedup",
           "params", "flops", "images_per_epoch", "train_step_ms"]
# The targets of the numbers issue (test split, means over seeds, every seed listed)
TARGET_KD_GAIN = 0.03  # distilled >= labels-only + 3 mAP50
TARGET_UNLABELED_GAIN = 0.01  # unlabeled/ adds >= 1 mAP50 over distillation without it
TARGET_SPEEDUP = 5.0  # the student >= 5x faster than its teacher
SEEDS_FOR_CLAIM = 3  # a verdict on fewer seeds says so: no claim yet
TARGET_KEPT = 0.95  # the best student keeps >= 95 % of its teacher's mAP50 (at >= 5x)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=list(DATASETS), default="voc_subset")
    parser.add_argument("--data", type=Path, help="dataset root (default: the shared copy beside the repository)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the student rows (default: 0 1 2)")
    parser.add_argument("--only", nargs="+", choices=METHODS, help="run only these rows (default: all, seed by seed)")
    parser.add_argument("--work", type=Path, default=WORK / "distill_table", help="work folders (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="threads of the latency measurements")
    parser.add_argument("--device", default="cpu", help="device of the YOLOv8n peer's training (detkd takes a GPU when present)")
    parser.add_argument("--report", action="store_true", help="only rewrite the report from the results file")
    return parser.parse_args()


# ---- training -------------------------------------------------------------------------------------------------

def teacher_subject(dataset: str) -> str:
    """The name of ``dataset``'s kept teacher: its own (``DATASETS``), else the teacher recipe's, ``ssd_teacher_320_<dataset>``."""
    return DATASETS[dataset]["teacher"] or f"ssd_teacher_320_{dataset}"


def teacher_checkpoint(args: argparse.Namespace) -> Path:
    """The teacher: the kept one (``benchmarks/subjects/<teacher_subject>.pth``), else trained now by the teacher recipe
    (seed 0) and kept, so that every later session distills from the same file."""
    kept = kept_subject(teacher_subject(args.dataset))
    if kept is not None:
        return kept
    if DATASETS[args.dataset]["teacher"]:
        raise SystemExit(f"{teacher_subject(args.dataset)}: the kept teacher of {args.dataset} is not in benchmarks/subjects/")
    best = train_detkd("teacher", 0, None, args)
    keep = REPO / "benchmarks" / "keep_subject.py"
    trained_by = (f"python tools/train.py {RECIPES['teacher']} --data {args.data} --cfg-options train.seed=0 "
                  f"(benchmarks/distill_table.py --dataset {args.dataset}, recipe {recipe_id(REPO / RECIPES['teacher'])})")
    run(python(str(keep), str(best), "--name", teacher_subject(args.dataset), "--trained-by", trained_by), quiet=False)
    kept = kept_subject(teacher_subject(args.dataset))
    assert kept is not None
    print(f"{kept}: the teacher, kept; commit it with benchmarks/subjects/subjects.json", flush=True)
    return kept


def row_recipe(method: str, dataset: str) -> str:
    """What a row records as its recipe: ``<config>@<commit>`` (:func:`~common.recipe_id`); the peer's names the student
    recipe it copies; a kept teacher's names its file, hash and the command that trained it."""
    if method == "teacher" and DATASETS[dataset]["teacher"]:
        entry = kept_subjects()[teacher_subject(dataset)]
        return f"{entry['file']}@{entry['sha256'][:8]} ({entry['trained_by']})"
    if method == PEER:
        return f"yolov8n.yaml (ultralytics) with the epochs, size and batch of {recipe_id(REPO / RECIPES['labels_only'])}"
    return recipe_id(REPO / RECIPES[method])


def work_dir(method: str, seed: int, args: argparse.Namespace) -> Path:
    return args.work / args.dataset / ("teacher" if method == "teacher" else f"seed_{seed}" / Path(method))


def train_detkd(method: str, seed: int, teacher: Path | None, args: argparse.Namespace) -> Path:
    """Train (or resume, or find finished) one detkd row; returns its best-val-mAP50 checkpoint."""
    from detkd.engine.run_state import RunState, best_checkpoint

    work = work_dir(method, seed, args)
    script = "tools/train.py" if teacher is None else "tools/train_distill.py"
    cmd = python(script, RECIPES[method], "--data", str(args.data), "--work-dir", str(work))
    if teacher is not None:
        cmd += ["--teacher-ckpt", str(teacher)]
    if not RunState(work).finished():
        run([*cmd, "--cfg-options", f"train.seed={seed}", *(["--resume"] if (work / "last_checkpoint").is_file() else [])])
    return best_checkpoint(work)


def peer_data(args: argparse.Namespace) -> Path:
    """The dataset's train and val splits written once in ultralytics' layout; returns its ``data.yaml``."""
    from detkd.data.layouts import discover
    from detkd.data.sources import read_split
    from detkd.data.writers import write_yolo

    data_yaml = args.work / args.dataset / "yolo_data" / "data.yaml"
    if not data_yaml.is_file():
        data = discover(args.data).data_config()
        for split in ("train", "val"):
            write_yolo(read_split(data, split), data_yaml.parent, split)
    return data_yaml


def peer_settings() -> dict[str, int]:
    """The peer's epochs, input size and batch: the student recipe's."""
    from detkd.config import load_config

    recipe = load_config(REPO / RECIPES["labels_only"])
    return {"epochs": int(recipe.train["epochs"]), "imgsz": int(recipe.imgsz), "batch": int(recipe.train["batch_size"])}


def train_peer(seed: int, args: argparse.Namespace) -> tuple[Path, int, float]:
    """YOLOv8n by ultralytics' own trainer with :func:`peer_settings`; every epoch's checkpoint kept, and the one of
    :data:`SELECTION_EPOCHS` with the best val mAP50 ultralytics logged taken (the rule of every row). Returns
    (checkpoint, its epoch, its val mAP50)."""
    from detkd.models.ultralytics_adapter import train_ultralytics

    settings = peer_settings()
    project, name = args.work / args.dataset / f"seed_{seed}", PEER
    train_ultralytics("yolov8n.yaml", data_yaml=peer_data(args), project=project, name=name, seed=seed, device=args.device,
                      save_period=1, **settings)
    with open(project / name / "results.csv", newline="") as f:
        logged = {int(float(r["epoch"])): float(r["metrics/mAP50(B)"]) for r in
                  ({k.strip(): v.strip() for k, v in row.items()} for row in csv.DictReader(f))}
    epoch = max((e for e in SELECTION_EPOCHS if e in logged), key=lambda e: logged[e])
    weights = project / name / "weights"
    chosen = weights / ("last.pt" if epoch == settings["epochs"] else f"epoch{epoch - 1}.pt")  # counted from 0 there
    if not chosen.is_file():
        raise SystemExit(f"{chosen}: the checkpoint of epoch {epoch} is missing; train the peer again")
    return chosen, epoch, logged[epoch]


# ---- evaluation on test and paired timing ---------------------------------------------------------------------

def images_per_epoch(method: str, data: dict[str, Any]) -> int:
    """Images a row's training sees per epoch: the train split, plus ``ratio`` times as many unlabeled ones."""
    from detkd.config import load_config
    from detkd.data.sources import read_split

    train = len(read_split(data, "train").records)
    if method not in RECIPES:
        return train
    ratio = float(load_config(REPO / RECIPES[method]).get("unlabeled", {}).get("ratio") or 0.0)
    return train + int(round(ratio * train))


def student_graph(index: Any, args: argparse.Namespace) -> tuple[Path, Any]:
    """The student recipe's network, untrained, as an ONNX graph (timed beside the peer: same graph, same latency)."""
    from detkd.config import load_config
    from detkd.export.onnx import export_onnx, sample_images
    from detkd.models.factory import build_model

    recipe = load_config(REPO / RECIPES["labels_only"])
    spec = dict(recipe.model)
    model = build_model(spec.pop("name"), class_names=list(index.class_names), imgsz=int(recipe.imgsz),
                        **{k: v for k, v in spec.items() if k not in ("anchors", "num_anchors")})
    path = args.work / args.dataset / "onnx" / f"{ARCH}.onnx"
    images = sample_images(index, int(recipe.imgsz), count=2)
    if not path.is_file():
        export_onnx(model.eval(), path, int(recipe.imgsz), check_images=images)
    return path, images[:1]


def evaluate_row(name: str, method: str, seed: int, ckpt: Path, teacher: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The row of one trained model: COCO mAP50 / AP on **test**, size, and its latency timed beside its teacher's
    (and, for the peer, beside the student recipe's graph)."""
    from detkd.data.layouts import discover
    from detkd.data.sources import read_split
    from detkd.engine.benchmark import count_flops, count_params, interleaved_onnx_latency, machine_fingerprint, train_step_ms
    from detkd.engine.checkpoint import checkpoint_model_label, load_detector
    from detkd.engine.evaluate import evaluate_model
    from detkd.export.onnx import export_onnx, sample_images

    data = discover(args.data).data_config()
    test = read_split(data, "test")
    if method == PEER:
        from detkd.models.ultralytics_adapter import load_ultralytics

        detector = load_ultralytics(str(ckpt), class_names=list(test.class_names), imgsz=peer_settings()["imgsz"],
                                    trust=True)  # a file this benchmark trained
    else:
        detector = load_detector(ckpt)
    imgsz = int(detector.imgsz)
    metrics, _ = evaluate_model(detector, test, batch_size=8, progress=False)
    onnx_dir = args.work / args.dataset / "onnx"
    teacher_name = f"{args.dataset}_teacher"

    def graph(model: Any, graph_name: str) -> tuple[Path, Any]:  # exported once per row (verified on test images)
        path, images = onnx_dir / f"{graph_name}.onnx", sample_images(test, int(model.imgsz), count=4)
        if not path.is_file():
            export_onnx(model, path, int(model.imgsz), check_images=images)
        return path, images[:1]

    graphs = {name: graph(detector, name)}
    if method == "teacher":  # the teacher beside the student recipe's graph
        graphs[ARCH] = student_graph(test, args)
    else:
        graphs[teacher_name] = graph(load_detector(teacher), teacher_name)
    if method == PEER:
        graphs[ARCH] = student_graph(test, args)
    timing = interleaved_onnx_latency(graphs, args.threads, rounds=PAIR_ROUNDS)
    row: dict[str, Any] = {
        "name": name, "dataset": args.dataset, "method": method, "seed": seed, "split": "test", "selected_on": "val",
        "checkpoint_rule": CHECKPOINT_RULE,
        "recipe": row_recipe(method, args.dataset),
        "teacher": checkpoint_model_label(teacher, file_hash=True), "imgsz": imgsz,
        "params": count_params(detector), "flops": count_flops(detector, imgsz), "mAP50": metrics["AP50"], "AP": metrics["AP"],
        "voc_AP50": metrics["voc_AP50"], "onnx_latency_ms": timing["ms"][name], "timing": timing,
        "machine": machine_fingerprint(args.threads), "images_per_epoch": images_per_epoch(method, data),
        "checkpoint": str(ckpt), "train_step_ms": None if method == PEER else train_step_ms(work_dir(method, seed, args)),
    }
    if method != "teacher":
        row.update(teacher_latency_ms=timing["ms"][teacher_name], speedup=paired_speedup(timing, name, teacher_name))
    if method == PEER:
        row.update(student_graph_ms=timing["ms"][ARCH], speedup_of_student_over_peer=paired_speedup(timing, ARCH, name))
    return row


def val_selection(work: Path) -> tuple[int | None, float | None]:
    """The epoch and val mAP50 of a detkd run's best checkpoint (from the validation log in its ``work`` folder)."""
    from detkd.engine.benchmark import validation_curve

    curve = dict(validation_curve(work))
    if not curve:
        return None, None
    epoch = max(curve, key=lambda e: curve[e])
    return epoch, curve[epoch]


# ---- the report -----------------------------------------------------------------------------------------------

def judge(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The targets that ``rows`` (one dataset's) can judge, each ``{"target", "measured", "verdict"}`` (markdown):
    judged on the mean over seeds, every seed listed and each seed that misses flagged."""
    by = {m: {r["seed"]: r for r in rows if r["method"] == m} for m in METHODS}
    out = []

    def flagged(v: dict[str, Any], *more: dict[str, Any]) -> str:  # every verdict met; the seeds any of them misses
        missed = sorted(set(v["missed"]).union(*(m["missed"] for m in more)))
        seeds = "" if not missed else f"; seed {missed[0]} misses" if len(missed) == 1 else \
            f"; seeds {', '.join(map(str, missed))} miss"
        verdict = ("met" if v["met"] and all(m["met"] for m in more) else "missed") + seeds
        return verdict if v["n"] >= SEEDS_FOR_CLAIM else f"{verdict} so far ({v['n']} of {SEEDS_FOR_CLAIM} seeds: no claim yet)"

    def gain(target: str, better: str, base: str, bound: float, metric: str = "mAP50") -> None:
        seeds = sorted(set(by[better]) & set(by[base]))
        other = "AP" if metric == "mAP50" else "mAP50"
        if seeds:
            gains = {s: by[better][s][metric] - by[base][s][metric] for s in seeds}
            rest = statistics.fmean(by[better][s][other] - by[base][s][other] for s in seeds)
            v = seed_verdict(gains, bound)
            out.append({"target": target, "verdict": flagged(v),
                        "measured": f"**{100 * v['mean']:+.1f} {metric}** ({', '.join(f's{s} {100 * g:+.1f}' for s, g in gains.items())}), "
                                    f"{100 * rest:+.1f} {other}, n={v['n']}"})

    gain("distilled ≥ labels-only + 3 mAP50", "distilled", "labels_only", TARGET_KD_GAIN)
    gain("distilled ≥ labels-only + 3 AP", "distilled", "labels_only", TARGET_KD_GAIN, metric="AP")
    gain("unlabeled images add ≥ 1 mAP50 over distillation without them", "distilled_unlabeled", "distilled",
         TARGET_UNLABELED_GAIN)
    for method in ("distilled", "distilled_unlabeled", "labels_only"):  # the student's network is the same in each
        speed = {s: r["speedup"] for s, r in by[method].items() if r.get("speedup")}
        if speed:
            v = seed_verdict(speed, TARGET_SPEEDUP)
            out.append({"target": "the student ≥ 5x faster than its teacher (paired)", "verdict": flagged(v),
                        "measured": f"**{v['mean']:.2f}x** ({', '.join(f's{s} {x:.2f}x' for s, x in speed.items())}; "
                                    f"{method} rows)"})
            break
    teacher = next(iter(by["teacher"].values()), None)
    if teacher and by["labels_only"]:
        lo = statistics.fmean(r["mAP50"] for r in by["labels_only"].values())
        out.append({"target": "the teacher stronger than the student it teaches",
                    "measured": f"teacher {teacher['mAP50']:.3f} mAP50, labels-only student {lo:.3f} ({100 * (teacher['mAP50'] - lo):+.1f})",
                    "verdict": flagged({"met": teacher["mAP50"] > lo, "missed": [], "n": len(by["labels_only"])})})
    distilled = [m for m in ("distilled", "distilled_unlabeled") if by[m]]
    best = max(distilled, key=lambda m: statistics.fmean(r["mAP50"] for r in by[m].values())) if distilled else "distilled"
    if teacher and by[best] and teacher["mAP50"] > 0:
        kept = {s: r["mAP50"] / teacher["mAP50"] for s, r in by[best].items()}
        speed = {s: r.get("speedup") or 0.0 for s, r in by[best].items()}
        v, f = seed_verdict(kept, TARGET_KEPT), seed_verdict(speed, TARGET_SPEEDUP)
        out.append({"target": "best student ≥ 95 % of its teacher's mAP50 at ≥ 5x (paired)",
                    "measured": f"{best}: **{100 * v['mean']:.0f} %** at **{f['mean']:.2f}x** "
                                f"({', '.join(f's{s} {100 * kept[s]:.0f} % {speed[s]:.2f}x' for s in kept)})",
                    "verdict": flagged(v, f)})
    seeds = sorted(set(by[best]) & set(by[PEER]))
    if seeds:
        gains = {s: by[best][s]["mAP50"] - by[PEER][s]["mAP50"] for s in seeds}
        faster = {s: by[PEER][s]["speedup_of_student_over_peer"] for s in seeds}
        v, f = seed_verdict(gains, 0.0), seed_verdict(faster, 1.0)
        out.append({"target": "detkd's student ahead of YOLOv8n (same epochs) in mAP50, at lower latency",
                    "measured": f"{best} {100 * v['mean']:+.1f} mAP50 ({', '.join(f's{s} {100 * g:+.1f}' for s, g in gains.items())}), "
                                f"its graph {f['mean']:.2f}x as fast (paired)",
                    "verdict": flagged(v, f)})
    return out


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """:func:`judge` as markdown bullets."""
    return [f"- {j['target']}: {j['measured']}: **{j['verdict']}**." for j in judge(rows)]


def write_report(results: ResultsFile) -> None:
    parts = []
    summaries = []
    for dataset in dict.fromkeys(r["dataset"] for r in results.rows):
        rows = sorted((r for r in results.rows if r["dataset"] == dataset),
                      key=lambda r: (METHODS.index(r["method"]), r["seed"]))
        for r in rows:
            r.setdefault("speedup", None)
            r["val_mAP50"], r["best_epoch"] = r.get("val_mAP50"), r.get("best_epoch")
        table = ["| row | seeds | mAP50 (test) | AP (test) | ONNX ms | speedup vs teacher (paired) | images / epoch | recipe |",
                 "|---|---|---|---|---|---|---|---|"]
        for method in METHODS:
            members = [r for r in rows if r["method"] == method]
            if not members:
                continue
            speed = [r["speedup"] for r in members if r.get("speedup")]
            table.append(f"| {method} | {', '.join(str(r['seed']) for r in members)} | {mean_sd([r['mAP50'] for r in members])} | "
                         f"{mean_sd([r['AP'] for r in members])} | {statistics.median(r['onnx_latency_ms'] for r in members):.1f} | "
                         f"{f'{statistics.fmean(speed):.2f}x' if speed else '-'} | {members[0]['images_per_epoch']} | "
                         f"`{members[0]['recipe']}` |")
            summaries.append({"name": method, "dataset": dataset, "mAP50": statistics.fmean(r["mAP50"] for r in members),
                              "mAP50_sd": statistics.stdev([r["mAP50"] for r in members]) if len(members) > 1 else 0.0,
                              "onnx_latency_ms": statistics.median(r["onnx_latency_ms"] for r in members)})
        machines = sorted({r["machine"]["id"] for r in rows})
        m = rows[0]["machine"]
        parts.append(
            f"**{dataset}** (reported on **test**; checkpoints chosen on val: {CHECKPOINT_RULE}; mean ± sample "
            f"standard deviation over seeds; ONNX Runtime batch 1, {m['threads']} threads, {m['cpu']}, machine "
            f"{', '.join(machines)}; each speedup from its row's own paired timing, {PAIR_ROUNDS} alternating rounds)\n\n"
            + "\n".join(table) + "\n\n" + "\n".join(verdicts(rows) or ["- no target can be judged yet"])
            + "\n\nEvery run:\n\n" + markdown_table(rows, COLUMNS))
    write_markdown(RESULTS / "distill_table.md", "\n\n".join(parts) + "\n")
    if summaries:
        plot_map_vs_fps(summaries, RESULTS / "distill_table.png", "Distillation on the test split: mAP50 vs ONNX Runtime FPS")


def main() -> int:
    args = parse_args()
    from detkd.engine.benchmark import machine_info

    command = "python benchmarks/distill_table.py " + " ".join(sys.argv[1:])
    results = ResultsFile(RESULTS_FILE, machine_info(args.threads), command.strip(), protocol=True)
    if args.report:
        write_report(results)
        return 0
    args.data = args.data or DATA_ROOTS[args.dataset]
    wanted = [m for m in (args.only or METHODS) if DATASETS[args.dataset]["unlabeled"] or m != "distilled_unlabeled"]
    teacher = teacher_checkpoint(args) if set(wanted) - {"labels_only", PEER} else None
    todo = [("teacher", 0)] if "teacher" in wanted else []
    todo += [(m, s) for s in args.seeds for m in wanted if m != "teacher"]
    for method, seed in todo:
        recipe = row_recipe(method, args.dataset)  # refuses an uncommitted recipe now
        if any(r["method"] == method and r["dataset"] == args.dataset and r["seed"] == seed and r["recipe"] == recipe
               for r in results.rows):
            continue
        teacher = teacher or teacher_checkpoint(args)
        name = f"{args.dataset}_{method}" + ("" if method == "teacher" else f"_s{seed}")
        if method == PEER:
            ckpt, epoch, val = train_peer(seed, args)
        else:
            ckpt = teacher if method == "teacher" else train_detkd(method, seed, teacher if "distilled" in method else None, args)
            epoch, val = val_selection(work_dir(method, seed, args))  # the teacher's: where it was trained, if here
        row = evaluate_row(name, method, seed, ckpt, teacher, args)
        row.update(best_epoch=epoch, val_mAP50=val, command=command.strip())
        results.add(row, key=KEY)
        print(f"{name}: test mAP50 {row['mAP50']:.3f} AP {row['AP']:.3f}, {row['onnx_latency_ms']:.1f} ms"
              + (f", {row['speedup']:.2f}x faster than the teacher (paired)" if row.get("speedup") else ""), flush=True)
        if method == PEER:  # the other epochs' checkpoints were only kept to choose from
            for extra in (ckpt.parent).glob("epoch*.pt"):
                if extra != ckpt:
                    extra.unlink()
        write_report(results)
    write_report(results)
    return 0


if __name__ == "__main__":
    shutil.which("git") or sys.exit("git is needed: rows record the commit of their recipe")
    sys.exit(main())

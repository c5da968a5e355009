"""Imports point downward: every detkd module imports only from its own layer or below.

The layer order is docs/DESIGN.md's ("Layout"), lowest first:

0. base: ``detkd/__init__.py``, ``errors``, ``options``, ``fileio``, ``_env`` (import nothing above them)
1. ``data``, ``ops``
2. ``config``: it reads datasets (``detkd.data``) and writes JSON (``detkd.fileio``) and imports nothing
   else from detkd, while the engine, distillation, pruning and the tools all read configs; so it sits
   just above data, which also keeps models, losses and the engine out of it.
3. ``binary``: layers, policy, packing, the native kernels and the latent-clip hook
4. ``models``
5. ``losses``
6. ``export``
7. ``engine``
8. ``distill``, ``prune``
9. ``commands`` (the tools' code) and ``cli`` (the ``detkd`` command)

(the ``tools/`` scripts and benchmarks sit above all of these and are not checked here.)

Every ``import detkd...`` and ``from detkd... import`` counts, wherever it is: module level, inside a
function, or under ``if TYPE_CHECKING:`` (a type hint is a dependency too; a Protocol in the lower
layer serves). Relative imports are resolved against the importing module's package. A new top-level
module or folder under detkd/ fails :func:`test_every_module_has_a_layer` until it is placed in
:data:`LAYERS`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "detkd"

BASE, DATA, CONFIG, BINARY, MODELS, LOSSES, EXPORT, ENGINE, APPS, COMMANDS = range(10)
LAYER_NAMES = ("base", "data/ops", "config", "binary", "models", "losses", "export", "engine", "distill/prune", "commands")

# "detkd" itself and "detkd.<first component>" -> layer rank (higher may import lower, never the reverse).
LAYERS: dict[str, int] = {
    "detkd": BASE,
    "detkd.errors": BASE,
    "detkd.options": BASE,
    "detkd.fileio": BASE,
    "detkd._env": BASE,
    "detkd._lazy": BASE,
    "detkd.data": DATA,
    "detkd.ops": DATA,
    "detkd.config": CONFIG,
    "detkd.binary": BINARY,
    "detkd.models": MODELS,
    "detkd.losses": LOSSES,
    "detkd.export": EXPORT,
    "detkd.engine": ENGINE,
    "detkd.distill": APPS,
    "detkd.prune": APPS,
    "detkd.commands": COMMANDS,
    "detkd.cli": COMMANDS,
}

# Known upward imports, (importing module, imported module) -> why it is still here. Mend one and
# remove its entry: test_allow_list_entries_still_exist fails on entries that no longer occur.
ALLOWED: dict[tuple[str, str], str] = {}  # none left: every detkd import points downward


@dataclass(frozen=True)
class Import:
    source: str  # importing module, e.g. "detkd.models.yolo"
    path: str  # its file, for messages
    line: int
    target: str  # imported detkd module, e.g. "detkd.losses.yolo"


def layer_of(module: str) -> int | None:
    """The layer rank of a detkd module, or None when its top-level name is not in :data:`LAYERS`."""
    parts = module.split(".")
    if parts[0] != "detkd":
        return None
    if len(parts) == 1:
        return LAYERS["detkd"]
    return LAYERS.get(f"detkd.{parts[1]}")


def module_name(path: Path, package_dir: Path = PACKAGE_DIR) -> str:
    rel = path.relative_to(package_dir.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_sources(package_dir: Path = PACKAGE_DIR) -> dict[str, tuple[str, str, bool]]:
    """``module -> (path, source, is_package)`` for every .py file under ``package_dir``."""
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        rel = str(path.relative_to(package_dir.parent))
        out[module_name(path, package_dir)] = (rel, path.read_text(encoding="utf-8"), path.name == "__init__.py")
    return out


def imports_of(source_module: str, path: str, source: str, is_package: bool,
               known_modules: Iterable[str] = ()) -> list[Import]:
    """Every detkd import in ``source`` (all of them: ``ast.walk`` reaches function bodies and
    ``if TYPE_CHECKING:`` blocks). ``from pkg import name`` targets ``pkg.name`` when that is a known
    module (``from detkd import config``), else ``pkg``."""
    known = set(known_modules)
    package = source_module if is_package else source_module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level > 1:
                    base = base[: -(node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in known else stem for a in node.names]
        else:
            continue
        for target in dict.fromkeys(targets):
            if target == "detkd" or target.startswith("detkd."):
                found.append(Import(source_module, path, node.lineno, target))
    return found


def all_imports(sources: Mapping[str, tuple[str, str, bool]]) -> list[Import]:
    return [imp for mod, (path, text, is_pkg) in sources.items() for imp in imports_of(mod, path, text, is_pkg, sources)]


def upward(imports: Iterable[Import]) -> list[Import]:
    """Imports whose target sits in a higher layer than their source (unknown layers count as upward)."""
    bad = []
    for imp in imports:
        src, dst = layer_of(imp.source), layer_of(imp.target)
        if src is None or dst is None or dst > src:
            bad.append(imp)
    return bad


def describe(imp: Import) -> str:
    src, dst = layer_of(imp.source), layer_of(imp.target)
    name = lambda r: "?" if r is None else LAYER_NAMES[r]  # noqa: E731
    return f"{imp.path}:{imp.line} -> {imp.target} ({name(src)} imports {name(dst)})"


@pytest.fixture(scope="module")
def sources() -> dict[str, tuple[str, str, bool]]:
    return package_sources()


def test_every_module_has_a_layer(sources: dict[str, tuple[str, str, bool]]) -> None:
    unplaced = sorted(f"{path} ({mod})" for mod, (path, _, _) in sources.items() if layer_of(mod) is None)
    assert not unplaced, (
        "modules in no layer; place their top-level name in LAYERS (tests/test_layers.py) and "
        "docs/DESIGN.md's layer order:\n  " + "\n  ".join(unplaced)
    )
    unknown_targets = sorted(describe(i) for i in all_imports(sources) if layer_of(i.target) is None)
    assert not unknown_targets, "imports of detkd modules in no layer:\n  " + "\n  ".join(unknown_targets)


def test_imports_point_downward(sources: dict[str, tuple[str, str, bool]]) -> None:
    bad = [i for i in upward(all_imports(sources)) if (i.source, i.target) not in ALLOWED]
    assert not bad, (
        "upward imports (a module imports only from its own layer or below; see docs/DESIGN.md):\n  "
        + "\n  ".join(describe(i) for i in bad)
    )


def test_allow_list_entries_still_exist(sources: dict[str, tuple[str, str, bool]]) -> None:
    still = {(i.source, i.target) for i in upward(all_imports(sources))}
    mended = sorted(f"{src} -> {dst}" for src, dst in ALLOWED if (src, dst) not in still)
    assert not mended, "mended breaks still in ALLOWED (remove them):\n  " + "\n  ".join(mended)


def test_checker_finds_every_kind_of_upward_import() -> None:
    """The checker itself: module-level, function-level, TYPE_CHECKING and relative imports are all
    seen; downward and same-layer imports are not flagged."""
    known = {"detkd.config", "detkd.losses.yolo", "detkd.engine.checkpoint", "detkd.prune.pruner", "detkd.ops.boxes"}
    source = """
from __future__ import annotations
from typing import TYPE_CHECKING
import torch
from detkd.losses.yolo import yolo_loss
from detkd.ops.boxes import box_iou
from detkd.options import DecodeConfig
from . import box_coder
if TYPE_CHECKING:
    from detkd.engine.checkpoint import load_detector
def f():
    from ..prune.pruner import reshape_like
    import detkd.export.onnx
    from detkd import config
"""
    found = imports_of("detkd.models.yolo", "detkd/models/yolo.py", source, False, known)
    assert {(i.line, i.target) for i in found} == {
        (5, "detkd.losses.yolo"), (6, "detkd.ops.boxes"), (7, "detkd.options"), (8, "detkd.models"),
        (10, "detkd.engine.checkpoint"), (12, "detkd.prune.pruner"), (13, "detkd.export.onnx"), (14, "detkd.config"),
    }
    assert {(i.line, i.target) for i in upward(found)} == {
        (5, "detkd.losses.yolo"), (10, "detkd.engine.checkpoint"), (12, "detkd.prune.pruner"), (13, "detkd.export.onnx"),
    }
    # relative import from a package's __init__ resolves against the package itself
    (init_import,) = imports_of("detkd.data", "detkd/data/__init__.py", "from .records import x\n", True)
    assert init_import.target == "detkd.data.records"
    # the base layer may not reach data; data may not reach config; unknown folders are flagged
    assert upward(imports_of("detkd.errors", "e.py", "from detkd.data import records\n", False))
    assert upward(imports_of("detkd.data.check", "c.py", "from detkd import config\n", False, known))
    assert upward(imports_of("detkd.newthing.x", "n.py", "import detkd.errors\n", False))

"""Native CPU kernels, compiled once per environment with PyTorch's C++ extension tools.

``make`` builds them right after installing detkd (``python -m detkd.binary.kernels``), so a missing compiler
shows up at install time with a clear message, not in the middle of a run. They are compiled for the
machine they are built on (``-march=native``: AVX-512 VPOPCNTQ where the CPU has it) into
``<sys.prefix>/share/detkd/binary/kernels/``, i.e. inside the virtual environment; rebuilding happens
automatically when the source changes.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["KernelBuildError", "build_dir", "xnor_kernel"]

SOURCE = Path(__file__).with_name("xnor_conv.cpp")


class KernelBuildError(RuntimeError):
    """The C++ kernel could not be compiled or loaded."""


def build_dir() -> Path:
    import torch

    return Path(sys.prefix) / "share" / "detkd" / "kernels" / f"torch-{torch.__version__.split('+')[0]}"


@functools.cache
def xnor_kernel(verbose: bool = False) -> ModuleType:
    """The compiled XNOR/popcount kernel module (``pack_input``, ``pack_weight``, ``xnor_conv2d``).

    Raises:
        KernelBuildError: no C++ compiler / ninja, or the build failed (the compiler's message is included).
    """
    import os
    import shutil

    from torch.utils.cpp_extension import load

    path = build_dir()
    path.mkdir(parents=True, exist_ok=True)
    venv_bin = str(Path(sys.executable).parent)  # the ninja wheel installs its binary next to python
    if venv_bin not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "")
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        raise KernelBuildError("the XNOR kernel needs a C++ compiler (set CXX or install g++ / clang++)")
    try:
        return load(name="detkd_xnor", sources=[str(SOURCE)], build_directory=str(path), verbose=verbose,
                    extra_cflags=["-O3", "-march=native", "-fopenmp"], extra_ldflags=["-fopenmp"])
    except Exception as exc:  # torch raises RuntimeError / subprocess errors with the compiler output
        raise KernelBuildError(f"building {SOURCE.name} in {path} failed: {exc}") from exc

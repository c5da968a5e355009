"""``python -m detkd.binary.kernels``: compile detkd's native kernels now (``make`` runs it after installing)."""

from __future__ import annotations

import sys

from detkd.binary.kernels import KernelBuildError, build_dir, xnor_kernel


def main() -> int:
    try:
        xnor_kernel()
    except KernelBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"detkd kernels ready in {build_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

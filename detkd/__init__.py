"""detkd: compress object detectors (distillation, pruning, binarization) for CPUs and edge devices."""

from detkd._env import configure_environment

configure_environment()  # before any submodule imports ultralytics or albumentations

__version__ = "0.1.0"
__all__ = ["__version__", "configure_environment"]

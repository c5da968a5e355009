# Recipe (benchmarks/distill_table.py): configs/recipes/fyolo_distill_320.py plus extra images without labels
# (the paper's setting): the folder `unlabeled/` under the dataset root, half as many unlabeled images as
# labeled ones in every epoch (so an epoch sees 1.5x the images of the labels-only row), trained on the
# teacher's outputs alone. Its checkpoint is the best val mAP50.
# Fixed before any test-split number: change it only as a new recipe file.
from mmengine.config import read_base

with read_base():
    from .fyolo_distill_320 import *  # noqa: F401,F403

unlabeled.update(folder="unlabeled", ratio=0.5)  # noqa: F405

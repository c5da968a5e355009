# F-YOLO student (width 0.5, 320 px) on BCCD distilled from the CPU-scale SSD teacher (configs/train/ssd_cpu_bccd.py),
# the strongest detkd baseline on BCCD; its candidates are projected onto the student's grid. BCCD has no
# images beyond its splits, so no unlabeled pool: val and test report runs and never serve as one.
from mmengine.config import read_base

with read_base():
    from .._base_.datasets.bccd import *  # noqa: F401,F403
    from .._base_.distill import *  # noqa: F401,F403
    from .._base_.schedules.adamw_cosine import *  # noqa: F401,F403

model = dict(name="fyolo", width=0.5, anchors="kmeans", num_anchors=5)
train.update(epochs=30, batch_size=16, val_interval=5)  # noqa: F405

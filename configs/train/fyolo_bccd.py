# F-YOLO student, CPU scale (width 0.5) on BCCD at 320 px, trained from scratch (the baseline benchmark's setting).
from mmengine.config import read_base

with read_base():
    from .._base_.datasets.bccd import *  # noqa: F401,F403
    from .._base_.schedules.adamw_cosine import *  # noqa: F401,F403

model = dict(name="fyolo", width=0.5, anchors="kmeans", num_anchors=5)
train.update(epochs=30, batch_size=16, val_interval=5)  # noqa: F405

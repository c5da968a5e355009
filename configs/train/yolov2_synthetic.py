# YOLOv2-style teacher (Darknet-19-like backbone + passthrough), CPU scale (width 0.5), on the built-in dataset.
from mmengine.config import read_base

with read_base():
    from .._base_.datasets.synthetic import *  # noqa: F401,F403
    from .._base_.schedules.adamw_cosine import *  # noqa: F401,F403

model = dict(name="yolov2", width=0.5, anchors="kmeans", num_anchors=5)

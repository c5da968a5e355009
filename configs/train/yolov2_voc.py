# YOLOv2-style teacher at paper scale (width 1.0, 416 px) on a VOC-layout dataset (--cfg-options data.root=...).
from mmengine.config import read_base

with read_base():
    from .._base_.datasets.voc import *  # noqa: F401,F403
    from .._base_.schedules.sgd_cosine import *  # noqa: F401,F403

model = dict(name="yolov2", width=1.0, anchors="kmeans", num_anchors=5)

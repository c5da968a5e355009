# F-YOLO student at paper scale (416 px, 1024->512 narrowed conv, stacking) on a VOC-layout dataset (--cfg-options data.root=...).
from mmengine.config import read_base

with read_base():
    from .._base_.datasets.voc import *  # noqa: F401,F403
    from .._base_.schedules.sgd_cosine import *  # noqa: F401,F403

model = dict(name="fyolo", width=1.0, anchors="kmeans", num_anchors=5)

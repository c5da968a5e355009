# Binarized F-YOLO student (XNOR-Net, 1x1 convs kept float) on the built-in dataset, trained on labels.
from mmengine.config import read_base

with read_base():
    from .._base_.datasets.synthetic import *  # noqa: F401,F403
    from .._base_.schedules.adamw_cosine import *  # noqa: F401,F403

model = dict(name="fyolo", width=0.5, anchors="kmeans", num_anchors=5, binary=dict(mode="xnor", keep_1x1=True))

# Binarized F-YOLO student (XNOR-Net, 1x1 convs kept float) distilled from the float CPU-scale SSD teacher
# on BCCD (the natural pairing: the float teacher's soft targets guide the 1-bit student).
from mmengine.config import read_base

with read_base():
    from .._base_.datasets.bccd import *  # noqa: F401,F403
    from .._base_.distill import *  # noqa: F401,F403
    from .._base_.schedules.adamw_cosine import *  # noqa: F401,F403

model = dict(name="fyolo", width=0.5, anchors="kmeans", num_anchors=5, binary=dict(mode="xnor", keep_1x1=True))
train.update(epochs=30, batch_size=16, val_interval=5)  # noqa: F405

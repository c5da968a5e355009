# F-YOLO student (width 1, 416 px) distilled from a YOLOv2 teacher on Pascal VOC (the paper's setting).
# Teacher: tools/train.py configs/train/yolov2_voc.py. Unlabeled extra images (the paper used COCO
# images): --cfg-options unlabeled.folder=/data/coco/train2017 unlabeled.ratio=1
from mmengine.config import read_base

with read_base():
    from .._base_.datasets.voc import *  # noqa: F401,F403
    from .._base_.distill import *  # noqa: F401,F403
    from .._base_.schedules.sgd_cosine import *  # noqa: F401,F403

model = dict(name="fyolo", width=1.0, anchors="kmeans", num_anchors=5)
train.update(epochs=120, batch_size=32, val_interval=5, ema=True)  # noqa: F405

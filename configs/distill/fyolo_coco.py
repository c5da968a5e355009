# F-YOLO student distilled on COCO (80 classes). Teacher: a detkd YOLOv2 trained on COCO, or an
# ultralytics COCO model (--teacher-ckpt yolov8s.pt --trust-teacher; same class names and order).
from mmengine.config import read_base

with read_base():
    from .._base_.datasets.coco import *  # noqa: F401,F403
    from .._base_.distill import *  # noqa: F401,F403
    from .._base_.schedules.sgd_cosine import *  # noqa: F401,F403

model = dict(name="fyolo", width=1.0, anchors="kmeans", num_anchors=5)
train.update(epochs=100, batch_size=32, val_interval=5, ema=True)  # noqa: F405

# tiny_yolov2 on any dataset: python tools/train.py configs/train/tiny_yolov2.py --data PATH (model + schedule; the data comes from --data).
from mmengine.config import read_base

with read_base():
    from .._base_.schedules.adamw_cosine import *  # noqa: F401,F403

imgsz = 320
model = dict(name="tiny_yolov2", width=0.5, anchors="kmeans", num_anchors=5)
train.update(epochs=30, batch_size=16, val_interval=5)  # noqa: F405

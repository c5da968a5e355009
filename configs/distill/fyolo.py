# Distil an F-YOLO student on any dataset (model + schedule + terms; the data comes from --data):
#   python tools/train_distill.py configs/distill/fyolo.py --data PATH --teacher-ckpt best.pth
from mmengine.config import read_base

with read_base():
    from .._base_.distill import *  # noqa: F401,F403
    from .._base_.schedules.adamw_cosine import *  # noqa: F401,F403

imgsz = 320
model = dict(name="fyolo", width=0.5, anchors="kmeans", num_anchors=5)
train.update(epochs=30, batch_size=16, val_interval=5)  # noqa: F405

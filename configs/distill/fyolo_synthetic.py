# Distil a YOLOv2-style teacher into the F-YOLO student on the built-in dataset, with its unlabeled
# images (half as many per epoch as labeled ones). Teacher: tools/train.py configs/train/yolov2_synthetic.py,
# then --teacher-ckpt work_dirs/yolov2_synthetic/best_coco_AP50_epoch_<N>.pth
from mmengine.config import read_base

with read_base():
    from .._base_.datasets.synthetic import *  # noqa: F401,F403
    from .._base_.distill import *  # noqa: F401,F403
    from .._base_.schedules.adamw_cosine import *  # noqa: F401,F403

model = dict(name="fyolo", width=0.5, anchors="kmeans", num_anchors=5)
unlabeled.update(folder="unlabeled", ratio=0.5)  # noqa: F405

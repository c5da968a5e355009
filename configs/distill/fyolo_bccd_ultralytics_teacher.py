# F-YOLO student on BCCD distilled from an ultralytics YOLO teacher (anchor-free: its best class score
# is the objectness). Train one with ultralytics (`yolo train model=yolov8s.yaml data=... imgsz=320`),
# then: --teacher-ckpt runs/detect/train/weights/best.pt --trust-teacher (a .pt is a pickle).
from mmengine.config import read_base

with read_base():
    from .fyolo_bccd import *  # noqa: F401,F403

teacher.update(checkpoint=None, trust=False)  # noqa: F405

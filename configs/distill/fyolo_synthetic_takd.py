# Teacher-assistant chain (TAKD): teacher -> Tiny-YOLOv2 at width 0.75 (assistant) -> F-YOLO at width 0.5.
# Each stage is a full distillation; the assistant's best checkpoint becomes the student's teacher.
from mmengine.config import read_base

with read_base():
    from .fyolo_synthetic import *  # noqa: F401,F403

chain = [dict(name="tiny075", model=dict(name="tiny_yolov2", width=0.75, anchors="kmeans", num_anchors=5))]

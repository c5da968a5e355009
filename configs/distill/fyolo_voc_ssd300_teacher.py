# F-YOLO student distilled from a torchvision-style SSD300-VGG16 teacher on VOC (another head: the
# SSD's default-box candidates are projected onto the student's grid). The SSD runs at 300 px, the
# student at 416: teacher.imgsz says so, and the student's batch is resized for the teacher.
# Teacher: tools/train.py configs/train/ssd300_vgg16_voc.py
from mmengine.config import read_base

with read_base():
    from .fyolo_voc import *  # noqa: F401,F403

teacher.update(imgsz=300)  # noqa: F405

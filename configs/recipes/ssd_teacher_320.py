# Recipe (benchmarks/distill_table.py): the SSD teacher of the held-out distillation tables.
# CPU-scale SSD (VGG-16 width 0.375) at 320 px, 20 epochs from scratch, AdamW + cosine, validated every 5 epochs;
# its checkpoint is the best val mAP50. Width 0.375 makes it ~7.7x slower than the F-YOLO width-0.5 student
# (paired ONNX Runtime timing, 2 threads). The data come from --data (a VOC root, COCO, YOLO or labelImg folder).
# Fixed before any test-split number of the rows it teaches: change it only as a new recipe file.
from mmengine.config import read_base

with read_base():
    from .._base_.schedules.adamw_cosine import *  # noqa: F401,F403

model = dict(name="ssd_cpu", width=0.375)
imgsz = 320
train.update(epochs=20, batch_size=16, val_interval=5)  # noqa: F405

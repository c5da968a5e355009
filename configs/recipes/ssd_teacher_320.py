# Recipe (benchmarks/distill_table.py): the SSD teacher of the held-out distillation tables.
# CPU-scale SSD (VGG-16 width 0.3125) at 320 px, 20 epochs from scratch, AdamW + cosine, validated every 5 epochs;
# its checkpoint is the best val mAP50. Width 0.3125 makes it ~6.5x slower than the F-YOLO width-0.5 conv-stem
# student (~5.3x than the published pool stem; paired ONNX Runtime timing, 2 threads); width 0.375 (7.7x) takes
# ~2.5 h to train on the 2-core CPU, more than a session leaves after its other work.
# The data come from --data (a VOC root, COCO, YOLO or labelImg folder).
# Fixed before any test-split number of the rows it teaches: change it only as a new recipe file.
from mmengine.config import read_base

with read_base():
    from .._base_.schedules.adamw_cosine import *  # noqa: F401,F403

model = dict(name="ssd_cpu", width=0.3125)
imgsz = 320
train.update(epochs=20, batch_size=16, val_interval=5)  # noqa: F405

# Recipe (benchmarks/distill_table.py): the F-YOLO student trained on labels only, the reference of every
# distilled row. Width 0.5 with the strided-conv stem (no first max-pool; BCCD's fastest student), 320 px,
# 5 k-means anchors, 20 epochs from scratch, AdamW + cosine, validated every 5 epochs; its checkpoint is the best
# val mAP50. The data come from --data.
# Fixed before any test-split number: change it only as a new recipe file.
from mmengine.config import read_base

with read_base():
    from .._base_.schedules.adamw_cosine import *  # noqa: F401,F403

model = dict(name="fyolo", width=0.5, anchors="kmeans", num_anchors=5, stem="conv")
imgsz = 320
train.update(epochs=20, batch_size=16, val_interval=5)  # noqa: F405

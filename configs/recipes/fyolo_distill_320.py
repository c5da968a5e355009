# Recipe (benchmarks/distill_table.py): the F-YOLO student of configs/recipes/fyolo_student_320.py (same network,
# schedule, epochs and images per epoch) distilled from a teacher given by --teacher-ckpt: objectness-scaled
# teacher terms with FM-NMS (Mehta & Ozturk 2018, lambda_d 1), the teacher's candidates computed once (cache) with
# its top 1000 kept (the setting BCCD's val runs favoured). Its checkpoint is the best val mAP50.
# Fixed before any test-split number: change it only as a new recipe file.
from mmengine.config import read_base

with read_base():
    from .._base_.distill import *  # noqa: F401,F403
    from .._base_.schedules.adamw_cosine import *  # noqa: F401,F403

model = dict(name="fyolo", width=0.5, anchors="kmeans", num_anchors=5, stem="conv")
imgsz = 320
train.update(epochs=20, batch_size=16, val_interval=5)  # noqa: F405
teacher.update(cache=True, cache_top_n=1000)  # noqa: F405

# CPU-scale SSD (width 0.25, 300 px) on a VOC-layout dataset (--cfg-options data.root=...).
from mmengine.config import read_base

with read_base():
    from .._base_.datasets.voc import *  # noqa: F401,F403
    from .._base_.schedules.sgd_cosine import *  # noqa: F401,F403

model = dict(name="ssd_cpu", width=0.25)
imgsz = 300

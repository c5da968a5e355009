# The CPU SSD on any dataset: python tools/train.py configs/train/ssd_cpu.py --data PATH (model + schedule; data from --data).
from mmengine.config import read_base

with read_base():
    from .._base_.schedules.adamw_cosine import *  # noqa: F401,F403

imgsz = 320
model = dict(name="ssd_cpu", width=0.25)
train.update(epochs=30, batch_size=16, val_interval=5)  # noqa: F405

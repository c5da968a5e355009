# Prune a trained CPU SSD on any dataset (the data comes from --data):
#   python tools/prune.py configs/prune/ssd_cpu.py --data PATH --checkpoint best.pth
from mmengine.config import read_base

with read_base():
    from .._base_.prune import *  # noqa: F401,F403
    from .._base_.schedules.adamw_cosine import *  # noqa: F401,F403

imgsz = 320
model = dict(name="ssd_cpu", width=0.25)
train.update(epochs=30, batch_size=16, val_interval=5)  # noqa: F405
optim_wrapper.optimizer.update(lr=5e-4)  # noqa: F405  (fine-tuning a trained model: a quarter of training's rate)

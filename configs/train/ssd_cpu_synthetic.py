# CPU-scale SSD (VGG-16 at width 0.25 with L2Norm and extra layers) on the built-in dataset.
from mmengine.config import read_base

with read_base():
    from .._base_.datasets.synthetic import *  # noqa: F401,F403
    from .._base_.schedules.adamw_cosine import *  # noqa: F401,F403

model = dict(name="ssd_cpu", width=0.25)

# Prune the CPU-scale SSD trained on the built-in dataset (configs/train/ssd_cpu_synthetic.py); small budgets.
from mmengine.config import read_base

with read_base():
    from .._base_.datasets.synthetic import *  # noqa: F401,F403
    from .._base_.schedules.adamw_cosine import *  # noqa: F401,F403
    from .._base_.prune import *  # noqa: F401,F403

model = dict(name="ssd_cpu", width=0.25)
optim_wrapper.optimizer.update(lr=5e-4)  # noqa: F405
prune.update(sparsity=dict(epochs=3, weight=1e-4), retrain_epochs=3)  # noqa: F405

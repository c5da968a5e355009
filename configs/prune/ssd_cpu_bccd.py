# Singh et al.'s multi-layer pruning of the CPU-scale SSD trained on BCCD (configs/train/ssd_cpu_bccd.py):
#   python tools/prune.py configs/prune/ssd_cpu_bccd.py --checkpoint work_dirs/ssd_cpu_bccd/best_coco_AP50_epoch_30.pth
# Other criteria: --method l1 --ratio 0.6, --method taylor --ratio 0.6.
from mmengine.config import read_base

with read_base():
    from .._base_.datasets.bccd import *  # noqa: F401,F403
    from .._base_.schedules.adamw_cosine import *  # noqa: F401,F403
    from .._base_.prune import *  # noqa: F401,F403

model = dict(name="ssd_cpu", width=0.25)
train.update(epochs=30, batch_size=16, val_interval=5)  # noqa: F405
optim_wrapper.optimizer.update(lr=5e-4)  # noqa: F405  (fine-tuning a trained model: a quarter of training's rate)
# Sparsity: BN-folded L1 strong enough to empty whole filters in 10 epochs (1e-4 left every filter in use).
prune.update(sparsity=dict(epochs=10, weight=5e-4, lr=1e-3), retrain_epochs=10)  # noqa: F405

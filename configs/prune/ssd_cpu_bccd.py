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
# Sparsity: BN-folded L1 (weight 1e-4 left every filter in use after 10 epochs). After 10 epochs at 5e-4 the
# zeros are spread thinly over the filters, so filters count as empty at 70 % zeros (not 90 %), and the sweep
# is finer where the validation mAP starts to fall (quantiles 0.5-0.7 of the folded |w|).
prune.update(  # noqa: F405
    sparsity=dict(epochs=10, weight=5e-4, lr=1e-3),
    sweep=dict(quantiles=[0.3, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9], max_drop=0.01),
    select=dict(out_fraction=0.7, in_fraction=0.7, combine="or"),
    retrain_epochs=10,
)

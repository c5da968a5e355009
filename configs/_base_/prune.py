# Pruning settings every configs/prune/*.py starts from (tools/prune.py; detkd/options.py checks them).
from mmengine.optim import CosineAnnealingLR, LinearLR

# Fine-tuning a trained model: a short warm-up (the training default's 100 iterations would be most
# of a 10-epoch run on a small dataset), then cosine to the end of each training stage.
param_scheduler = [
    dict(type=LinearLR, start_factor=0.1, by_epoch=False, begin=0, end=10),
    dict(type=CosineAnnealingLR, by_epoch=True, begin=0, eta_min=1e-5),
]
prune = dict(
    method="singh",          # singh (Singh et al. 2019: L1 sparsity -> threshold sweep -> selection) | l1 | taylor
    layers="all",            # a layer set of the detector (ssd_cpu / ssd300_vgg16: vgg, stage5, extra, all) or conv names
    ratio=0.5,               # l1 / taylor: fraction of each conv's filters removed (singh: decided by the sparsity)
    scope="layer",           # l1 / taylor: rank filters per conv ("layer") or all together ("global")
    min_keep=8,              # filters every conv keeps at least
    iterations=1,            # l1 / taylor: >1 = iterative (prune a step, fine-tune, repeat)
    finetune_epochs=1,       # epochs between iterative steps
    taylor_batches=8,        # training batches the Taylor statistics average over
    retrain_epochs=10,       # final retraining with the original loss
    retrain_lr=None,         # None: the config's learning rate
    eval_split="val",        # split of the threshold sweep and the report
    threads=2,               # threads for the report's latency measurements
    # singh stage 1: loss + weight * growth**epoch * penalty over the layer set (BN-folded magnitudes); kind: l1 (sum|w|,
    # the paper's) | group (each filter's L2 norm) | bn_scale (sum|gamma|); proximal: a proximal step of lr * weight
    # after every optimizer step instead of a loss term (exact zeros)
    sparsity=dict(epochs=10, weight=1e-4, lr=None, fold_bn=True, kind="l1", growth=1.0, proximal=False),
    sweep=dict(thresholds=[], quantiles=[0.3, 0.5, 0.7, 0.8, 0.9, 0.95], max_drop=0.01),  # thresholds: absolute; else quantiles of |w|
    select=dict(out_fraction=0.9, in_fraction=0.9, combine="or"),  # zero fractions that mark a filter (of l / of l+1's inputs)
)

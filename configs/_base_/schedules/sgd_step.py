# SGD with warm-up then step decay (x0.1 at 2/3 and 8/9 of training, the classic detection schedule).
# Replaces default_runtime's cosine; set the milestones when you change train.epochs.
from mmengine.config import read_base
from mmengine.optim import LinearLR, MultiStepLR
from torch.optim import SGD

with read_base():
    from ..default_runtime import *  # noqa: F401,F403

optim_wrapper = dict(
    optimizer=dict(type=SGD, lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=True),
    clip_grad=dict(max_norm=10.0),
)
param_scheduler = [
    dict(type=LinearLR, start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type=MultiStepLR, by_epoch=True, begin=0, milestones=[20, 27], gamma=0.1),
]

# SGD (Nesterov) for long runs from a good start; warm-up + cosine come from default_runtime.
from mmengine.config import read_base
from torch.optim import SGD

with read_base():
    from ..default_runtime import *  # noqa: F401,F403

optim_wrapper = dict(
    optimizer=dict(type=SGD, lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=True),
    clip_grad=dict(max_norm=10.0),
)

# AdamW (often better than SGD for short CPU runs from scratch); warm-up + cosine come from default_runtime.
from mmengine.config import read_base
from torch.optim import AdamW

with read_base():
    from ..default_runtime import *  # noqa: F401,F403

optim_wrapper = dict(optimizer=dict(type=AdamW, lr=2e-3, weight_decay=5e-4), clip_grad=dict(max_norm=10.0))

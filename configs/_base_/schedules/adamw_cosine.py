# AdamW with linear warm-up then cosine decay (often better than SGD for short CPU runs).
from mmengine.optim import CosineAnnealingLR, LinearLR
from torch.optim import AdamW

optim_wrapper = dict(optimizer=dict(type=AdamW, lr=2e-3, weight_decay=5e-4), clip_grad=dict(max_norm=10.0))
param_scheduler = [
    dict(type=LinearLR, start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type=CosineAnnealingLR, by_epoch=True, begin=0, eta_min=1e-5),
]
train = dict(epochs=30, batch_size=16, num_workers=2, seed=0, val_interval=1, ema=False, amp=True, augment=dict())
decode = dict(score_thr=0.001, nms_iou=0.5, max_det=100)
checkpoint = dict(interval=1, max_keep=2, save_best="coco/AP50")

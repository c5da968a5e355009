# Settings every training config shares: warm-up + cosine schedule (its end is filled in from
# train.epochs at build time, so overriding the epochs keeps the schedule whole), loop, decode,
# checkpoints. Optimizers live in schedules/.
from mmengine.optim import CosineAnnealingLR, LinearLR

param_scheduler = [
    dict(type=LinearLR, start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type=CosineAnnealingLR, by_epoch=True, begin=0, eta_min=1e-5),
]
# amp: float16 mixed precision on a GPU; cpu_amp: bfloat16 autocast on a CPU with native bf16 (AVX512-BF16, AMX)
train = dict(epochs=30, batch_size=16, num_workers=2, seed=0, val_interval=1, ema=False, amp=True, cpu_amp=False,
             augment=dict())
decode = dict(score_thr=0.001, nms_iou=0.5, max_det=100)
checkpoint = dict(interval=1, max_keep=2, save_best="coco/AP50")

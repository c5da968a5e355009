# Paper scale: torchvision's SSD300-VGG16 on Pascal VOC (Singh et al.'s setting). --checkpoint takes a detkd
# checkpoint or a torchvision SSD300 state dict (ssd300_vgg16_coco-b556d3b4.pth: its COCO head is replaced for
# your classes, so retraining matters). Retraining at this scale needs a GPU; the surgery and speedup do not.
from mmengine.config import read_base

with read_base():
    from .._base_.datasets.voc import *  # noqa: F401,F403
    from .._base_.schedules.sgd_cosine import *  # noqa: F401,F403
    from .._base_.prune import *  # noqa: F401,F403

model = dict(name="ssd300_vgg16")
imgsz = 300
optim_wrapper.optimizer.update(lr=1e-4)  # noqa: F405
prune.update(layers="all", sparsity=dict(epochs=20, weight=1e-5), retrain_epochs=20)  # noqa: F405

# torchvision SSD300-VGG16; start from a downloaded torchvision checkpoint with model.weights_path=/path/ssd300_vgg16_coco-b556d3b4.pth (the COCO head is replaced for your classes).
from mmengine.config import read_base

with read_base():
    from .._base_.datasets.voc import *  # noqa: F401,F403
    from .._base_.schedules.sgd_cosine import *  # noqa: F401,F403

model = dict(name="ssd300_vgg16", weights_path=None)
imgsz = 300

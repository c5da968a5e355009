# torchvision SSDlite320-MobileNetV3-Large; model.weights_path=/path/to/torchvision checkpoint to start from it.
from mmengine.config import read_base

with read_base():
    from .._base_.datasets.voc import *  # noqa: F401,F403
    from .._base_.schedules.sgd_cosine import *  # noqa: F401,F403

model = dict(name="ssdlite320_mobilenet_v3_large", weights_path=None)
imgsz = 320

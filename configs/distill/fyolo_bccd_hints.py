# As fyolo_bccd.py plus FitNets hints: stage 1 (3 epochs) trains the student's stride-8 stage and a 1x1
# regressor to reproduce the SSD teacher's conv4_3 map (also stride 8); stage 2 distils as usual.
from mmengine.config import read_base

with read_base():
    from .fyolo_bccd import *  # noqa: F401,F403

hints = dict(taps=[dict(student="backbone.stages.3", teacher="backbone.features.conv4_3", weight=0.0, kernel=1)], epochs=3)

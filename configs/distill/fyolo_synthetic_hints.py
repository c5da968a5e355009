# As fyolo_synthetic.py plus FitNets hints: stage 1 trains the student's backbone up to its stride-16
# stage (and a 1x1 regressor) to reproduce the teacher's stride-16 map, stage 2 distils as usual.
from mmengine.config import read_base

with read_base():
    from .fyolo_synthetic import *  # noqa: F401,F403

hints = dict(taps=[dict(student="backbone.stages.4", teacher="backbone.stages.4", weight=0.0, kernel=1)], epochs=3)

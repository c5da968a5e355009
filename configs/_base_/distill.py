# Distillation settings every configs/distill/*.py starts from (Mehta & Ozturk 2018 defaults).
# The teacher checkpoint: a detkd .pth (tools/train.py output), an ultralytics .pt (needs trust=True:
# it is a pickle) or .yaml; usually given on the command line with --teacher-ckpt. A model .yaml has
# random weights: refused unless allow_untrained=True (smoke tests only).
teacher = dict(checkpoint=None, trust=False, imgsz=None, class_map=None, allow_untrained=False, direct=True,
               cache=False, cache_top_n=100, cache_dir=None)  # cache: teacher candidates computed once (detkd/distill/cache.py)
distill = dict(
    lambda_d=1.0,                # weight of the teacher terms (paper: 1)
    scale_by_objectness=True,    # teacher class/box terms x teacher objectness (paper)
    objectness_kd=True,          # False: classic terms alone
    gt_weight=1.0,               # ground-truth YOLOv2 terms (0: teacher only)
    fm_nms=dict(enabled=True, kernel=3, mode="class"),  # mode: class | class_box | all
    hinton=dict(weight=0.0, tau=4.0),
    logit_l2=dict(weight=0.0),
    noisy=dict(sigma=0.0),
)
# Extra images without labels: an image folder (relative to data.root unless absolute) or a split
# whose labels are dropped; ratio = unlabeled images per labeled image in an epoch.
unlabeled = dict(folder=None, split=None, ratio=0.0)
# FitNets: taps=[dict(student=<module name>, teacher=<module name>, weight=<stage-2 weight>, kernel=1)],
# epochs = stage-1 (hint) epochs before the distillation; no taps = no hints.
hints = dict(taps=[], epochs=0)
# TAKD: assistants distilled in order before the student, e.g. [dict(name="mid", model=dict(name="fyolo", width=0.75))].
chain = []

# The built-in synthetic dataset; generated into data.root on first use (well under a minute).
# preset: "standard" (learnable in minutes: the demo's and the tests' look) or "hard" (small, crowded,
# heavily textured objects: see detkd/data/synthetic_presets.py).
data = dict(
    format="voc",
    root="data/synthetic",
    splits=dict(train="train", val="val", test="test"),
    classes=None,
    generate=dict(preset="standard", seed=0, size=320, train=600, val=150, test=150, unlabeled=300),
)
imgsz = 256

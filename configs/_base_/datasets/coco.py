# COCO 2017 (or any instances-JSON dataset). Override the root: --cfg-options data.root=/path/to/coco
data = dict(
    format="coco",
    root="data/coco",
    splits=dict(
        train=dict(ann="annotations/instances_train2017.json", img_dir="train2017"),
        val=dict(ann="annotations/instances_val2017.json", img_dir="val2017"),
        test=dict(ann="annotations/instances_val2017.json", img_dir="val2017"),
    ),
    classes=None,
)
imgsz = 416

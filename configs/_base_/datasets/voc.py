# Pascal VOC layout (VOC2007/2012, or any dataset in that layout). Override the root:
#   --cfg-options data.root=/path/to/VOCdevkit/VOC2007
data = dict(
    format="voc",
    root="data/VOCdevkit/VOC2007",
    splits=dict(train="trainval", val="test", test="test"),
    classes=[
        "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
        "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
    ],
)
imgsz = 416

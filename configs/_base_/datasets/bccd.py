# BCCD blood-cell dataset (VOC layout, 3 classes, official train/val/test splits, 640x480 images).
# Download it and point data.root at the folder holding Annotations/ JPEGImages/ ImageSets/.
data = dict(
    format="voc",
    root="data/BCCD",
    splits=dict(train="train", val="val", test="test"),
    classes=["Platelets", "RBC", "WBC"],
)
imgsz = 320

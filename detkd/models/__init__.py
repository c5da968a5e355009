"""Detectors: YOLOv2 family (teacher, Tiny-YOLOv2, F-YOLO student), SSD, ultralytics adapter."""

"""Reading, validating and preparing segmentation data (see :mod:`.datasets` for the layouts)."""

from .datasets import (
    VOC_CLASSES,
    DatasetIndex,
    Item,
    LoadedSplit,
    Sample,
    Task,
    crop_square,
    detect_layout,
    load_split,
    make_tasks,
    open_dataset,
    preprocess,
    preprocess_mask,
    read_pair,
    resize_image,
    resize_mask,
)
from .io import VOC_PALETTE, VOID, list_images, read_image, read_mask, write_label_png

__all__ = [
    "VOC_CLASSES", "VOC_PALETTE", "VOID", "DatasetIndex", "Item", "LoadedSplit", "Sample", "Task",
    "crop_square", "detect_layout", "list_images", "load_split", "make_tasks", "open_dataset",
    "preprocess", "preprocess_mask", "read_image", "read_mask", "read_pair", "resize_image",
    "resize_mask", "write_label_png",
]  # fmt: skip

"""Weak supervision: segmenters trained from cheap labels through pseudo-masks.

Boxes (read from a file or simulated from masks) become pseudo-masks by GrabCut inside each
box (:mod:`.boxes`); :func:`write_pseudo_dataset` writes them as a dataset root that
``train-segmenter`` trains on unchanged (:mod:`.pseudo`). Image tags (class activation maps)
and scribbles are not implemented yet.
"""

from .annotations import Box, boxes_from_mask, read_boxes
from .boxes import pseudo_mask_from_boxes
from .pseudo import pseudo_mask_quality, write_pseudo_dataset

__all__ = ["Box", "boxes_from_mask", "read_boxes", "pseudo_mask_from_boxes",
           "pseudo_mask_quality", "write_pseudo_dataset"]

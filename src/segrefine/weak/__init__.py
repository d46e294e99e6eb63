"""Weak supervision: segmenters trained from cheap labels through pseudo-masks.

Boxes become pseudo-masks by GrabCut inside each box (:mod:`.boxes`); image tags by class
activation maps grown to image edges (:mod:`.tags`); either read from a file or simulated from
masks (:mod:`.annotations`); scribbles by the clustering method's scribble path
(:mod:`.scribbles`); no labels at all by a diffusion model's attention. Simple-to-complex
rounds re-make any of them with segmenters trained out-of-fold (:mod:`.rounds`).
:func:`write_pseudo_dataset` writes them as a dataset root that ``train-segmenter`` trains on
unchanged (:mod:`.pseudo`).
"""

from .annotations import Box, boxes_from_mask, read_boxes
from .boxes import pseudo_mask_from_boxes
from .pseudo import pseudo_mask_quality, write_pseudo_dataset

__all__ = ["Box", "boxes_from_mask", "read_boxes", "pseudo_mask_from_boxes",
           "pseudo_mask_quality", "write_pseudo_dataset"]

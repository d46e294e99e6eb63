"""Training-free segmentation from a Stable Diffusion U-Net's attention (StableSeg).

``load_attention_model(folder)`` reads a local diffusers Stable Diffusion folder;
``model.segment(image, ["horse", "grass", "sky"])`` runs the U-Net once on the lightly noised
image latent under a prompt naming the classes, averages each class's cross-attention over
layers, sharpens the maps with the U-Net's own self-attention and labels each pixel.

The array steps live in :mod:`.maps` (no diffusers needed), the recording processor in
:mod:`.capture`, prompt and token matching in :mod:`.prompt`. transformers (the CLIP text
encoder) is needed only to load a model: ``pip install 'segrefine[attention]'``.
"""

from .diffseg import diffseg_segment, merge_attention
from .load import load_attention_model
from .maps import (
    aggregate_cross,
    average_self_attention,
    labels_and_probs,
    layer_grid,
    refine_with_self_attention,
)
from .model import AttentionModel, AttentionSegmentation, CapturedAttention
from .prompt import build_prompt, token_groups

__all__ = [
    "AttentionModel",
    "AttentionSegmentation",
    "CapturedAttention",
    "aggregate_cross",
    "average_self_attention",
    "build_prompt",
    "diffseg_segment",
    "labels_and_probs",
    "layer_grid",
    "load_attention_model",
    "merge_attention",
    "refine_with_self_attention",
    "token_groups",
]

"""Training-free segmentation from a Stable Diffusion U-Net's attention (StableSeg).

``load_attention_model(folder)`` reads a local diffusers Stable Diffusion folder;
``model.segment(image, ["horse", "grass", "sky"])`` runs the U-Net once on the lightly noised
image latent under a prompt naming the classes, averages each class's cross-attention over
layers, sharpens the maps with the U-Net's own self-attention and labels each pixel.
``fit_layer_weights`` (StableSeg++) fits one weight per cross-attention layer on pseudo-masks
for ``segment(..., layer_weights=...)`` to use instead of the plain mean (:mod:`.layers`).

The array steps live in :mod:`.maps` (no diffusers needed), the recording processor in
:mod:`.capture`, prompt and token matching in :mod:`.prompt`. transformers (the CLIP text
encoder) is needed only to load a model: ``pip install 'segrefine[attention]'``.
"""

from .diffseg import diffseg_segment, merge_attention
from .layers import (
    LayerMaps,
    LayerWeights,
    fit_layer_weights,
    layer_maps,
    load_layer_weights,
    save_layer_weights,
)
from .load import load_attention_model
from .maps import (
    aggregate_cross,
    average_self_attention,
    labels_and_probs,
    layer_grid,
    refine_with_self_attention,
)
from .model import AttentionModel, AttentionSegmentation, CapturedAttention, segment_captured
from .prompt import build_prompt, token_groups

__all__ = [
    "AttentionModel",
    "AttentionSegmentation",
    "CapturedAttention",
    "LayerMaps",
    "LayerWeights",
    "aggregate_cross",
    "average_self_attention",
    "build_prompt",
    "diffseg_segment",
    "fit_layer_weights",
    "labels_and_probs",
    "layer_grid",
    "layer_maps",
    "load_attention_model",
    "load_layer_weights",
    "merge_attention",
    "refine_with_self_attention",
    "save_layer_weights",
    "segment_captured",
    "token_groups",
]

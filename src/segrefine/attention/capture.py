"""Recording attention probabilities inside a diffusers U-Net.

A :class:`CaptureProcessor` is installed on every attention layer with the public
``unet.set_attn_processor`` hook (no patching of diffusers internals). It computes the same
output as diffusers' ``AttnProcessor2_0`` and, while its :class:`AttentionStore` is active,
also keeps the head-averaged attention probabilities:

* cross-attention (text tokens as keys): ``(B, HW, tokens)``, always (small: 77 columns);
* self-attention: ``(B, HW, HW)``, only where ``HW <= store.max_self_tokens``. A 64 x 64
  latent's self-attention is 4096^2 per head, too big to keep; those layers take the fused
  ``scaled_dot_product_attention`` path and never materialise their probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class AttentionStore:
    """Where the processors put what they record, in call order (the U-Net's layer order)."""

    max_self_tokens: int = 32 * 32
    active: bool = False
    cross: list[tuple[str, torch.Tensor]] = field(default_factory=list)
    self_attn: list[tuple[str, torch.Tensor]] = field(default_factory=list)

    def clear(self) -> None:
        self.cross.clear()
        self.self_attn.clear()


class CaptureProcessor:
    """An ``AttnProcessor``: the standard attention computation, plus recording.

    Probabilities are stored as float32 on the CPU (the maps are post-processed with NumPy,
    and keeping them off the GPU frees its memory for the next layers).
    """

    def __init__(self, store: AttentionStore, name: str):
        self.store = store
        self.name = name

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        is_cross = encoder_hidden_states is not None
        batch, key_len, _ = (encoder_hidden_states if is_cross else hidden_states).shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, key_len, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if not is_cross:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if getattr(attn, "norm_q", None) is not None:
            query = attn.norm_q(query)
        if getattr(attn, "norm_k", None) is not None:
            key = attn.norm_k(key)

        n_query = query.shape[2]
        record = self.store.active and (is_cross or n_query <= self.store.max_self_tokens)
        if record:
            # explicit softmax, in float32 so fp16 models give clean maps
            scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * attn.scale
            if attention_mask is not None:
                scores = scores + attention_mask.float()
            probs = scores.softmax(dim=-1)
            out = torch.matmul(probs.to(value.dtype), value)
            mean = probs.mean(dim=1).cpu()  # average over heads: (B, queries, keys)
            (self.store.cross if is_cross else self.store.self_attn).append((self.name, mean))
        else:
            out = F.scaled_dot_product_attention(
                query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False,
                scale=attn.scale,
            )  # fmt: skip

        hidden_states = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def install(unet, store: AttentionStore) -> None:
    """Give every attention layer of ``unet`` its own recording processor (named after it)."""
    names = list(unet.attn_processors)
    unet.set_attn_processor({name: CaptureProcessor(store, name.removesuffix(".processor"))
                             for name in names})  # fmt: skip

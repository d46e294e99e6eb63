"""StableSeg++: one weight per cross-attention layer, fitted on pseudo-masks.

StableSeg averages the class maps of every cross-attention layer, but layers differ in how
well they localise (coarse layers blur, some mostly follow the prompt), so StableSeg++ fits a
non-negative weight per layer that makes the weighted maps best predict StableSeg+'s own
pseudo-masks, and segments again with those weights (``segment(..., layer_weights=...)``).

The fit works on each image's per-layer class maps, made once: the self-attention refinement
is linear in the maps and the scaling of each class to a maximum of 1 cancels any positive
per-class factor, so refining the weighted sum of the layers equals weighting the refined
layers, up to the order of float additions. The weights are saved as ``layer_weights.json``:
``{"layers": [...], "weights": [...], "classes": [...], "fitted_on": N}``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data.io import VOID, write_json
from ..errors import InputError
from . import maps as M
from .model import BACKGROUND, CapturedAttention

FILE = "layer_weights.json"
KEYS = ("layers", "weights", "classes", "fitted_on")


@dataclass(frozen=True)
class LayerWeights:
    """One weight per cross-attention layer, by layer name (non-negative; normalised to sum
    1 where they are used, and a fit writes them so); ``classes`` the prompt's classes and
    ``fitted_on`` the number of images they were fitted on (both for the record: the
    weights apply to any classes)."""

    layers: tuple[str, ...]
    weights: tuple[float, ...]
    classes: tuple[str, ...] = ()
    fitted_on: int = 0

    def check_layers(self, names: Sequence[str], path: str | Path | None = None) -> None:
        """An :class:`InputError` unless ``names`` (a model's cross-attention layers, in any
        order) are exactly the layers these weights are for."""
        if sorted(names) != sorted(self.layers):
            known = set(names)
            unknown = [n for n in self.layers if n not in known]
            example = f" ('{unknown[0]}' is not one of them)" if unknown else ""
            raise InputError(f"the layer weights are for {len(self.layers)} cross-attention "
                             f"layers that are not this model's {len(names)}{example}; fit "
                             f"them on this model", path)  # fmt: skip

    def vector(self, names: Sequence[str]) -> np.ndarray:
        """The weights in the order of ``names`` (a pass's cross-attention layers)."""
        self.check_layers(names)
        by_name = dict(zip(self.layers, self.weights, strict=True))
        return np.array([by_name[n] for n in names], dtype=np.float32)


@dataclass
class LayerMaps:
    """One image's class maps per cross-attention layer, as the fit weights them: ``maps``
    (L, C, h * w) float32 on ``grid`` -- the finest cross-attention grid, or with the
    self-attention refinement its grid, each layer already refined."""

    names: list[str]
    maps: np.ndarray
    grid: tuple[int, int]
    latent_hw: tuple[int, int]


def layer_maps(cap: CapturedAttention, sar: bool = True) -> LayerMaps:
    """The per-layer class maps of one recorded pass, made as ``segment`` makes its maps
    (resized to the finest grid, then, with ``sar``, refined by the mean self-attention)."""
    grids = [M.layer_grid(a.shape[0], cap.latent_hw) for a in cap.cross]
    target = max(grids, key=lambda g: g[0] * g[1])
    per_layer = [M.resize_maps(M.layer_class_maps(a, cap.token_groups, g), target)
                 for a, g in zip(cap.cross, grids, strict=True)]  # fmt: skip
    averaged = M.average_self_attention(cap.self_attn, cap.latent_hw) if sar else None
    if averaged is None:  # as segment: without a small enough layer the maps stay as they are
        maps = np.stack(per_layer).reshape(len(per_layer), len(cap.token_groups), -1)
        return LayerMaps(list(cap.cross_names), maps, target, tuple(cap.latent_hw))
    affinity, grid = averaged
    n = grid[0] * grid[1]
    flat = np.stack([M.resize_maps(m, grid).reshape(len(m), n) for m in per_layer])
    refined = flat @ affinity.astype(np.float32).T  # each row: affinity @ a class's map
    return LayerMaps(list(cap.cross_names), refined.astype(np.float32), grid,
                     tuple(cap.latent_hw))  # fmt: skip


def _target(mask: np.ndarray, size: tuple[int, int], k: int, index: int) -> np.ndarray:
    """A pseudo-mask at the latent resolution (nearest), labels checked against ``k``."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise InputError(f"pseudo-mask {index}: expected a (H, W) uint8 label map, got "
                         f"{mask.shape} {mask.dtype}")  # fmt: skip
    bad = np.setdiff1d(np.unique(mask), [*range(k), VOID])
    if len(bad):
        raise InputError(f"pseudo-mask {index}: label {int(bad[0])} is not one of the {k} "
                         f"classes (0..{k - 1}) or {VOID} (void)")  # fmt: skip
    small = Image.fromarray(mask).resize((size[1], size[0]), Image.NEAREST)
    return np.asarray(small, dtype=np.int64)


def _log_probs(
    maps: torch.Tensor, w: torch.Tensor, grid: tuple[int, int], size: tuple[int, int],
    threshold: float, has_background: bool,
) -> torch.Tensor:
    """log of ``labels_and_probs``'s probabilities (B, K, *size) for the weighted maps
    (B, L, C, n): the same steps, in torch so the weights get gradients."""
    mixed = torch.einsum("l,blcn->bcn", w, maps)
    peak = mixed.amax(dim=2, keepdim=True)
    mixed = mixed / torch.where(peak > 0, peak, torch.ones_like(peak))
    b, c = mixed.shape[:2]
    scores = F.interpolate(mixed.view(b, c, *grid), size=size, mode="bilinear",
                           align_corners=False).clamp(0.0, 1.0)  # fmt: skip
    if not has_background:
        scores = torch.cat([torch.full((b, 1, *size), float(threshold)), scores], dim=1)
    probs = scores / scores.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return probs.clamp_min(1e-6).log()  # a class scored 0 where it is the label: large, finite


def fit_layer_weights(
    captures: Iterable[CapturedAttention | LayerMaps], masks: Iterable[np.ndarray],
    classes: Sequence[str], threshold: float = 0.3, sar: bool = True, steps: int = 300,
    lr: float = 0.05,
) -> LayerWeights:
    """The cross-attention layer weights whose maps best predict ``masks``.

    ``captures`` are the recorded passes (or their :func:`layer_maps`; each capture is
    reduced to them as it comes, so a generator keeps only one pass's attention in memory)
    of images segmented into ``classes``, and ``masks`` their pseudo-masks as ``segment``
    labels them (background first unless a class is called background; 255 = void). The
    weights are a softmax of one parameter per layer, started at the plain mean and moved by
    ``steps`` of Adam on the cross-entropy of the non-void pixels at the latent resolution
    (the probabilities are ``segment``'s, with ``threshold`` and ``sar`` as it uses them).
    Nothing is random: the same inputs give the same weights.
    """
    names = tuple(" ".join(str(c).split()) for c in classes)
    has_background = BACKGROUND in (n.lower() for n in names)
    k = len(names) + (0 if has_background else 1)
    groups: dict[tuple, list] = {}  # images of one shape are fitted as one batch
    layers, count = None, 0
    for i, (cap, mask) in enumerate(zip(captures, masks, strict=True)):
        lm = cap if isinstance(cap, LayerMaps) else layer_maps(cap, sar)
        if lm.maps.shape[1] != len(names):
            raise InputError(f"capture {i} has {lm.maps.shape[1]} classes, not the "
                             f"{len(names)} given")  # fmt: skip
        if layers is None:
            layers = tuple(lm.names)
        elif tuple(lm.names) != layers:
            raise InputError(f"capture {i} comes from other cross-attention layers than the "
                             f"first")  # fmt: skip
        target = _target(mask, lm.latent_hw, k, i)
        key = (lm.maps.shape, lm.grid, lm.latent_hw)
        groups.setdefault(key, []).append((lm.maps, target))
        count += 1
    if not count:
        raise InputError("no images to fit the layer weights on")
    batches = []
    for (_, grid, size), items in groups.items():
        maps = torch.from_numpy(np.stack([m for m, _ in items]))
        target = torch.from_numpy(np.stack([t for _, t in items]))
        batches.append((maps, target, grid, size))
    labelled = sum(int((t != VOID).sum()) for _, t, _, _ in batches)
    if not labelled:
        raise InputError("every pseudo-mask is void: nothing to fit the layer weights on")

    theta = torch.zeros(len(layers), requires_grad=True)  # softmax(0) = the plain mean
    optimiser = torch.optim.Adam([theta], lr=lr)
    with torch.enable_grad():  # callers may be under inference_mode
        for _ in range(steps):
            optimiser.zero_grad()
            w = theta.softmax(dim=0)
            loss = sum(F.nll_loss(_log_probs(maps, w, grid, size, threshold, has_background),
                                  target, ignore_index=VOID, reduction="sum")
                       for maps, target, grid, size in batches) / labelled  # fmt: skip
            loss.backward()
            optimiser.step()
    weights = theta.detach().softmax(dim=0).double().numpy()
    return LayerWeights(layers=layers, weights=tuple(float(x) for x in weights / weights.sum()),
                        classes=names, fitted_on=count)  # fmt: skip


# -- layer_weights.json ---------------------------------------------------------------------------


def save_layer_weights(path: str | Path, weights: LayerWeights) -> None:
    """Write ``weights`` as JSON (atomically)."""
    write_json(path, {"layers": list(weights.layers), "weights": list(weights.weights),
                      "classes": list(weights.classes),
                      "fitted_on": int(weights.fitted_on)})  # fmt: skip


def _strings(value, key: str, path: Path) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InputError(f"'{key}' must be a list of non-empty names", path)
    return tuple(value)


def load_layer_weights(path: str | Path, layer_names: Sequence[str] | None = None
                       ) -> LayerWeights:  # fmt: skip
    """Read a ``layer_weights.json``; every way it can be wrong (unreadable, malformed JSON,
    missing keys, weights negative, NaN, all zero or not one per layer, and with
    ``layer_names`` -- a model's ``cross_layer_names`` -- layers that are not the model's)
    is one :class:`InputError` line naming the file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError("no such layer weights file", path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"not a layer weights file ({type(err).__name__})", path) from err
    if not isinstance(data, dict) or any(k not in data for k in KEYS):
        raise InputError(f"not a layer weights file: expected a JSON object with "
                         f"{', '.join(KEYS)}", path)  # fmt: skip
    layers = _strings(data["layers"], "layers", path)
    if not layers or len(set(layers)) != len(layers):
        raise InputError("'layers' must name each layer once", path)
    weights = data["weights"]
    if not isinstance(weights, list) or not all(
            isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights):
        raise InputError("'weights' must be a list of numbers", path)
    if len(weights) != len(layers):
        raise InputError(f"{len(weights)} weights for {len(layers)} layers", path)
    if not all(math.isfinite(w) and w >= 0 for w in weights) or not sum(weights) > 0:
        raise InputError("weights must be finite, non-negative and not all zero", path)
    fitted_on = data["fitted_on"]
    if not isinstance(fitted_on, int) or isinstance(fitted_on, bool) or fitted_on < 0:
        raise InputError("'fitted_on' must be a number of images", path)
    # kept as written (aggregate_cross normalises them), so a saved fit loads bit for bit
    result = LayerWeights(layers=layers, weights=tuple(float(w) for w in weights),
                          classes=_strings(data["classes"], "classes", path),
                          fitted_on=fitted_on)  # fmt: skip
    if layer_names is not None:
        result.check_layers(layer_names, path)
    return result

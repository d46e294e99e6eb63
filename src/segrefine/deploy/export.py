"""A run's networks as ONNX graphs, and the sidecar that says how to use them.

The graphs are exactly what the sampler calls (:mod:`segrefine.deploy.runtime` runs them in
place of the PyTorch modules; docs/onnx.md shows the loop around them in NumPy):

- a segmenter: ``segmenter.onnx``, normalised image -> logits;
- a default-mode refiner: ``encoder.onnx`` (image, probabilities -> the per-image condition,
  once per image) and ``head.onnx`` (condition, noisy labels, timestep, log-prior, band ->
  clean-label logits, once per sample and step);
- a paper-mode refiner: ``denoiser.onnx``, the DDPM U-Net (noisy image + labels, t -> noise).

Batch and spatial size are dynamic (spatial sizes of the U-Nets a multiple of the network's
stride, as the pipeline pads them). The exporter is the one PyTorch recommends for this
version, ``torch.onnx.export(..., dynamo=True)`` (torch.export underneath).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from .. import __version__
from ..data.transforms import MEAN, STD
from ..errors import InputError

SIDECAR = "onnx.json"
FORMAT_VERSION = 1
OPSET = 18


class _Encoder(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, image, probs):
        return self.net.encode(image, probs)


class _Head(nn.Module):
    # the band is always given: all ones is the unrestricted head (anchor + correction)
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, features, x_t, t, log_prior, band):
        return self.net.head(features, x_t, t, (log_prior, band))


class _Denoiser(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, t):
        return self.net(x, t).sample


def _graphs(model) -> dict[str, tuple]:
    """name -> (module, example inputs, dynamic shapes, input names, output names).

    Examples have a batch of 2 (torch.export fixes a dimension of size 1 as a constant) and
    different heights and widths (equal ones could be taken for one symbol)."""
    Dim = torch.export.Dim
    s, net = model.stride, model.inference_module
    b, h, w = Dim("batch", min=1), Dim("height_blocks", min=1), Dim("width_blocks", min=1)
    image = torch.zeros(2, 3, 2 * s, 3 * s)
    if model.spec.kind == "segmenter":
        shapes = {"image": {0: b, 2: s * h, 3: s * w}}
        return {"segmenter": (net, (image,), shapes, ["image"], ["logits"])}
    c = model.num_classes
    probs = torch.full((2, c, 2 * s, 3 * s), 1.0 / c)
    t = torch.full((4,), 10, dtype=torch.long)
    if model.mode == "paper":
        x = torch.zeros(4, 3 + c, 2 * s, 3 * s)
        n = Dim("batch", min=1)
        shapes = {"x": {0: n, 2: s * h, 3: s * w}, "t": {0: n}}
        return {"denoiser": (_Denoiser(net), (x, t), shapes, ["x", "t"], ["noise"])}
    with torch.no_grad():
        features = net.encode(image, probs)
    hh, ww, n = Dim("height", min=1), Dim("width", min=1), Dim("samples_x_batch", min=1)
    spatial = {0: b, 2: hh, 3: ww}
    head_in = (features, torch.zeros(4, c, 2 * s, 3 * s), t, torch.log(probs),
               torch.ones(2, 1, 2 * s, 3 * s))  # fmt: skip
    head_shapes = {"features": spatial, "x_t": {0: n, 2: hh, 3: ww}, "t": {0: n},
                   "log_prior": spatial, "band": spatial}  # fmt: skip
    img_shapes = {0: b, 2: s * h, 3: s * w}
    return {
        "encoder": (_Encoder(net), (image, probs), {"image": img_shapes, "probs": img_shapes},
                    ["image", "probs"], ["features"]),
        "head": (_Head(net), head_in, head_shapes,
                 ["features", "x_t", "t", "log_prior", "band"], ["logits"]),
    }  # fmt: skip


def weights_digest(model) -> str:
    """SHA-256 of the network's tensors (names, shapes and bytes) and its spec: what a set of
    graphs was exported from, so a cache or a sidecar can tell when it is stale."""
    h = hashlib.sha256(json.dumps(model.spec.to_json(), sort_keys=True).encode())
    h.update(f"{__version__} {torch.__version__}".encode())
    for name, value in sorted(model.module().state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(value.shape)).encode())
        h.update(value.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def export_onnx(model, out: str | Path, source: str = "", optimize: bool = True) -> Path:
    """Write ``model``'s graphs and the sidecar into the new folder ``out`` (made whole in a
    temporary folder beside it, then renamed: never half-written). Returns ``out``.
    ``optimize``: the exporter's graph clean-up (constant folding, fusions), for runtimes
    that do not optimise on their own; onnxruntime does, so its cache skips it (half the
    export's time)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise InputError("exists and is not empty (exporting writes a new folder)", out)
    out.parent.mkdir(parents=True, exist_ok=True)
    graphs = _graphs(model)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would be the folder's once renamed
    try:
        for name, (module, args, shapes, inputs, outputs) in graphs.items():
            _export_one(module, args, shapes, inputs, outputs, tmp / f"{name}.onnx", optimize)
        sidecar = describe(model, {n: g[3:] for n, g in graphs.items()}, source)
        (tmp / SIDECAR).write_text(json.dumps(sidecar, indent=1) + "\n")
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _export_one(module, args, shapes, inputs, outputs, path: Path, optimize: bool) -> None:
    # the exporter reports its progress and the absence of torchvision's operators on the
    # logger and as warnings: none of it concerns the user
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            # shapes by position: the wrapped modules' argument names are not the graph's
            program = torch.onnx.export(module.eval(), args,
                                        dynamic_shapes=tuple(shapes[n] for n in inputs),
                                        input_names=inputs, output_names=outputs,
                                        opset_version=OPSET, dynamo=True, verbose=False,
                                        optimize=optimize)  # fmt: skip
        program.save(str(path))
    finally:
        logger.setLevel(level)


def describe(model, io: dict[str, tuple[list, list]], source: str = "") -> dict:
    """The sidecar: what pre- and post-processing around the graphs needs (docs/onnx.md)."""
    spec = model.spec
    data = {
        "format_version": FORMAT_VERSION,
        "exported_by": f"segrefine {__version__}, torch {torch.__version__}",
        "source": source,
        "weights_sha256": weights_digest(model),
        "kind": spec.kind,
        "class_names": list(spec.class_names),
        "size": spec.size,
        "stride": model.stride,
        "normalise": {
            "formula": "(rgb / 255 - mean) / std, RGB channels first",
            "mean": MEAN,
            "std": STD,
        },  # fmt: skip
        "graphs": {
            n: {"file": f"{n}.onnx", "inputs": i, "outputs": o} for n, (i, o) in io.items()
        },  # fmt: skip
    }
    if spec.kind == "segmenter":
        data["model"] = dict(spec.model)
        return data
    from ..diffusion.modes.default import GROW_SURE
    from ..diffusion.networks import CONFIDENT

    sched = model.scheduler
    data["refiner"] = {
        "mode": spec.mode,
        "network": dict(spec.network),
        "class_agnostic": spec.class_agnostic,
        "inference": model.defaults,
        "temperature": model.temperature,
        "band": int(spec.network.get("band", 0)),
        "confident": CONFIDENT,
        "grow_sure": GROW_SURE,
        "schedule": {
            "num_train_timesteps": int(sched.config.num_train_timesteps),
            "beta_schedule": sched.config.beta_schedule,
            "alphas_cumprod": [round(float(a), 9) for a in sched.alphas_cumprod],
        },
    }
    return data

"""Run a segmenter's or refiner's networks with onnxruntime, inside the same pipeline.

:func:`use_backend` swaps the network a loaded :class:`~segrefine.Segmenter` or
:class:`~segrefine.Refiner` runs for an object that calls the same methods
(``model(x)``; ``encode`` / ``prior_terms`` / ``head``; the DDPM U-Net's ``net(x, t).sample``)
and runs the exported graph. Everything else -- working size, native passes, tiles, band,
samples, calibration, uncertainty -- is the PyTorch pipeline's own code, so the two backends
can differ only by what the networks compute (docs/onnx.md measures it).

Graphs come from a cache folder keyed by the weights' digest (``$SEGREFINE_CACHE``, else
``$XDG_CACHE_HOME/segrefine`` or ``~/.cache/segrefine``), exported there on first use (tens
of seconds per run on a CPU, once) or from a folder ``segrefine export --onnx`` wrote.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from ..errors import InputError
from .export import SIDECAR, export_onnx, weights_digest

BACKENDS = ("torch", "onnxruntime")


def cache_root() -> Path:
    if os.environ.get("SEGREFINE_CACHE"):
        return Path(os.environ["SEGREFINE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "segrefine"


def _session(path: Path, threads: int):
    try:
        import onnxruntime as ort
    except ImportError:
        raise InputError("--backend onnxruntime needs onnxruntime: pip install "
                         "'segrefine[onnx]'") from None  # fmt: skip
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: its notes on unused initialisers are noise
    # onnxruntime's threads spin after a call by default, waiting for the next; between the
    # graphs the pipeline's own torch ops run on the same cores, and the spinning took them:
    # Weizmann val's refine stage 5.1 s/MP with it, 2.8 without (torch: 2.9; 2 AMD EPYC cores)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _array(x: torch.Tensor) -> np.ndarray:
    # channels-last tensors (the layout the PyTorch pipeline prefers) are made contiguous
    return x.detach().float().cpu().contiguous().numpy()


class _Graph(torch.nn.Module):
    # a Module without parameters, so that what hooks every network call (the web app's
    # cancel and time budget check, between a refiner's steps) sees the graphs' calls too
    def __init__(self, path: Path, threads: int):
        super().__init__()
        self.session = _session(path, threads)
        self.inputs = [i.name for i in self.session.get_inputs()]

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        feeds = {n: (_array(a) if a.is_floating_point() else a.cpu().numpy().astype(np.int64))
                 for n, a in zip(self.inputs, args, strict=True)}  # fmt: skip
        return torch.from_numpy(self.session.run(None, feeds)[0])


class OrtSegmenterNet:
    """What :func:`~segrefine.segmenting.segmenter.predict_probs` calls: ``net(x)`` -> logits."""

    training = False

    def __init__(self, folder: Path, threads: int):
        self.graph = _Graph(folder / "segmenter.onnx", threads)

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x)


class OrtConditionalDenoiser:
    """The default mode's network as its sampler calls it (``ConditionalDenoiser``)."""

    def __init__(self, folder: Path, threads: int, band: int):
        self.band = band
        self.encoder = _Graph(folder / "encoder.onnx", threads)
        self.head_graph = _Graph(folder / "head.onnx", threads)

    def encode(self, image: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        return self.encoder(image, probs)

    def prior_terms(self, probs):
        from ..diffusion.networks import uncertain_band

        band = uncertain_band(probs, self.band) if self.band > 0 else None
        return torch.log(probs.clamp_min(1e-4)), band

    def head(self, features, x_t, t, prior):
        log_prior, band = prior
        if band is None:  # unrestricted: a band of ones is the same sum
            band = torch.ones_like(log_prior[:, :1])
        return self.head_graph(features, x_t, t, log_prior, band)


class OrtPaperDenoiser:
    """The paper mode's DDPM U-Net as its sampler calls it: ``net(x, t).sample``."""

    def __init__(self, folder: Path, threads: int, channels: int):
        self.graph = _Graph(folder / "denoiser.onnx", threads)
        self.config = SimpleNamespace(out_channels=channels)

    def __call__(self, x, t):
        return SimpleNamespace(sample=self.graph(x, t.expand(x.shape[0])))


def graphs_for(model, folder: str | Path | None = None) -> Path:
    """The folder of ``model``'s graphs: ``folder`` (checked to be of these weights), else
    the cache's, exported there on first use."""
    digest = weights_digest(model)
    if folder is not None:
        folder = Path(folder)
        _check_sidecar(folder, digest)
        return folder
    cached = cache_root() / "onnx" / digest[:32]
    if not (cached / SIDECAR).is_file():
        export_onnx(model, cached, source="cache", optimize=False)
    _check_sidecar(cached, digest)
    return cached


def _check_sidecar(folder: Path, digest: str) -> None:
    try:
        sidecar = json.loads((folder / SIDECAR).read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"not an ONNX export of segrefine ({type(err).__name__})",
                         folder / SIDECAR) from None  # fmt: skip
    if not isinstance(sidecar, dict) or sidecar.get("weights_sha256") != digest:
        raise InputError("exported from other weights than the run's (export it again)",
                         folder / SIDECAR)  # fmt: skip


def use_backend(model, backend: str = "torch", folder: str | Path | None = None):
    """Make ``model`` (a loaded Segmenter or Refiner) run its networks with ``backend``;
    returns it. ``torch`` restores the PyTorch networks."""
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r} (use {' or '.join(BACKENDS)})")
    if backend == "torch":
        model.prepare_inference()
        if model.spec.kind == "refiner":
            model.bf16 = None
        return model
    if model.device.type != "cpu":
        raise InputError("--backend onnxruntime runs on the CPU: use --device cpu")
    graphs, threads = graphs_for(model, folder), torch.get_num_threads()
    if model.spec.kind == "segmenter":
        net = OrtSegmenterNet(graphs, threads)
    elif model.mode == "paper":
        net = OrtPaperDenoiser(graphs, threads, 3 + model.num_classes)
    else:
        net = OrtConditionalDenoiser(graphs, threads, int(model.spec.network.get("band", 0)))
    if model.spec.kind == "refiner":
        model.bf16 = False  # the graphs compute in float32
    model._fast = (model.module(), net)  # what LoadableRun.inference_module hands out
    return model

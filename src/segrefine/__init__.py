"""segrefine: semantic segmentation refined by a conditional diffusion model.

The public API mirrors the CLI: :class:`Segmenter` (``train-segmenter`` / ``predict``),
:class:`Refiner` (``train-refiner`` / ``refine``), :func:`segment_and_refine` (the path every
command takes), :func:`refine_video` (``refine --video``), :func:`run_benchmark` (``benchmark``),
:func:`cluster` (``cluster``), :func:`evaluate_folder` (``evaluate``), :func:`read_coarse`
(a coarse mask or map file, read as ``refine`` reads it), the model zoo (``"zoo:NAME"``
wherever a run is loaded; :mod:`segrefine.zoo`), the metrics in
:mod:`segrefine.metrics` and the data readers in :mod:`segrefine.data`. Heavy modules load
lazily, so ``import segrefine`` is quick.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Segmenter": "segrefine.segmenting.segmenter",
    "TrainConfig": "segrefine.segmenting.train",
    "train_segmenter": "segrefine.segmenting.train",
    "evaluate_folder": "segrefine.evaluate",
    "predict_to_folder": "segrefine.segmenting.predict",
    "InputError": "segrefine.errors",
    "Refiner": "segrefine.diffusion",
    "RefinerConfig": "segrefine.diffusion",
    "train_refiner": "segrefine.diffusion",
    "degrade": "segrefine.diffusion",
    "segment_and_refine": "segrefine.pipeline",
    "refine_video": "segrefine.video",
    "run_benchmark": "segrefine.benchmarking",
    "run_native_benchmark": "segrefine.benchmarking",
    "cluster": "segrefine.unsupervised",
    "read_coarse": "segrefine.data.coarse",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'segrefine' has no attribute {name!r}")

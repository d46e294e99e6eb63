"""Deployment: a run's networks as ONNX graphs, and onnxruntime as a backend of the pipeline.

>>> from segrefine import Refiner                                 # doctest: +SKIP
>>> from segrefine.deploy import export_onnx, use_backend
>>> ref = Refiner.load("zoo:weizmann-horse", device="cpu")
>>> export_onnx(ref, "horse_onnx")          # encoder.onnx, head.onnx, onnx.json
>>> use_backend(ref, "onnxruntime")         # the same refine(), its networks in onnxruntime
"""

from .export import SIDECAR, export_onnx, weights_digest
from .runtime import BACKENDS, cache_root, graphs_for, use_backend

__all__ = ["BACKENDS", "SIDECAR", "cache_root", "export_onnx", "graphs_for", "use_backend",
           "weights_digest"]  # fmt: skip

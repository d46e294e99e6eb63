"""Benchmarks of a segmenter + refiner pair on a labelled split, and how they are drawn.

- :mod:`.paper` -- the paper's analysis (``segrefine benchmark``): per-class tables, most
  improved and worsened images, gain scatter, quality against steps, speed;
- :mod:`.native` -- every row at each image's own resolution (``benchmark --native``);
- :mod:`.report` -- colour-coded label maps, example grids and Markdown tables (also the web
  app's and the video outputs' drawing).
"""

from .native import run_native_benchmark
from .paper import run_benchmark

__all__ = ["run_benchmark", "run_native_benchmark"]

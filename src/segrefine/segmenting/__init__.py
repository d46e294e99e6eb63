"""Segmenting: the discriminative models whose masks the refiner corrects.

:mod:`.segmenter` loads a trained run and predicts probabilities at each image's own size,
:mod:`.train` trains one (``segrefine train-segmenter``), :mod:`.predict` writes a folder of
predictions (``segrefine predict``).
"""

from .predict import predict_to_folder
from .segmenter import Segmenter, SegmenterSpec, predict_probs, resolve_device
from .train import TrainConfig, train_segmenter

__all__ = ["Segmenter", "SegmenterSpec", "TrainConfig", "predict_probs", "predict_to_folder",
           "resolve_device", "train_segmenter"]

"""The diffusion refiner: turns a segmenter's probabilities into a corrected label map.

- :class:`Refiner` (``refiner.py``): load a trained refiner and refine images.
- :func:`train_refiner` (``train.py``) / :class:`RefinerConfig` (``config.py``): train one.
- ``modes/``: the registered refiner modes (``default``, ``paper``): each one's network,
  training loss, sampling loop and inference defaults.
- :func:`degrade` (``degrade.py``): the coarse-mask generator refiners learn from;
  ``batches.py``: training batches; ``oof.py``: out-of-fold segmenter predictions.
- ``onehot.py``: stochastic one-hot maps and soft probabilities from hard masks;
  ``sampling.py``: the noise schedule; ``networks.py``: the denoisers.
"""

from .config import RefinerConfig
from .degrade import DegradeConfig, degrade
from .modes import MODES, RefinerMode, get_mode
from .onehot import probs_from_labels, stochastic_onehot
from .refiner import Refinement, Refiner, RefinerSpec
from .train import train_refiner

__all__ = [
    "MODES",
    "DegradeConfig",
    "Refinement",
    "Refiner",
    "RefinerConfig",
    "RefinerMode",
    "RefinerSpec",
    "degrade",
    "get_mode",
    "probs_from_labels",
    "stochastic_onehot",
    "train_refiner",
]

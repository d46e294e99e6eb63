"""The diffusion refiner: turns a segmenter's probabilities into a corrected label map.

- :class:`Refiner` (``refiner.py``): load a trained refiner and refine images.
- :func:`train_refiner` / :class:`RefinerConfig` (``train.py``): train one, in either mode.
- :func:`degrade` (``degrade.py``): the coarse-mask generator refiners learn from.
- ``onehot.py``: stochastic one-hot maps and soft probabilities from hard masks.
- ``sampling.py``: the noise schedule and both sampling loops; ``networks.py``: the denoisers.
"""

from .degrade import DegradeConfig, degrade
from .onehot import probs_from_labels, stochastic_onehot
from .refiner import Refinement, Refiner
from .train import RefinerConfig, train_refiner

__all__ = [
    "DegradeConfig",
    "Refinement",
    "Refiner",
    "RefinerConfig",
    "degrade",
    "probs_from_labels",
    "stochastic_onehot",
    "train_refiner",
]

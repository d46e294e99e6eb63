"""The noise schedule shared by both modes, and the DDIM schedule a refinement walks.

The forward process is a diffusers ``DDPMScheduler`` (it owns betas, ``alphas_cumprod`` and
``add_noise``); reverse steps are taken by diffusers' ``DDIMScheduler`` or ``DDPMScheduler``
built from the same config, inside each mode's sampling loop (``modes/default.py``,
``modes/paper.py``).
"""

from __future__ import annotations

import functools
import json
import math

import numpy as np


def make_scheduler(num_train_timesteps: int = 1000, beta_schedule: str = "linear"):
    """The forward process: DDPM's linear betas 1e-4..0.02 over 1000 steps by default."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule, clip_sample=False
    )


def start_timestep(scheduler, strength: float) -> int:
    """The timestep a refinement of ``strength`` in (0, 1] starts from: ``strength * T``."""
    if not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    total = scheduler.config.num_train_timesteps
    return int(np.clip(round(strength * total) - 1, 0, total - 1))


def ddim_schedule(scheduler, t_start: int, steps: int, **config):
    """A ``DDIMScheduler`` over ``scheduler``'s betas and the timesteps it visits: ``steps``
    of them, the first ``t_start``, evenly spaced towards 0.

    ``DDIMScheduler.step`` moves from ``t`` to ``t - T // num_inference_steps``, so the
    spacing is a whole divisor of ``T``: the largest one that fits ``steps`` steps below
    ``t_start`` (the image-to-image convention of starting part-way down the schedule).
    ``config`` overrides the DDIM config (``prediction_type``, ``clip_sample``).
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    total = scheduler.config.num_train_timesteps
    steps = min(steps, t_start + 1)
    n = min(total, math.ceil(total * steps / (t_start + 1)))
    key = json.dumps(dict(scheduler.config), sort_keys=True, default=str)
    ddim = _ddim(key, json.dumps(config, sort_keys=True), n)
    stride = total // ddim.num_inference_steps
    return ddim, [t_start - i * stride for i in range(steps)]


@functools.lru_cache(maxsize=64)
def _ddim(base: str, overrides: str, num_inference_steps: int):
    """One DDIMScheduler per configuration: building one costs ~10 ms, a refinement pass
    needs one, and ``step`` keeps no state between calls."""
    from diffusers import DDIMScheduler

    ddim = DDIMScheduler.from_config(json.loads(base), set_alpha_to_one=True,
                                     **json.loads(overrides))  # fmt: skip
    ddim.set_timesteps(num_inference_steps)
    return ddim

"""Noise schedule and the two sampling loops (default and paper mode).

The schedule is a diffusers ``DDPMScheduler`` (it owns betas, ``alphas_cumprod`` and
``add_noise``); the loops below are short enough to read line by line. The two modes differ in
exactly the places the paper and the improved method differ:

===================  =====================================  ====================================
                     paper                                  default
===================  =====================================  ====================================
diffused channels    image + labels, jointly                labels only (image, probs: condition)
start at t = s*T     stochastic one-hot, *not* noised       stochastic one-hot, noised to t
network predicts     the noise (epsilon)                    the clean label map (logits)
sampler              DDPM ancestral (all t) or DDIM         DDIM, a few steps
===================  =====================================  ====================================
"""

from __future__ import annotations

import numpy as np
import torch

from .onehot import stochastic_onehot


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


def sampling_timesteps(t_start: int, steps: int) -> list[int]:
    """``steps`` evenly spaced timesteps from ``t_start`` down towards 0 (first = t_start)."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    ts = np.linspace(t_start, 0, steps + 1)[:-1].round().astype(int)
    return sorted(set(ts.tolist()), reverse=True)


def _sqrt_ab(scheduler, t: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    ab = scheduler.alphas_cumprod[t].to(device)
    return ab.sqrt(), (1 - ab).sqrt()


def ddim_step(scheduler, x: torch.Tensor, x0: torch.Tensor, t: int, t_next: int) -> torch.Tensor:
    """Deterministic DDIM move from ``t`` to ``t_next`` given the predicted clean sample."""
    a, s = _sqrt_ab(scheduler, t, x.device)
    eps = (x - a * x0) / s
    a_next, s_next = _sqrt_ab(scheduler, t_next, x.device)
    return a_next * x0 + s_next * eps


@torch.no_grad()
def sample_default(
    net,
    image: torch.Tensor,
    probs: torch.Tensor,
    scheduler,
    strength: float,
    steps: int,
    generator: torch.Generator,
    samples: int = 1,
) -> torch.Tensor:
    """Default mode: refined class probabilities (B * samples, C, H, W) from prior ``probs``.

    The condition features are computed once per image and shared by its ``samples``
    refinements (consecutive rows of the result); each step is one pass of the light head.
    """
    features, prior = net.encode(image, probs), net.prior_terms(probs)  # per image
    probs = probs.repeat_interleave(samples, 0)
    ts = sampling_timesteps(start_timestep(scheduler, strength), steps)
    y = stochastic_onehot(probs, generator)
    noise = torch.randn(y.shape, generator=generator, device=y.device)
    x = scheduler.add_noise(y, noise, torch.tensor([ts[0]], device=y.device))
    for i, t in enumerate(ts):
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        p = torch.softmax(net.head(features, x, tt, prior).float(), dim=1)
        if i + 1 < len(ts):
            x = ddim_step(scheduler, x, p * 2 - 1, t, ts[i + 1])
    return p


@torch.no_grad()
def sample_paper(
    net,
    image: torch.Tensor,
    probs: torch.Tensor,
    scheduler,
    strength: float,
    steps: int | None,
    generator: torch.Generator,
) -> torch.Tensor:
    """Paper mode: one-hot (B, C, H, W) of the argmaxed label channels after reverse diffusion.

    ``image`` is in [-1, 1]. The start is the concatenation (image, stochastic one-hot) taken
    as the state at ``t = strength * T`` *without* forward noising, as the paper does.
    ``steps=None`` runs DDPM's ancestral sampler over every timestep (the paper: 500 at
    strength 0.5); a number runs that many DDIM steps.
    """
    t_start = start_timestep(scheduler, strength)
    c = probs.shape[1]
    x = torch.cat([image, stochastic_onehot(probs, generator)], dim=1)
    if steps is None:
        from diffusers import DDPMScheduler

        ddpm = DDPMScheduler.from_config(scheduler.config)
        ddpm.set_timesteps(timesteps=list(range(t_start, -1, -1)))
        for t in ddpm.timesteps:
            eps = net(x, t.to(x.device).expand(x.shape[0])).sample
            x = ddpm.step(eps, t, x, generator=generator).prev_sample
        x0 = x
    else:
        ts = sampling_timesteps(t_start, steps)
        for i, t in enumerate(ts):
            tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
            eps = net(x, tt).sample
            a, s = _sqrt_ab(scheduler, t, x.device)
            x0 = ((x - s * eps) / a).clamp(-1, 1)
            if i + 1 < len(ts):
                x = ddim_step(scheduler, x, x0, t, ts[i + 1])
    labels = x0[:, -c:].argmax(1)
    return torch.nn.functional.one_hot(labels, c).permute(0, 3, 1, 2).float()

"""Paper mode: a plain DDPM over image and label channels jointly, as in the paper.

Training never sees a coarse mask: it learns to denoise (image, true one-hot) pairs with the
epsilon loss. Refinement takes the concatenation (image, stochastic one-hot of the segmenter's
probabilities) as the state at ``t = strength * T`` *without* forward noising, runs the reverse
process (DDPM's ancestral sampler over every timestep when ``steps`` is None, the paper's 500
at strength 0.5; DDIM with that many steps otherwise) and argmaxes the label channels.
"""

from __future__ import annotations

import torch

from ...data.io import VOID
from ...data.transforms import MEAN, STD
from ..networks import paper_denoiser
from ..onehot import labels_to_signed, stochastic_onehot
from ..sampling import ddim_schedule, start_timestep
from . import RefinerMode, register_mode


def paper_image(image: torch.Tensor) -> torch.Tensor:
    """Normalised image tensor -> [-1, 1], the range paper mode diffuses it in."""
    return ((image * STD + MEAN) * 2 - 1).clamp(-1, 1)


@register_mode
class PaperMode(RefinerMode):
    name = "paper"
    inference_defaults = {"steps": None, "strength": 0.5, "samples": 1}
    # validation during training: 500 ancestral steps per image would dominate the run
    validation_settings = {"steps": 10, "samples": 1}
    learns_from_coarse_masks = False

    def build_network(self, num_classes: int, network: dict) -> torch.nn.Module:
        return paper_denoiser(num_classes, network["width"], network["depth"])

    def loss(self, net, scheduler, cfg, x, y, probs, step: int) -> torch.Tensor:
        gen = torch.Generator(x.device).manual_seed(cfg.seed * 1_000_003 + step)
        b = x.shape[0]
        x0 = torch.cat([paper_image(x), labels_to_signed(y, net.config.out_channels - 3)], 1)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=gen,
                          device=x.device)  # fmt: skip
        noise = torch.randn(x0.shape, generator=gen, device=x.device)
        eps = net(scheduler.add_noise(x0, noise, t), t).sample.float()
        weight = torch.ones_like(x0)
        weight[:, 3:] = (y != VOID).unsqueeze(1).float()  # void pixels teach no label
        return (weight * (eps - noise) ** 2).sum() / weight.sum()

    @torch.no_grad()
    def sample(self, net, image, probs, scheduler, strength, steps, generator, samples):
        from diffusers import DDPMScheduler

        image = paper_image(image).repeat_interleave(samples, 0)
        probs = probs.repeat_interleave(samples, 0)
        t_start = start_timestep(scheduler, strength)
        x = torch.cat([image, stochastic_onehot(probs, generator)], dim=1)
        if steps is None:
            sampler = DDPMScheduler.from_config(scheduler.config)
            sampler.set_timesteps(timesteps=list(range(t_start, -1, -1)))
            timesteps, options = sampler.timesteps.tolist(), {"generator": generator}
        else:
            sampler, timesteps = ddim_schedule(scheduler, t_start, steps, clip_sample=True)
            # the clean prediction is clipped to [-1, 1] and the noise re-derived from it
            options = {"use_clipped_model_output": True}
        for t in timesteps:
            tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
            out = sampler.step(net(x, tt).sample, t, x, **options)
            x = out.prev_sample
        # DDPM ends at t = 0 with the sample itself; DDIM's last clean prediction is the result
        x0 = x if steps is None else out.pred_original_sample
        labels = x0[:, -probs.shape[1]:].argmax(1)
        return torch.nn.functional.one_hot(labels, probs.shape[1]).permute(0, 3, 1, 2).float()

    def denoiser_passes(self, scheduler, strength, steps):
        t_start = start_timestep(scheduler, strength)
        return t_start + 1 if steps is None else min(steps, t_start + 1)

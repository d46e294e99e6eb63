"""Default mode: a conditional refiner that learns to correct coarse masks in a few DDIM steps.

Training maps (image, coarse probabilities, noisy sample of them) to the true mask with
cross-entropy. The coarse probabilities come from out-of-fold segmenter predictions (when a
segmenter run is given) and from :func:`~segrefine.diffusion.degrade.degrade`. The noisy label
state at timestep t is a stochastic one-hot draw of a blend ``lam * truth + (1 - lam) * coarse``:
``lam = 0`` for half the batch (exactly what inference starts from) and random, smaller at
larger t, for the rest (what later sampling steps see).

Refinement starts from a stochastic one-hot draw of the segmenter's probabilities, noised to
``t = strength * T``, and takes ``steps`` DDIM steps with the network's clean-label prediction
(``prediction_type="sample"``).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ... import checkpoint
from ...data.io import VOID
from ..networks import ConditionalDenoiser, grow_band
from ..onehot import labels_to_signed, stochastic_onehot
from ..sampling import ddim_schedule, start_timestep
from . import RefinerMode, register_mode

# how sure the network must be of a change beyond the band to carry it there: its head was
# trained only inside the band, and an unsure guess beyond it painted a cloud into a true mask
# (horse327). At 0.9 true masks lose 0.2 Boundary IoU, rough masks keep most of the gain
# (docs/benchmarks.md, "Rough masks")
GROW_SURE = 0.9


@register_mode
class DefaultMode(RefinerMode):
    name = "default"
    inference_defaults = {"steps": 1, "strength": 0.3, "samples": 2}
    learns_from_coarse_masks = True
    network_keys = ("width", "depth", "features", "head_width", "band")

    def build_network(self, num_classes: int, network: dict) -> torch.nn.Module:
        return ConditionalDenoiser(num_classes, network["width"], network["depth"],
                                   network["features"], network["head_width"],
                                   band=network.get("band", 0))  # fmt: skip

    def loss(self, net, scheduler, cfg, x, y, probs, step: int) -> torch.Tensor:
        gen = torch.Generator(x.device).manual_seed(cfg.seed * 1_000_003 + step)
        b = x.shape[0]
        t_max = start_timestep(scheduler, cfg.max_strength)
        t = torch.randint(1, t_max + 1, (b,), generator=gen, device=x.device)
        lam = torch.rand(b, generator=gen, device=x.device) * (1 - t.float() / t_max)
        lam = torch.where(torch.rand(b, generator=gen, device=x.device) < 0.5, 0.0, lam)
        if cfg.start_share > 0:
            at_start = torch.rand(b, generator=gen, device=x.device) < cfg.start_share
            t = torch.where(at_start, start_timestep(scheduler, cfg.inference["strength"]), t)
            lam = torch.where(at_start, 0.0, lam)
        truth = (labels_to_signed(y, probs.shape[1]) + 1) / 2
        void = (y == VOID).unsqueeze(1)
        truth = torch.where(void, probs, truth)
        q = lam.view(b, 1, 1, 1) * truth + (1 - lam.view(b, 1, 1, 1)) * probs
        noise = torch.randn(probs.shape, generator=gen, device=x.device)
        x_t = scheduler.add_noise(stochastic_onehot(q, gen), noise, t)
        logits = net(x_t, t, x, probs)
        return F.cross_entropy(logits.float(), y, ignore_index=VOID)

    @torch.no_grad()
    def sample(self, net, image, probs, scheduler, strength, steps, generator, samples):
        # the condition features are computed once per image and shared by its samples
        # (consecutive rows); each step is one pass of the light head
        features, prior = net.encode(image, probs), net.prior_terms(probs)
        probs = probs.repeat_interleave(samples, 0)
        ddim, timesteps = ddim_schedule(scheduler, start_timestep(scheduler, strength), steps,
                                        prediction_type="sample", clip_sample=False)  # fmt: skip
        y = stochastic_onehot(probs, generator)
        noise = torch.randn(y.shape, generator=generator, device=y.device)
        x = scheduler.add_noise(y, noise, torch.tensor(timesteps[:1], device=y.device))
        band = prior[1]
        for i, t in enumerate(timesteps):
            tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
            last = i + 1 == len(timesteps)  # the last step's prediction is the result, made
            # without the band (inside it, the same numbers) so that the band can grow below
            p = torch.softmax(net.head(features, x, tt, (prior[0], None) if last else prior)
                              .float(), dim=1)  # fmt: skip
            if not last:
                x = ddim.step(p * 2 - 1, t, x).prev_sample
        if band is None:
            return p
        # a region the prediction moves across the band's edge moves whole, as far as the
        # network is sure of it (grow_band); elsewhere outside the band the labels, the
        # probabilities and the uncertainty are the prior's, not what the head (trained inside
        # the band only) makes of them: at best a learned temperature that softens 0.99 to 0.8
        top, labels = p.max(1, keepdim=True)
        sure = (labels != probs.argmax(1, keepdim=True)) & (top >= GROW_SURE)
        band = grow_band(band.repeat_interleave(samples, 0) > 0, sure)
        return torch.where(band, p, probs.float())

    def denoiser_passes(self, scheduler, strength, steps):
        return min(steps, start_timestep(scheduler, strength) + 1)

    def init_from_segmenter(self, net, segmenter_run, segmenter_config: dict) -> int:
        """Start the condition encoder from the segmenter's own weights.

        The encoder is a U-Net like the segmenter, reading the image plus the C probability
        channels. When the segmenter is a U-Net of the same width and depth, every tensor of
        the same name and shape is copied; the first convolution takes the segmenter's filters
        for the image channels and zeros for the probability channels (so the encoder starts
        as the segmenter's feature extractor), and the output layer keeps its random start.
        The refiner then starts knowing what the segmenter learned about the images instead of
        learning it again from the same training set. Returns the tensors copied (0 when the
        architectures differ).
        """
        if segmenter_config.get("model", {}).get("name") != "unet":
            return 0
        tensors, _ = checkpoint.load_tensors(Path(segmenter_run) / checkpoint.WEIGHTS)
        own = net.encoder.state_dict()
        update = {}
        for name, value in tensors.items():
            mine = own.get(name)
            if mine is None:
                continue
            if mine.shape == value.shape:
                update[name] = value
            elif (mine.ndim == 4 and mine.shape[0] == value.shape[0]
                  and mine.shape[1] > value.shape[1]
                  and mine.shape[2:] == value.shape[2:]):  # the first conv: image + probs
                w = torch.zeros_like(mine)
                w[:, : value.shape[1]] = value
                update[name] = w
        if len(update) < len(own) // 2:  # another width or depth: nothing sensible to copy
            return 0
        net.encoder.load_state_dict(update, strict=False)
        return len(update)

"""The corruption process x̃ ~ M(x̃|x) of denoising autoencoders (Vincent et al. 2008, 2010).

A corruption is a module that corrupts in training mode and is the identity in eval mode, like
dropout; ``sample`` always corrupts (for evaluation on corrupted data). Put one in front of any
encoder and that model's own loss becomes a denoising criterion: its likelihood scores the clean x
while its encoder sees x̃ (``corrupt_inputs``).

    gaussian          x̃ = x + σ ε,  ε ~ N(0, I)                                (noise = σ >= 0)
    masking           a fixed number round(ν d) of each example's d components set to 0   (noise = ν)
    salt-and-pepper   round(ν d) components set to 0 or 1 by a fair coin each             (noise = ν)

The components are drawn anew for every example at every step.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vaelab.core.errors import VaelabError
from vaelab.core.registry import Registry


class Corruption(nn.Module):
    def __init__(self, noise: float) -> None:
        super().__init__()
        self.noise = float(noise)

    def forward(self, x: Tensor) -> Tensor:
        return self.sample(x) if self.training else x

    def sample(self, x: Tensor) -> Tensor:
        """One draw x̃ ~ M(x̃|x) for each example, in any mode."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"noise={self.noise:g}"


#: name -> Corruption subclass, built with the DAE's ``noise`` level
CORRUPTIONS: Registry[type[Corruption]] = Registry("corruption")


class _Fraction(Corruption):
    """A corruption of a fixed fraction ν of the components of every example."""

    name = ""

    def __init__(self, noise: float) -> None:
        if not 0 <= noise <= 1:
            raise VaelabError(f"noise (the fraction of {self.name} components) must be in [0, 1], got {noise}")
        super().__init__(noise)

    def chosen(self, x: Tensor) -> Tensor:
        """A boolean mask like x with exactly round(ν d) True per example, uniformly at random."""
        flat = x.reshape(len(x), -1)
        count = round(self.noise * flat.shape[1])
        picked = torch.rand(flat.shape, device=x.device).topk(count, dim=1).indices
        return torch.zeros_like(flat, dtype=torch.bool).scatter_(1, picked, True).view_as(x)


@CORRUPTIONS.register("gaussian", "additive Gaussian noise x + σε; noise = σ >= 0")
class GaussianNoise(Corruption):
    def __init__(self, noise: float) -> None:
        if not noise >= 0:
            raise VaelabError(f"noise (the standard deviation σ of the gaussian corruption) must be >= 0, got {noise}")
        super().__init__(noise)

    def sample(self, x: Tensor) -> Tensor:
        return x + self.noise * torch.randn_like(x)


@CORRUPTIONS.register("masking", "a fixed fraction ν of each input's components set to 0; noise = ν in [0, 1]")
class Masking(_Fraction):
    name = "masked"

    def sample(self, x: Tensor) -> Tensor:
        return x.masked_fill(self.chosen(x), 0)


@CORRUPTIONS.register("salt-and-pepper", "a fixed fraction ν set to 0 or 1 (fair coin); noise = ν in [0, 1]")
class SaltAndPepper(_Fraction):
    name = "salt-and-pepper"

    def sample(self, x: Tensor) -> Tensor:
        salt = (torch.rand_like(x) < 0.5).to(x.dtype)
        return torch.where(self.chosen(x), salt, x)


def corrupt_inputs(model: nn.Module, corruption: Corruption) -> nn.Module:
    """Make any model denoising: in training its encoder sees x̃ ~ M(x̃|x); its loss still scores the clean x."""
    model.encoder = nn.Sequential(corruption, model.encoder)
    return model

"""The learned prior over a VQ model's codes: one gated PixelCNN per level, each after the first conditioned on the
level above it (van den Oord et al. 2017; Razavi et al. 2019).

    VQ-VAE:    p(k) = PixelCNN(k)
    VQ-VAE-2:  p(k_top, k_bottom) = PixelCNN_top(k_top) · PixelCNN_bottom(k_bottom | k_top)

It is an ordinary model, trained by the one trainer: a data point is every level's code grid flattened and joined,
top first, (Σ h·w,) integers held as floats (``vq-codes`` data, made from a frozen VQ run by ``vaelab
train-prior``); the loss is −log p(codes) in nats per image. ``grids`` and ``codebook_size`` say what the codes are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vaelab.core.errors import VaelabError
from vaelab.models.base import MODELS, DataSpec, Loss, Model, ModelConfig
from vaelab.nn import GatedPixelCNN


@dataclass(frozen=True)
class CodePriorConfig(ModelConfig):
    codebook_size: int = 512  # K of the VQ model whose codes are modelled
    grids: tuple[int, ...] = (7, 7)  # (h, w) of each level's grid, top first, flattened: 4,4,8,8 for two levels
    channels: int = 32  # width of the gated layers (64-128 on a GPU)
    layers: int = 6
    kernel: int = 5  # odd; the receptive field grows by kernel // 2 rows and columns per layer

    def __post_init__(self) -> None:
        if self.codebook_size < 2:
            raise VaelabError(f"codebook_size must be >= 2, got {self.codebook_size}")
        if not self.grids or len(self.grids) % 2 or any(g < 1 for g in self.grids):
            raise VaelabError(f"grids must be (h, w) pairs of positive sizes, one per level, got {self.grids}")
        if self.channels < 1 or self.layers < 1:
            raise VaelabError(f"prior channels and layers must be >= 1, got {self.channels} and {self.layers}")
        if self.kernel < 3 or self.kernel % 2 == 0:
            raise VaelabError(f"the prior's kernel must be odd and >= 3, got {self.kernel}")

    @property
    def shapes(self) -> list[tuple[int, int]]:
        return [(self.grids[i], self.grids[i + 1]) for i in range(0, len(self.grids), 2)]


@MODELS.register("code-prior", "gated PixelCNN prior over a VQ run's code grids (trained by vaelab train-prior)")
class CodePrior(Model):
    Config = CodePriorConfig
    generative = True
    data_kinds = ("codes",)
    config: CodePriorConfig

    def __init__(self, config: CodePriorConfig, data: DataSpec | tuple[int, ...]) -> None:
        super().__init__(config, data)
        c = config
        positions = sum(h * w for h, w in c.shapes)
        if self.data_shape != (positions,):
            raise VaelabError(
                f"code-prior models the codes of a VQ run (vaelab train-prior RUN): a data point is the {positions} "
                f"codes of the grids {c.shapes} flattened, but the data has shape {self.data_shape}"
            )
        self.levels = nn.ModuleList(
            GatedPixelCNN(c.codebook_size, c.channels, c.layers, c.kernel, cond_codes=c.codebook_size if i else 0)
            for i in range(len(c.shapes))
        )
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def split(self, x: Tensor) -> list[Tensor]:
        """Flattened codes (B, Σ h·w) as floats -> each level's grid (B, h, w) of integers, top first."""
        shapes = self.config.shapes
        parts = x.long().split([h * w for h, w in shapes], dim=1)
        return [p.reshape(len(x), h, w) for p, (h, w) in zip(parts, shapes)]

    @staticmethod
    def join(codes: list[Tensor]) -> Tensor:
        """Each level's grid -> the flattened data point (B, Σ h·w), as floats."""
        return torch.cat([c.flatten(1) for c in codes], 1).float()

    def level_nll(self, codes: list[Tensor]) -> list[Tensor]:
        """−log p of each level's codes (B,) in nats, given the levels above it."""
        return [net.nll(k, codes[i - 1] if i else None) for i, (net, k) in enumerate(zip(self.levels, codes))]

    def nll(self, codes: list[Tensor]) -> Tensor:
        """−log p(all levels' codes) per image (B,), in nats."""
        return torch.stack(self.level_nll(codes)).sum(0)

    def check_data(self, x: Tensor) -> None:
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > self.config.codebook_size - 1 or not torch.equal(x, x.round()):
            raise VaelabError(
                f"code-prior models integer codes in [0, {self.config.codebook_size - 1}], "
                f"got values in [{lo:g}, {hi:g}]"
            )

    def loss(self, x: Tensor, step: int | None = None) -> Loss:
        levels = self.level_nll(self.split(x))
        nll = torch.stack(levels).sum(0).mean()
        terms = {"nll": nll}
        if len(levels) > 1:
            terms.update({f"nll_level{i}": level.mean() for i, level in enumerate(levels)})
        terms["nll_uniform"] = nll.new_tensor(self.data_shape[0] * math.log(self.config.codebook_size))
        return Loss(nll, terms)

    @torch.no_grad()
    def sample_codes(self, n: int) -> list[Tensor]:
        """n draws of every level's codes, top first (one forward pass per position)."""
        codes: list[Tensor] = []
        for i, (net, size) in enumerate(zip(self.levels, self.config.shapes)):
            codes.append(net.sample(n, size, codes[i - 1] if i else None))
        return codes

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        return self.join(self.sample_codes(n))

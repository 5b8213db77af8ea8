"""Gated PixelCNN (van den Oord et al. 2016) over a grid of discrete codes: p(k) = Π_ij p(k_ij | k_<ij, c).

Two stacks remove the blind spot of masked convolutions: the vertical stack sees the rows above (a (k/2+1) x k
kernel, cropped so that output row i reads rows i − k/2 .. i), the horizontal stack the codes to the left in the
same row (1 x (k/2+1)), and the vertical stack feeds the horizontal one. The first layer is mask type A (the
current row, resp. column, is masked: a code never sees itself), the later ones type B (they may read position
(i, j) of the previous layer, which already holds only what lies before (i, j)). Each layer is gated,
tanh(a) ⊙ σ(b), and a condition c (the top codes, for the bottom prior of VQ-VAE-2) enters every gate as a
per-position bias.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab.core.errors import VaelabError


def gate(h: Tensor) -> Tensor:
    a, b = h.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedLayer(nn.Module):
    def __init__(self, channels: int, kernel: int, mask_a: bool, cond_channels: int = 0) -> None:
        super().__init__()
        k = kernel // 2
        self.vertical = nn.Conv2d(channels, 2 * channels, (k + 1, kernel), padding=(k, k))
        self.horizontal = nn.Conv2d(channels, 2 * channels, (1, k + 1), padding=(0, k))
        self.vertical_to_horizontal = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        self.mask_a = mask_a
        v_mask, h_mask = torch.ones_like(self.vertical.weight), torch.ones_like(self.horizontal.weight)
        if mask_a:
            v_mask[:, :, -1] = 0  # the current row
            h_mask[:, :, :, -1] = 0  # the current column
        self.register_buffer("v_mask", v_mask, persistent=False)
        self.register_buffer("h_mask", h_mask, persistent=False)
        self.cond = nn.Conv2d(cond_channels, 4 * channels, 1) if cond_channels else None

    def forward(self, xv: Tensor, xh: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        height, width = xv.shape[-2:]
        v = F.conv2d(xv, self.vertical.weight * self.v_mask, self.vertical.bias, padding=self.vertical.padding)
        h = F.conv2d(xh, self.horizontal.weight * self.h_mask, self.horizontal.bias, padding=self.horizontal.padding)
        v, h = v[:, :, :height], h[:, :, :, :width]
        h = h + self.vertical_to_horizontal(v)
        if cond is not None and self.cond is not None:
            cv, ch = self.cond(cond).chunk(2, dim=1)
            v, h = v + cv, h + ch
        out_h = self.out(gate(h))
        return gate(v), out_h if self.mask_a else xh + out_h  # no residual in layer A: xh holds the current code


class GatedPixelCNN(nn.Module):
    """Logits (B, K, h, w) of every code given the codes before it in raster order (and a condition).

    ``cond_codes``: the size of the conditioning codebook (the top level's K) or 0 for an unconditional prior.
    """

    def __init__(
        self, num_codes: int, channels: int = 64, layers: int = 8, kernel: int = 5, cond_codes: int = 0
    ) -> None:
        super().__init__()
        if num_codes < 2 or channels < 1 or layers < 1:
            raise VaelabError(
                f"the prior needs num_codes >= 2, channels >= 1, layers >= 1; got {num_codes}, {channels}, {layers}"
            )
        if kernel < 3 or kernel % 2 == 0:
            raise VaelabError(f"the prior's kernel must be odd and >= 3, got {kernel}")
        self.num_codes, self.cond_codes = num_codes, cond_codes
        self.embed = nn.Embedding(num_codes, channels)
        cond_channels = channels if cond_codes else 0
        if cond_codes:
            self.cond_embed = nn.Embedding(cond_codes, channels)
            self.cond_net = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU())
        self.layers = nn.ModuleList(GatedLayer(channels, kernel, i == 0, cond_channels) for i in range(layers))
        self.head = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU(), nn.Conv2d(channels, num_codes, 1)
        )

    def condition(self, cond: Tensor | None, size: tuple[int, int]) -> Tensor | None:
        """The condition map on this grid: the condition codes embedded, convolved, upsampled (nearest)."""
        if not self.cond_codes:
            return None
        if cond is None:
            raise VaelabError("this prior is conditioned on the top-level codes: give cond")
        c = self.cond_net(self.embed_codes(self.cond_embed, cond))
        return F.interpolate(c, size=size, mode="nearest")

    @staticmethod
    def embed_codes(embedding: nn.Embedding, codes: Tensor) -> Tensor:
        return embedding(codes).movedim(-1, 1)

    def forward(self, codes: Tensor, cond: Tensor | None = None) -> Tensor:
        if codes.dim() != 3:
            raise VaelabError(f"the prior reads code grids (B, h, w), got shape {tuple(codes.shape)}")
        c = self.condition(cond, tuple(codes.shape[-2:]))
        v = h = self.embed_codes(self.embed, codes)
        for layer in self.layers:
            v, h = layer(v, h, c)
        return self.head(h)

    def nll(self, codes: Tensor, cond: Tensor | None = None) -> Tensor:
        """−log p(codes | cond) per grid (B,), in nats: the cross-entropy summed over the positions."""
        return F.cross_entropy(self(codes, cond), codes, reduction="none").flatten(1).sum(1)

    @torch.no_grad()
    def sample(self, n: int, size: tuple[int, int], cond: Tensor | None = None, temperature: float = 1.0) -> Tensor:
        """n grids drawn position by position in raster order (one forward pass per position)."""
        device = self.embed.weight.device
        codes = torch.zeros(n, *size, dtype=torch.long, device=device)
        for i in range(size[0]):
            for j in range(size[1]):
                logits = self(codes, cond)[:, :, i, j] / temperature
                codes[:, i, j] = torch.multinomial(F.softmax(logits.float(), dim=1), 1)[:, 0]
        return codes

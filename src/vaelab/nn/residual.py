"""Strided-conv encoders and decoders with residual blocks (van den Oord et al. 2017; Razavi et al. 2019).

    encoder: [conv 4x4 stride 2, act] x steps -> conv 3x3 -> residual blocks      (H, W) -> (H / 2^steps, W / 2^steps)
    decoder: conv 3x3 -> residual blocks -> [conv-transpose 4x4 stride 2] x steps  the mirror image
    residual block: h + conv 1x1(act(conv 3x3(act(h))))

Each stride-2 step halves the size exactly, so the image must be divisible by 2^steps: ``padded_size`` gives the
size to zero-pad it to (or says which steps would fit), instead of a silent crop. VQ-VAE and VQ-VAE-2 are both built
from these.
"""

from __future__ import annotations

from torch import Tensor, nn

from vaelab.core.errors import VaelabError


def padded_size(shape: tuple[int, ...], steps: int, what: str = "downsample", pad: bool = True) -> tuple[int, int]:
    """The (H, W) an image of ``shape`` (C, H, W) is zero-padded to so that ``steps`` halvings divide it: the next
    multiples of 2^steps. Refused (a clear error naming the steps that fit) when ``pad`` is off and the sides do not
    divide, or when padding would make up more than half of the padded image."""
    if len(shape) != 3:
        raise VaelabError(f"strided-conv models need images (C, H, W), got data of shape {tuple(shape)}")
    _, h, w = shape
    f = 2**steps
    padded = (-(-h // f) * f, -(-w // f) * f)
    if (h % f or w % f) and (not pad or padded[0] * padded[1] > 2 * h * w):
        fits = max(s for s in range(steps + 1) if h % 2**s == 0 and w % 2**s == 0)
        why = "" if not pad else f"; padding it to {padded[0]}x{padded[1]} would make it mostly padding"
        raise VaelabError(
            f"a {h}x{w} image cannot be halved {steps} times ({what}={steps} stride-2 steps need H and W divisible "
            f"by {f}{why}); use at most {fits} steps in all, or images whose sides are multiples of {f}"
        )
    return padded


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, hidden: int, act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.net = nn.Sequential(
            act(), nn.Conv2d(channels, hidden, 3, padding=1), act(), nn.Conv2d(hidden, channels, 1)
        )

    def forward(self, h: Tensor) -> Tensor:
        return h + self.net(h)


def residual_stack(channels: int, hidden: int, blocks: int, act: type[nn.Module]) -> nn.Sequential:
    return nn.Sequential(*(ResidualBlock(channels, hidden, act) for _ in range(blocks)), act())


class StridedEncoder(nn.Module):
    """(B, C_in, H, W) -> (B, channels, H / 2^steps, W / 2^steps); ``steps`` = 0 keeps the size."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        residual_channels: int,
        blocks: int,
        steps: int,
        act: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for i in range(steps):
            out = channels if i == steps - 1 else max(channels // 2, 1)
            layers += [nn.Conv2d(c, out, 4, stride=2, padding=1), act()]
            c = out
        layers += [nn.Conv2d(c, channels, 3, padding=1), residual_stack(channels, residual_channels, blocks, act)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class StridedDecoder(nn.Module):
    """(B, C_in, h, w) -> (B, out_channels, h * 2^steps, w * 2^steps); the last layer is linear."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        residual_channels: int,
        blocks: int,
        steps: int,
        out_channels: int,
        act: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, channels, 3, padding=1),
            residual_stack(channels, residual_channels, blocks, act),
        ]
        c = channels
        for i in range(steps):
            last = i == steps - 1
            out = out_channels if last else max(channels // 2, 1)
            layers.append(nn.ConvTranspose2d(c, out, 4, stride=2, padding=1))
            if not last:
                layers.append(act())
            c = out
        if steps == 0:
            layers.append(nn.Conv2d(c, out_channels, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)

"""Backbones: x (B, *shape) -> features (B, F) and z (B, D) -> decoder outputs (B, C_out, *spatial).

Models never build layers themselves; they ask for an encoder with F outputs (as many as their
posterior head needs) and a decoder with as many output channels as their likelihood needs. The
convolutional pair works for any image size: the decoder mirrors the sizes the encoder produced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab.core.errors import VaelabError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
    "softplus": nn.Softplus,
    "sigmoid": nn.Sigmoid,
}
BACKBONES = ("auto", "mlp", "conv")


@dataclass(frozen=True)
class BackboneConfig:
    backbone: str = "auto"
    hidden: tuple[int, ...] = (512,)  # MLP hidden widths, input side first
    channels: tuple[int, ...] = (32, 64)  # conv channels, one stride-2 layer each, input side first
    conv_hidden: tuple[int, ...] = ()  # conv only: fully connected widths between the conv stack and the code
    activation: str = "relu"

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise VaelabError(f"unknown backbone {self.backbone!r}; choose from: {', '.join(BACKBONES)}")
        if self.activation not in ACTIVATIONS:
            raise VaelabError(f"unknown activation {self.activation!r}; choose from: {', '.join(ACTIVATIONS)}")
        if any(w < 1 for w in (*self.hidden, *self.channels, *self.conv_hidden)) or not self.channels:
            raise VaelabError("hidden and channels must be positive widths, and channels must not be empty")


def resolve_backbone(cfg: BackboneConfig, shape: tuple[int, ...]) -> str:
    """'auto' picks the MLP for vectors and small grey images (the published MNIST baselines), else conv."""
    if cfg.backbone != "auto":
        return cfg.backbone
    if len(shape) == 3 and (shape[0] > 1 or shape[1] * shape[2] > 28 * 28):
        return "conv"
    return "mlp"


def build_encoder(
    cfg: BackboneConfig, shape: tuple[int, ...], out_features: int, out_activation: str | None = None
) -> nn.Module:
    """``out_activation`` (a name in ACTIVATIONS) squashes the outputs, e.g. sigmoid codes; None leaves them linear."""
    out_act = ACTIVATIONS[out_activation] if out_activation else None
    if resolve_backbone(cfg, shape) == "mlp":
        return MLPEncoder(shape, out_features, cfg.hidden, ACTIVATIONS[cfg.activation], out_act)
    return ConvEncoder(shape, out_features, cfg.channels, ACTIVATIONS[cfg.activation], out_act, cfg.conv_hidden)


def build_decoder(cfg: BackboneConfig, latent_dim: int, shape: tuple[int, ...], params_per_channel: int) -> nn.Module:
    out_shape = (shape[0] * params_per_channel, *shape[1:])
    if resolve_backbone(cfg, shape) == "mlp":
        return MLPDecoder(latent_dim, out_shape, cfg.hidden[::-1], ACTIVATIONS[cfg.activation])
    return ConvDecoder(latent_dim, out_shape, cfg.channels[::-1], ACTIVATIONS[cfg.activation], cfg.conv_hidden[::-1])


def _mlp(widths: list[int], act: type[nn.Module], out_act: type[nn.Module] | None = None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(act())
    return nn.Sequential(*layers, *([out_act()] if out_act else []))


def _layer_outputs(net: nn.Sequential, h: Tensor) -> list[Tensor]:
    """The output of every nonlinearity in ``net``, input side first, and the output of ``net`` last."""
    outs = []
    for i, module in enumerate(net):
        h = module(h)
        if i == len(net) - 1 or isinstance(module, tuple(ACTIVATIONS.values())):
            outs.append(h)
    return outs


class MLPEncoder(nn.Module):
    def __init__(
        self,
        shape: tuple[int, ...],
        out: int,
        hidden: tuple[int, ...],
        act: type[nn.Module],
        out_act: type[nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.net = _mlp([math.prod(shape), *hidden, out], act, out_act)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))

    def activations(self, x: Tensor) -> list[Tensor]:
        """Each hidden layer's activations, input side first, then the output (what penalties on units read)."""
        return _layer_outputs(self.net, x.flatten(1))


class MLPDecoder(nn.Module):
    def __init__(self, latent: int, out_shape: tuple[int, ...], hidden: tuple[int, ...], act: type[nn.Module]) -> None:
        super().__init__()
        self.out_shape = out_shape
        self.net = _mlp([latent, *hidden, math.prod(out_shape)], act)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(-1, *self.out_shape)


class TiedDecoder(nn.Module):
    """z -> Wᵀz + c with the weight W (D, d) of a one-layer encoder: the classic autoencoders' tied weights.

    W stays a parameter of the encoder only (stored and trained once); the decoder holds a reference.
    """

    def __init__(self, linear: nn.Linear, out_shape: tuple[int, ...]) -> None:
        super().__init__()
        object.__setattr__(self, "tied", linear)  # a reference, not a submodule
        self.out_shape = out_shape
        self.bias = nn.Parameter(torch.zeros(linear.in_features))

    def forward(self, z: Tensor) -> Tensor:
        return F.linear(z, self.tied.weight.t(), self.bias).view(-1, *self.out_shape)


def _conv_sizes(shape: tuple[int, ...], depth: int) -> list[tuple[int, int]]:
    """Spatial sizes after each stride-2 conv (kernel 4, padding 1 halves a size, rounding down)."""
    if len(shape) != 3:
        raise VaelabError(
            f"the conv backbone needs images (C, H, W), got data of shape {tuple(shape)}; use --set backbone=mlp"
        )
    sizes = [tuple(shape[1:])]
    for _ in range(depth):
        sizes.append((sizes[-1][0] // 2, sizes[-1][1] // 2))
    if min(sizes[-1]) < 1:
        need = 2**depth
        raise VaelabError(
            f"a {shape[1]}x{shape[2]} image is too small for the conv backbone's {depth} stride-2 layers "
            f"(needs at least {need}x{need}); use fewer --set channels=... or --set backbone=mlp"
        )
    return sizes


class ConvEncoder(nn.Module):
    def __init__(
        self,
        shape: tuple[int, ...],
        out: int,
        channels: tuple[int, ...],
        act: type[nn.Module],
        out_act: type[nn.Module] | None = None,
        hidden: tuple[int, ...] = (),
    ) -> None:
        """``hidden``: fully connected widths between the flattened conv features and the output."""
        super().__init__()
        sizes = _conv_sizes(shape, len(channels))
        layers: list[nn.Module] = []
        for c_in, c_out in zip((shape[0], *channels[:-1]), channels):
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), act()]
        h, w = sizes[-1]
        widths = [channels[-1] * h * w, *hidden]
        fc = [m for a, b in zip(widths[:-1], widths[1:]) for m in (nn.Linear(a, b), act())]
        head = [nn.Linear(widths[-1], out), *([out_act()] if out_act else [])]
        self.net = nn.Sequential(*layers, nn.Flatten(), *fc, *head)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def activations(self, x: Tensor) -> list[Tensor]:
        """Each conv layer's feature maps, input side first, then the output."""
        return _layer_outputs(self.net, x)


class ConvDecoder(nn.Module):
    """Mirror of ConvEncoder; output_padding restores odd sizes so any H x W comes back exactly."""

    def __init__(
        self,
        latent: int,
        out_shape: tuple[int, ...],
        channels: tuple[int, ...],
        act: type[nn.Module],
        hidden: tuple[int, ...] = (),
    ) -> None:
        """``hidden``: fully connected widths between the latent and the first transposed conv, latent side first."""
        super().__init__()
        sizes = _conv_sizes(out_shape, len(channels))[::-1]  # smallest first
        self.start = (channels[0], *sizes[0])
        widths = [latent, *hidden, channels[0] * sizes[0][0] * sizes[0][1]]
        layers: list[nn.Module] = [m for a, b in zip(widths[:-1], widths[1:]) for m in (nn.Linear(a, b), act())]
        self.stem = nn.Sequential(*layers)
        ups: list[nn.Module] = []
        outs = (*channels[1:], out_shape[0])
        for i, (c_in, c_out) in enumerate(zip(channels, outs)):
            target = sizes[i + 1]
            pad = (target[0] % 2, target[1] % 2)
            ups.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, output_padding=pad))
            if i < len(channels) - 1:
                ups.append(act())
        self.net = nn.Sequential(*ups)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(self.stem(z).view(-1, *self.start))

"""VQ-VAE (van den Oord et al. 2017) and VQ-VAE-2 (Razavi et al. 2019): discrete latent grids, learned priors.

    z_e = E(x) (B, D, h, w),   k_ij = argmin_k ‖z_e,ij − e_k‖,   z_q,ij = e_k_ij   (straight-through gradient)
    loss = −log p(x|z_q) + ‖sg[z_e] − z_q‖² + β ‖z_e − sg[z_q]‖²   (or EMA codebook updates for the middle term)

The quantizer is ``vaelab.nn.quantizer.VectorQuantizer`` (k-means init, dead-code restart, fp32 distances, DDP-synced
EMA). VQ-VAE-2 has two levels: top codes at a coarser grid quantize E_t(E_b(x)); bottom codes quantize E_b(x) joined
with the top codes decoded up to the bottom grid (so they code what the top level missed); the decoder sees both.

The likelihood bound of the paper: with the posterior a point mass on the codes k(x),
    −log p(x) ≤ −log p(x|z_q) − log p(k(x)),   −log p(k) = n_codes · log K under a uniform prior,
or the NLL of a trained autoregressive prior (``vaelab train-prior``). In bits per dimension it is divided by
D · ln 2. It is a bound on a *discrete* distribution only when p(x|z) is one: Bernoulli on binary data, or a
Gaussian integrated over the 256 bins of 8-bit intensities (``discrete_nll``), which the evaluation uses.

Images whose sides are not multiples of 2^steps (28x28 MNIST under 3 stride-2 steps) are zero-padded evenly to the
next multiple and the decoder's output is cropped back, so the likelihood is over the original pixels only; the
model says so in ``notes``. A model is sampled from once a code prior is attached (``attach_prior``; ``vaelab
train-prior`` fits one and ``vaelab.load`` attaches it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Bernoulli, Distribution, Normal

from vaelab.core.errors import VaelabError
from vaelab.models.base import MODELS, DataSpec, LikelihoodConfig, LikelihoodModel, Loss
from vaelab.nn import ACTIVATIONS
from vaelab.nn.quantizer import QuantizerOutput, VectorQuantizer
from vaelab.nn.residual import StridedDecoder, StridedEncoder, padded_size


class CodeSampler(Protocol):
    """What a VQ model samples codes from: a prior over its levels' code grids (``models.code_prior.CodePrior``)."""

    def sample_codes(self, n: int) -> list[Tensor]: ...


BINS = 256  # the discrete bound treats intensities in [0, 1] as 8-bit: 256 bins of width 1/255


@dataclass(frozen=True)
class VQVAEConfig(LikelihoodConfig):
    activation: str = "relu"
    code_dim: int = 64  # D, the size of a codebook vector (the encoder's output channels)
    codebook_size: int = 512  # K
    hidden_channels: int = 128  # channels of the strided convs and residual blocks
    residual_channels: int = 32  # the bottleneck inside a residual block
    residual_blocks: int = 2
    downsample: int = 2  # stride-2 steps: the code grid is (H / 2^downsample, W / 2^downsample)
    commitment: float = 0.25  # β
    ema: bool = True  # EMA codebook updates instead of the codebook loss
    decay: float = 0.99  # EMA decay γ
    restart_after: int = 100  # restart a code unused for this many training steps; 0 never restarts
    kmeans_init: bool = True  # k-means codebook from the first training batch
    pad: bool = True  # zero-pad images whose sides are not multiples of 2^steps (else refuse them)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.activation not in ACTIVATIONS:
            raise VaelabError(f"unknown activation {self.activation!r}; choose from: {', '.join(ACTIVATIONS)}")
        if self.code_dim < 1:
            raise VaelabError(f"code_dim must be >= 1, got {self.code_dim}")
        if self.codebook_size < 2:
            raise VaelabError(
                f"codebook_size must be >= 2 (one code carries no information about x), got {self.codebook_size}"
            )
        if min(self.hidden_channels, self.residual_channels) < 1:
            raise VaelabError("hidden_channels and residual_channels must be >= 1")
        if self.residual_blocks < 0 or self.downsample < 0:
            raise VaelabError(
                f"residual_blocks and downsample must be >= 0, got {self.residual_blocks} and {self.downsample}"
            )
        if not (math.isfinite(self.commitment) and self.commitment >= 0):
            raise VaelabError(f"commitment (β) must be a finite number >= 0, got {self.commitment}")
        if not 0 < self.decay < 1:
            raise VaelabError(f"decay must lie strictly between 0 and 1, got {self.decay}")
        if self.restart_after < 0:
            raise VaelabError(f"restart_after must be >= 0 steps (0: never restart), got {self.restart_after}")


@dataclass(frozen=True)
class VQVAE2Config(VQVAEConfig):
    top_downsample: int = 1  # further stride-2 steps from the bottom grid to the top grid

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.top_downsample < 1:
            raise VaelabError(f"top_downsample must be >= 1 (the top grid is coarser), got {self.top_downsample}")


def discrete_nll(px: Distribution, x: Tensor) -> Tensor | None:
    """−log P(x|z) of a discrete distribution per data point (nats), or None when p(x|z) has no discrete reading.

    Bernoulli: its own log-probability (exact on binary x). Gaussian: the mass of the 8-bit bin around x,
    Φ((x + δ − μ)/σ) − Φ((x − δ − μ)/σ), δ = 1/510, the edge bins open to ±∞ (as in PixelCNN++)."""
    base = getattr(px, "base_dist", px)
    if isinstance(base, Bernoulli):
        return -px.log_prob(x)
    if not isinstance(base, Normal):
        return None
    mu, sigma = base.loc, base.scale
    xf = x.float().expand_as(mu)
    delta = 0.5 / (BINS - 1)
    upper, lower = (xf + delta - mu) / sigma, (xf - delta - mu) / sigma
    lower_tail = (upper + lower) < 0  # take the difference of the smaller tail masses: no cancellation
    mass = torch.where(
        lower_tail,
        torch.special.ndtr(upper) - torch.special.ndtr(lower),
        torch.special.ndtr(-lower) - torch.special.ndtr(-upper),
    )
    density = Normal(mu, sigma, validate_args=False).log_prob(xf) + math.log(2 * delta)  # far out in a tail
    mid = torch.where(mass > 1e-10, mass.clamp_min(1e-30).log(), density)
    logp = torch.where(
        xf <= delta, torch.special.log_ndtr(upper), torch.where(xf >= 1 - delta, torch.special.log_ndtr(-lower), mid)
    )
    return -logp.flatten(1).sum(1)


def level_key(name: str, level: str) -> str:
    """A per-level name: ``name`` for a single level, ``name_top`` / ``name_bottom`` for VQ-VAE-2."""
    return f"{name}_{level}" if level else name


class VQModel(LikelihoodModel):
    """What VQ-VAE and VQ-VAE-2 share: levels of codes (top first), the padding, the loss, sampling from a prior."""

    Config = VQVAEConfig
    generative = True
    data_kinds = ("images",)
    config: VQVAEConfig
    levels: ClassVar[tuple[str, ...]] = ("",)
    #: stride-2 steps from the image to the coarsest grid
    steps: int = 0

    def __init__(self, config: VQVAEConfig, data: DataSpec | tuple[int, ...]) -> None:
        super().__init__(config, data)
        self.act = ACTIVATIONS[config.activation]
        shape = self.data_shape
        if len(shape) != 3:
            raise VaelabError(f"{type(self).__name__} models images (C, H, W), got data of shape {shape}")
        self.padded = padded_size(shape, self.total_steps(), self.steps_name(), config.pad)
        if self.padded != tuple(shape[1:]):
            self.notes.append(
                f"{shape[1]}x{shape[2]} images are zero-padded to {self.padded[0]}x{self.padded[1]}: "
                f"{self.total_steps()} stride-2 steps need sides divisible by {2 ** self.total_steps()} "
                "(the likelihood scores the original pixels only; --set pad=false refuses such images instead)"
            )
        object.__setattr__(self, "code_prior", None)  # a reference, not a submodule: its weights live in RUN/prior
        self.no_prior_reason = "no code prior has been fitted to this model's codes: run vaelab train-prior RUN first"

    def total_steps(self) -> int:
        return self.config.downsample

    def steps_name(self) -> str:
        return "downsample"

    def grid_after(self, steps: int) -> tuple[int, int]:
        f = 2**steps
        return self.padded[0] // f, self.padded[1] // f

    def pad_input(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        dh, dw = self.padded[0] - h, self.padded[1] - w
        if dh == dw == 0:
            return x
        return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))

    def crop_output(self, out: Tensor) -> Tensor:
        h, w = self.data_shape[1:]
        dh, dw = self.padded[0] - h, self.padded[1] - w
        return out[..., dh // 2 : dh // 2 + h, dw // 2 : dw // 2 + w]

    def likelihood_of(self, decoder_output: Tensor) -> Distribution:
        return self.likelihood(self.crop_output(decoder_output))

    def _quantizer(self) -> VectorQuantizer:
        c = self.config
        return VectorQuantizer(
            c.codebook_size,
            c.code_dim,
            c.commitment,
            ema=c.ema,
            decay=c.decay,
            kmeans_init=c.kmeans_init,
            restart_after=c.restart_after or None,
        )

    def _check_encoder(self, encoder: nn.Module, grid: tuple[int, int]) -> None:
        """The encoder must output code_dim channels on the code grid: a clear error now, not at the first batch."""
        with torch.no_grad():
            out = encoder(torch.zeros(1, self.data_shape[0], *self.padded))
        if out.dim() != 4 or out.shape[1] != self.config.code_dim:
            raise VaelabError(
                f"the encoder outputs {tuple(out.shape[1:])} per image, but code_dim is {self.config.code_dim}: "
                f"the codebook's vectors must have the encoder's channel count; set code_dim={out.shape[1]} "
                "or make the encoder end in code_dim channels"
                if out.dim() == 4
                else f"the encoder must output (B, code_dim, h, w) feature maps, got shape {tuple(out.shape)}"
            )
        if tuple(out.shape[2:]) != grid:
            raise VaelabError(f"the encoder outputs a {tuple(out.shape[2:])} grid, expected {grid}")

    # --- the levels: subclasses implement these four ------------------------------------------------------------

    def quantizers(self) -> dict[str, VectorQuantizer]:
        """Level name -> quantizer, top level first."""
        raise NotImplementedError

    def code_shapes(self) -> list[tuple[int, int]]:
        """The (h, w) of each level's code grid, top first."""
        raise NotImplementedError

    def quantize(self, x: Tensor) -> list[QuantizerOutput]:
        """The quantizer outputs of every level (top first) for x."""
        raise NotImplementedError

    def decode_quantized(self, quantized: list[Tensor]) -> Distribution:
        """p(x|z_q) from each level's quantized vectors (top first)."""
        raise NotImplementedError

    # --- the model API ---------------------------------------------------------------------------------------

    def encode(self, x: Tensor) -> Tensor:
        """The code indices of the first level as floats (B, h, w); ``codes`` gives every level as integers."""
        return self.codes(x)[0].float()

    @torch.no_grad()
    def codes(self, x: Tensor) -> list[Tensor]:
        """The code indices of every level, (B, h, w) each, top first; deterministic (no codebook update)."""
        was = self.training
        self.eval()
        try:
            return [o.codes for o in self.quantize(x)]
        finally:
            self.train(was)

    def code(self, x: Tensor) -> Tensor:
        """The quantized vectors of every level, flattened and concatenated: (B, Σ D·h·w)."""
        return torch.cat([o.quantized.flatten(1) for o in self.quantize(x)], 1)

    def decode_codes(self, codes: list[Tensor]) -> Distribution:
        return self.decode_quantized([q.lookup(c) for q, c in zip(self.quantizers().values(), codes)])

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode_quantized([o.quantized for o in self.quantize(x)]).mean

    def loss(self, x: Tensor, step: int | None = None) -> Loss:
        if step is None:
            self.check_data(x)
        outs = self.quantize(x)
        reconstruction = -self.decode_quantized([o.quantized for o in outs]).log_prob(x).mean()
        terms = {"reconstruction": reconstruction}
        total = reconstruction
        for level, out in zip(self.levels, outs):
            for name, value in out.losses.items():
                terms[level_key(name, level)] = value
                total = total + value
            terms[level_key("perplexity", level)] = out.perplexity
        return Loss(total, terms)

    def attach_prior(self, prior: CodeSampler | None, reason: str = "") -> None:
        """Sample from ``prior`` (a code prior fitted to this model's codes), or record why there is none."""
        object.__setattr__(self, "code_prior", prior)
        if reason:
            self.no_prior_reason = reason

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """Means of p(x|z_q) for codes drawn from the attached prior."""
        if self.code_prior is None:
            raise VaelabError(self.no_prior_reason)
        return self.decode_codes(self.code_prior.sample_codes(n)).mean


@MODELS.register("vqvae", "VQ-VAE: strided-conv encoder, vector-quantized code grid, residual decoder; PixelCNN prior")
class VQVAE(VQModel):
    def __init__(self, config: VQVAEConfig, data: DataSpec | tuple[int, ...], encoder: nn.Module | None = None) -> None:
        super().__init__(config, data)
        c = config
        self.grid = self.grid_after(c.downsample)
        channels = self.data_shape[0]
        self.encoder = encoder or nn.Sequential(
            StridedEncoder(channels, c.hidden_channels, c.residual_channels, c.residual_blocks, c.downsample, self.act),
            nn.Conv2d(c.hidden_channels, c.code_dim, 1),
        )
        self._check_encoder(self.encoder, self.grid)
        self.quantizer = self._quantizer()
        out = channels * self.likelihood.params_per_channel
        self.decoder = StridedDecoder(
            c.code_dim, c.hidden_channels, c.residual_channels, c.residual_blocks, c.downsample, out, self.act
        )

    def quantizers(self) -> dict[str, VectorQuantizer]:
        return {"": self.quantizer}

    def code_shapes(self) -> list[tuple[int, int]]:
        return [self.grid]

    def quantize(self, x: Tensor) -> list[QuantizerOutput]:
        return [self.quantizer(self.encoder(self.pad_input(x)))]

    def decode_quantized(self, quantized: list[Tensor]) -> Distribution:
        return self.likelihood_of(self.decoder(quantized[0]))


@MODELS.register("vqvae2", "VQ-VAE-2: two code levels (top conditions the bottom), decoder from both; PixelCNN priors")
class VQVAE2(VQModel):
    Config = VQVAE2Config
    config: VQVAE2Config
    levels = ("top", "bottom")

    def total_steps(self) -> int:
        return self.config.downsample + self.config.top_downsample

    def steps_name(self) -> str:
        c = self.config
        return f"downsample + top_downsample = {c.downsample} + {c.top_downsample}"

    def __init__(self, config: VQVAE2Config, data: DataSpec | tuple[int, ...]) -> None:
        super().__init__(config, data)
        c, act = config, self.act
        self.top_grid = self.grid_after(c.downsample + c.top_downsample)
        self.bottom_grid = self.grid_after(c.downsample)
        hid, res, blocks, d = c.hidden_channels, c.residual_channels, c.residual_blocks, c.code_dim
        self.encoder_bottom = StridedEncoder(self.data_shape[0], hid, res, blocks, c.downsample, act)
        self.encoder_top = StridedEncoder(hid, hid, res, blocks, c.top_downsample, act)
        self.pre_top = nn.Conv2d(hid, d, 1)
        self.quantizer_top = self._quantizer()
        self.decoder_top = StridedDecoder(d, hid, res, blocks, c.top_downsample, d, act)  # top codes -> bottom grid
        self.pre_bottom = nn.Conv2d(hid + d, d, 1)
        self.quantizer_bottom = self._quantizer()
        ups: list[nn.Module] = []
        for i in range(c.top_downsample):
            ups += [nn.ConvTranspose2d(d, d, 4, stride=2, padding=1), *([act()] if i < c.top_downsample - 1 else [])]
        self.upsample_top = nn.Sequential(*ups)
        out = self.data_shape[0] * self.likelihood.params_per_channel
        self.decoder = StridedDecoder(2 * d, hid, res, blocks, c.downsample, out, act)

    def quantizers(self) -> dict[str, VectorQuantizer]:
        return {"top": self.quantizer_top, "bottom": self.quantizer_bottom}

    def code_shapes(self) -> list[tuple[int, int]]:
        return [self.top_grid, self.bottom_grid]

    def quantize(self, x: Tensor) -> list[QuantizerOutput]:
        h_bottom = self.encoder_bottom(self.pad_input(x))
        top = self.quantizer_top(self.pre_top(self.encoder_top(h_bottom)))
        bottom = self.quantizer_bottom(self.pre_bottom(torch.cat([h_bottom, self.decoder_top(top.quantized)], 1)))
        return [top, bottom]

    def decode_quantized(self, quantized: list[Tensor]) -> Distribution:
        top, bottom = quantized
        return self.likelihood_of(self.decoder(torch.cat([self.upsample_top(top), bottom], 1)))

    @torch.no_grad()
    def reconstruct_levels(self, x: Tensor) -> dict[str, Tensor]:
        """Reconstructions from both levels, and from one level with the other's vectors set to zero."""
        top, bottom = (o.quantized for o in self.quantize(x))
        zero_t, zero_b = torch.zeros_like(top), torch.zeros_like(bottom)
        return {
            "both": self.decode_quantized([top, bottom]).mean,
            "top": self.decode_quantized([top, zero_b]).mean,
            "bottom": self.decode_quantized([zero_t, bottom]).mean,
        }

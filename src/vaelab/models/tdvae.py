"""TD-VAE, the temporal-difference VAE (Gregor et al. 2019): a state-space model of sequences with jumpy predictions.

A belief network (an LSTM or GRU over frame embeddings) summarises x_0..x_t as b_t, and p_B(z|b_t) is the belief
about the state z_t. Training uses pairs of time points t1 < t2 = t1 + delta, delta ~ U{1..D}; the loss of a pair
is the negative of the single-sample estimate

    l(t1, t2) = log p_D(x_t2|z_t2) + log p_B(z_t1|b_t1) + log p_T(z_t2|z_t1)
                - log p_B(z_t2|b_t2) - log q_S(z_t1|z_t2, b_t1, b_t2),
    z_t2 ~ p_B(z_t2|b_t2),   z_t1 ~ q_S(z_t1|z_t2, b_t1, b_t2)          (the smoothing posterior)

with the decoder p_D(x|z) (the shared backbones and likelihoods, over one frame) and the transition p_T(z_t2|z_t1).
With ``jump_input`` (the default) p_T and q_S also see delta (one-hot), so a jump of a chosen length can be asked
for; without it, as in the paper's equation, a jump is a step of unknown length in 1..D. With
``residual_transition`` (the default) p_T's mean is z_t1 + f(z_t1, delta): the identity plus a learned change.

Terms, in nats per sampled pair (one predicted frame x_t2), averaged over the pairs and the sequences:
    reconstruction = -log p_D(x_t2|z_t2)
    kl_t1          = log q_S(z_t1|z_t2, b_t1, b_t2) - log p_B(z_t1|b_t1)     smoothing posterior vs earlier belief
    kl_t2          = log p_B(z_t2|b_t2) - log p_T(z_t2|z_t1)                later belief vs transition
    elbo           = l(t1, t2) = -(reconstruction + kl_t1 + kl_t2)

Two layers (``layers=2``, the paper's hierarchical TD-VAE): z = [z1, z2] and every distribution over z is a chain,
upper layer first: p_B(z2|b) p_B(z1|b, z2), q_S(z2_t1|.) q_S(z1_t1|., z2_t1), p_T(z2_t2|z_t1) p_T(z1_t2|z_t1, z2_t2).

Two options keep the belief a filter (defaults: off, the paper's objective). A jumpy pair fits p_B(z_t2|b_t2) against
a prediction from delta frames back, which is wide for long jumps; under it, copying the last observation into the
belief is cheap, and a belief that tracks noisy observations predicts worse (on the oscillator: README). So
    one_step = w          adds -w * (1/(T-1)) sum_t l(t - 1, t), the same bound at every one-frame step;
    target_gradient=false the jumpy pairs treat the later belief as a fixed target (no gradient through z_t2 and
                          log p_B(z_t2|b_t2)), as TD learning treats its bootstrapped target: they train p_T, q_S
                          and the earlier belief, and the one-step term alone shapes p_B(z_t2|b_t2).

Rollouts: z_t ~ p_B(z|b_t), then z <- z' ~ p_T(z'|z, delta_k) for jumps delta_1, delta_2, ..., decoded by p_D.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution

from vaelab.core.errors import VaelabError
from vaelab.core.registry import Registry
from vaelab.models.base import MODELS, DataSpec, LatentConfig, Loss, VectorLatentModel
from vaelab.nn import ACTIVATIONS, build_encoder
from vaelab.nn.backbones import MLPEncoder
from vaelab.probability import Chain
from vaelab.probability.posteriors import DiagonalGaussian

SEQUENCE_DATA = "(T, C, H, W) or (T, D) per example, e.g. --data moving-mnist, moving-digits or oscillator"

#: the recurrent network that turns frame embeddings into beliefs b_t
BELIEF_NETWORKS: Registry[type[nn.RNNBase]] = Registry("belief network")
BELIEF_NETWORKS.register("lstm", "LSTM over the frame embeddings (the paper's choice)")(nn.LSTM)
BELIEF_NETWORKS.register("gru", "GRU over the frame embeddings")(nn.GRU)


@dataclass(frozen=True)
class TDVAEConfig(LatentConfig):
    latent_dim: int = 8  # size of the state z (of each layer with layers=2)
    max_jump: int = 4  # D: training jumps delta are drawn uniformly from 1..D
    pairs: int = 4  # (t1, t2) pairs drawn per sequence and step
    belief: str = "lstm"  # the belief network: lstm or gru
    belief_dim: int = 64  # size of b_t
    embed_dim: int = 64  # size of a frame's embedding (the frame encoder's output)
    state_hidden: tuple[int, ...] = (64,)  # MLP widths of p_B, q_S and p_T
    layers: int = 1  # 1, or 2 for the hierarchical state [z1, z2]
    jump_input: bool = True  # p_T and q_S see delta (one-hot); false: the paper's delta-free p_T(z_t2|z_t1)
    residual_transition: bool = True  # p_T's mean is z_t1 + f(z_t1, delta): the identity plus a learned change
    one_step: float = 0.0  # weight of the one-step term -l(t - 1, t) over every frame, beside the jumpy pairs
    target_gradient: bool = True  # false: the jumpy pairs treat the later belief p_B(z_t2|b_t2) as a fixed target

    def __post_init__(self) -> None:
        super().__post_init__()
        BELIEF_NETWORKS.get(self.belief)
        if self.max_jump < 1:
            raise VaelabError(f"max_jump (D; jumps are drawn from 1..D) must be >= 1, got {self.max_jump}")
        if self.layers not in (1, 2):
            raise VaelabError(f"layers must be 1 or 2 (the hierarchical two-layer state), got {self.layers}")
        if self.one_step < 0:
            raise VaelabError(f"one_step (the weight of the one-step term) must be >= 0, got {self.one_step}")
        if not self.target_gradient and not self.one_step:
            raise VaelabError(
                "target_gradient=false leaves the belief to the one-step term alone (the jumpy pairs treat it as a "
                "fixed target): give it a weight, e.g. --set one_step=1"
            )
        for key in ("pairs", "belief_dim", "embed_dim"):
            if getattr(self, key) < 1:
                raise VaelabError(f"{key} must be >= 1, got {getattr(self, key)}")
        if any(w < 1 for w in self.state_hidden):
            raise VaelabError(f"state_hidden must be positive widths, got {self.state_hidden}")


def _on_vectors(net: nn.Module, v: Tensor) -> Tensor:
    """Apply a (N, F) network over the leading dimensions of v (..., F)."""
    return net(v.reshape(-1, v.shape[-1])).view(*v.shape[:-1], -1)


def _at(seq: Tensor, t: Tensor) -> Tensor:
    """seq (B, T, ...) at times t (B, P): (B, P, ...)."""
    return seq[torch.arange(len(seq), device=seq.device)[:, None], t]


class GaussianState(nn.Module):
    """A conditional Gaussian over the state given a context c: N(mu(c), diag sigma(c)^2); with two layers the
    chain p(z2|c) p(z1|c, z2) over [z1, z2], the upper layer sampled first.

    ``residual``: the context starts with a state [z1, z2] and each layer's mean is its own part plus the network's
    output, mu = z + f(c): a transition that starts out as the identity and learns the change."""

    def __init__(
        self,
        context: int,
        latent_dim: int,
        layers: int,
        hidden: tuple[int, ...],
        act: type[nn.Module],
        residual: bool = False,
    ):
        super().__init__()
        self.latent_dim, self.layers, self.residual = latent_dim, layers, residual
        self.head = DiagonalGaussian(latent_dim)
        self.upper = MLPEncoder((context,), self.head.num_params, hidden, act)
        self.lower = MLPEncoder((context + latent_dim,), self.head.num_params, hidden, act) if layers == 2 else None

    def _gaussian(self, net: nn.Module, c: Tensor, layer: int) -> Distribution:
        out = _on_vectors(net, c)
        if self.residual:  # add z of this layer (layer 1: c[..., :D], layer 2: c[..., D:2D]) to the mean
            d = self.latent_dim
            out = out + F.pad(c[..., (layer - 1) * d : layer * d], (0, d))
        return self.head(out)

    def forward(self, c: Tensor) -> Distribution:
        upper = self._gaussian(self.upper, c, self.layers)
        if self.lower is None:
            return upper

        def lower(z2: Tensor) -> Distribution:
            return self._gaussian(self.lower, torch.cat([c.expand(*z2.shape[:-1], c.shape[-1]), z2], -1), 1)

        return Chain(upper, lower, self.latent_dim, flip=True)


@dataclass
class PairTerms:
    """The five log densities of l(t1, t2) for a batch of pairs (any batch shape) and the draws they used."""

    log_p_d: Tensor  # log p_D(x_t2|z_t2)
    log_p_b_t1: Tensor  # log p_B(z_t1|b_t1)
    log_p_t: Tensor  # log p_T(z_t2|z_t1)
    log_p_b_t2: Tensor  # log p_B(z_t2|b_t2)
    log_q_s: Tensor  # log q_S(z_t1|z_t2, b_t1, b_t2)
    z_t1: Tensor
    z_t2: Tensor

    @property
    def elbo(self) -> Tensor:
        return self.log_p_d + self.log_p_b_t1 + self.log_p_t - self.log_p_b_t2 - self.log_q_s


@dataclass
class Rollout:
    """Imagined futures: states (S, B, K, state) and decoded frame means (S, B, K, *frame) at times (K,)."""

    times: list[int]  # the landings, counted from the last observed frame (cumulative jumps)
    states: Tensor
    frames: Tensor


def plan_jumps(horizon: int, max_jump: int) -> list[int]:
    """The fewest jumps of at most max_jump frames that land exactly ``horizon`` frames ahead: D, D, ..., rest."""
    if horizon < 1:
        raise VaelabError(f"the horizon must be >= 1 frame, got {horizon}")
    whole, rest = divmod(horizon, max_jump)
    return [max_jump] * whole + ([rest] if rest else [])


@MODELS.register("tdvae", "TD-VAE: belief LSTM over frames, jumpy transitions trained on pairs (t1, t1 + delta)")
class TDVAE(VectorLatentModel):
    Config = TDVAEConfig
    sequential = True
    data_kinds = ("sequences",)
    config: TDVAEConfig

    def __init__(self, config: TDVAEConfig, data: DataSpec | tuple[int, ...]) -> None:
        shape = DataSpec.of(data).shape
        if len(shape) < 2:
            raise VaelabError(f"tdvae models sequences: {SEQUENCE_DATA}; got data of shape {shape} per example")
        super().__init__(config, data, decoder_input=config.latent_dim * config.layers)  # p_D(x|z) sees the state
        self.check_length(shape[0])
        d, layers = config.latent_dim, config.layers
        self.state_size = d * layers
        act = ACTIVATIONS[config.activation]
        jump = config.max_jump if config.jump_input else 0
        self.embed = build_encoder(config, self.frame_shape, config.embed_dim)
        self.belief_net = BELIEF_NETWORKS.get(config.belief)(config.embed_dim, config.belief_dim, batch_first=True)
        self.belief = GaussianState(config.belief_dim, d, layers, config.state_hidden, act)  # p_B(z|b)
        smoothing_input = self.state_size + 2 * config.belief_dim + jump
        self.smoothing = GaussianState(smoothing_input, d, layers, config.state_hidden, act)  # q_S(z_t1|z_t2,b_t1,b_t2)
        self.transition = GaussianState(  # p_T(z_t2|z_t1)
            self.state_size + jump, d, layers, config.state_hidden, act, residual=config.residual_transition
        )

    # -- checks ---------------------------------------------------------------------------------------------------

    def check_length(self, frames: int) -> None:
        d = self.config.max_jump
        if frames < 2:
            raise VaelabError(
                f"sequences of {frames} frame{'s' if frames != 1 else ''} hold no pair (t1, t2) to train on: tdvae "
                f"needs at least 2 frames, and {d + 1} for its max_jump={d}; use longer sequences (--set frames=...) "
                f"(tdvae models sequences: {SEQUENCE_DATA})"
            )
        if frames < d + 1:
            raise VaelabError(
                f"sequences of {frames} frames are shorter than the maximum jump max_jump={d} allows: a pair "
                f"(t1, t1 + {d}) needs at least {d + 1} frames; use longer sequences (--set frames=...) "
                f"or max_jump <= {frames - 1} (tdvae models sequences: {SEQUENCE_DATA})"
            )

    def as_batch(self, x: Tensor | Sequence[Tensor | np.ndarray]) -> Tensor:
        """x as a (B, T, *frame) tensor of this model's frame shape; a list of sequences is stacked."""
        if not isinstance(x, Tensor):
            x = stack_sequences(x).to(next(self.parameters()).device)
        if x.dim() != 2 + len(self.frame_shape) or tuple(x.shape[2:]) != self.frame_shape:
            raise VaelabError(
                f"expected a batch of sequences (B, T, {', '.join(map(str, self.frame_shape))}) for this model's "
                f"frames of shape {self.frame_shape}, got a tensor of shape {tuple(x.shape)}"
            )
        return x

    def check_jumps(self, jumps: Sequence[int]) -> list[int]:
        jumps, d = [int(j) for j in jumps], self.config.max_jump
        if not jumps or any(not 1 <= j <= d for j in jumps):
            raise VaelabError(
                f"jumps must be a non-empty list of frame counts in 1..max_jump={d} (the range the transition was "
                f"trained on), got {jumps}; longer horizons are several jumps, e.g. plan_jumps(h, {d})"
            )
        return jumps

    # -- the model's parts ----------------------------------------------------------------------------------------

    def beliefs(self, x: Tensor | Sequence[Tensor]) -> Tensor:
        """b_t for t = 0..T-1, the belief network's output after x_0..x_t: (B, T, belief_dim)."""
        x = self.as_batch(x)
        b, t = x.shape[:2]
        e = self.embed(x.reshape(b * t, *self.frame_shape)).view(b, t, -1)
        return self.belief_net(e)[0]

    def jump_code(self, delta: Tensor) -> Tensor:
        """delta (...) in 1..D as the input p_T and q_S see: one-hot (..., D), or nothing without jump_input."""
        if not self.config.jump_input:
            return delta.new_zeros((*delta.shape, 0), dtype=torch.float32)
        return F.one_hot(delta - 1, self.config.max_jump).float()

    def sample_pairs(self, batch: int, frames: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """``pairs`` pairs per sequence, (B, P) each: delta ~ U{1..D}, t1 ~ U{0..T-1-delta}, t2 = t1 + delta."""
        shape = (batch, self.config.pairs)
        delta = torch.randint(1, self.config.max_jump + 1, shape, device=device)
        t1 = (torch.rand(shape, device=device) * (frames - delta)).long()
        return t1, t1 + delta

    def pair_terms(
        self, x_t2: Tensor, b_t1: Tensor, b_t2: Tensor, delta: Tensor, target_gradient: bool = True
    ) -> PairTerms:
        """The terms of l(t1, t2) from one draw z_t2 ~ p_B(z|b_t2), z_t1 ~ q_S(z|z_t2, b_t1, b_t2)."""
        jump = self.jump_code(delta)
        p_b_t2 = self.belief(b_t2)
        z_t2 = p_b_t2.rsample()
        log_p_b_t2 = p_b_t2.log_prob(z_t2)
        if not target_gradient:  # semi-gradient, as TD learning treats its bootstrapped target
            z_t2, log_p_b_t2 = z_t2.detach(), log_p_b_t2.detach()
        q_s = self.smoothing(torch.cat([z_t2, b_t1, b_t2, jump], -1))
        z_t1 = q_s.rsample()
        p_t = self.transition(torch.cat([z_t1, jump], -1))
        return PairTerms(
            log_p_d=self.decode(z_t2).log_prob(x_t2),
            log_p_b_t1=self.belief(b_t1).log_prob(z_t1),
            log_p_t=p_t.log_prob(z_t2),
            log_p_b_t2=log_p_b_t2,
            log_q_s=q_s.log_prob(z_t1),
            z_t1=z_t1,
            z_t2=z_t2,
        )

    # -- the shared API -------------------------------------------------------------------------------------------

    def loss(self, x: Tensor, step: int | None = None) -> Loss:
        x = self.as_batch(x)
        if step is None:  # outside the trainer, which checks the whole training set once
            self.check_data(x)
        self.check_length(x.shape[1])
        b = self.beliefs(x)
        t1, t2 = self.sample_pairs(x.shape[0], x.shape[1], x.device)
        cfg = self.config
        terms = self.pair_terms(_at(x, t2), _at(b, t1), _at(b, t2), t2 - t1, cfg.target_gradient)
        reconstruction = -terms.log_p_d.mean()
        kl_t1 = (terms.log_q_s - terms.log_p_b_t1).mean()
        kl_t2 = (terms.log_p_b_t2 - terms.log_p_t).mean()
        total = reconstruction + kl_t1 + kl_t2
        named = {"reconstruction": reconstruction, "kl_t1": kl_t1, "kl_t2": kl_t2, "elbo": -total}
        if cfg.one_step:
            step = self.frame_elbo(x, b).mean()
            named["one_step_elbo"] = step
            return Loss(total - cfg.one_step * step, named)
        return Loss(total, named)

    def frame_elbo(self, x: Tensor, beliefs: Tensor | None = None) -> Tensor:
        """l(t - 1, t) for every t = 1..T-1 (jumps of one frame): (B, T - 1), nats per frame."""
        x = self.as_batch(x)
        b = self.beliefs(x) if beliefs is None else beliefs
        one = torch.ones(x.shape[0], x.shape[1] - 1, dtype=torch.long, device=x.device)
        return self.pair_terms(x[:, 1:], b[:, :-1], b[:, 1:], one).elbo

    def encode(self, x: Tensor) -> Distribution:
        """The beliefs p_B(z_t|b_t) about every frame's state: batch shape (B, T)."""
        return self.belief(self.beliefs(x))

    def code(self, x: Tensor) -> Tensor:
        """The mean belief about the state after the last frame: (B, state)."""
        return self.belief(self.beliefs(x)[:, -1]).mean

    def reconstruct(self, x: Tensor) -> Tensor:
        """Filtered reconstructions: p_D's mean at the mean belief of each frame, (B, T, *frame)."""
        return self.decode(self.encode(x).mean).mean

    def sample(self, n: int) -> Tensor:
        raise VaelabError(
            "tdvae predicts futures from observed frames, it has no prior over whole sequences: use "
            "`vaelab predict RUN` or model.rollout(x, jumps)"
        )

    # -- rollouts -------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def imagine(self, belief: Tensor, jumps: Sequence[int], samples: int = 1) -> Tensor:
        """States at the landings of the jumps from beliefs (B, belief_dim): (samples, B, len(jumps), state)."""
        z = self.belief(belief).sample((samples,))
        landings = []
        for delta in self.check_jumps(jumps):
            code = self.jump_code(torch.full(z.shape[:-1], delta, dtype=torch.long, device=z.device))
            z = self.transition(torch.cat([z, code], -1)).sample()
            landings.append(z)
        return torch.stack(landings, -2)

    @torch.no_grad()
    def rollout(self, x: Tensor | Sequence[Tensor], jumps: Sequence[int], samples: int = 1) -> Rollout:
        """Imagine the future of observed frames x (B, C, *frame): z_{C-1} ~ p_B(z|b_{C-1}), then one jump after
        another; frames are the means of p_D at the landings, times counted from the last observed frame."""
        states = self.imagine(self.beliefs(x)[:, -1], jumps, samples)
        times = np.cumsum(self.check_jumps(jumps)).tolist()
        return Rollout(times, states, self.decode(states).mean)


def stack_sequences(sequences: Sequence[Tensor | np.ndarray]) -> Tensor:
    """One (N, T, *frame) float batch from N sequences (T, *frame); frames and lengths must agree."""
    if len(sequences) == 0:
        raise VaelabError("no sequences to stack: give at least one (T, *frame) sequence")
    seqs = [torch.as_tensor(s, dtype=torch.float32) for s in sequences]
    first = seqs[0]
    for i, s in enumerate(seqs):
        if s.dim() < 2:
            raise VaelabError(f"sequence {i} has shape {tuple(s.shape)}; a sequence is (T, C, H, W) or (T, D)")
        if s.shape[1:] != first.shape[1:]:
            raise VaelabError(
                f"mismatched frame shapes in one batch: sequence {i} has frames of shape {tuple(s.shape[1:])}, "
                f"sequence 0 has {tuple(first.shape[1:])}; resize them to one frame shape"
            )
        if len(s) != len(first):
            raise VaelabError(
                f"sequence {i} has {len(s)} frames and sequence 0 has {len(first)}; crop them to one length"
            )
    return torch.stack(seqs)

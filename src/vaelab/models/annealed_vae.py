"""Capacity-annealed β-VAE (Burgess et al. 2018, "Understanding disentangling in β-VAE").

    loss = -E_q(z|x)[log p(x|z)] + γ |KL(q(z|x) || p(z)) - C|,     C = C_max min(1, step / capacity_steps)

The KL "capacity" C grows linearly from 0 to C_max nats over ``capacity_steps`` training steps, so the code is let
carry information a little at a time and the factors that help reconstruction most are encoded first. At evaluation
(no step) C = C_max, the objective the schedule ends at. The term ``capacity`` reports the current C; the KL inside
|.| is the batch mean (as in the paper), with free bits if set.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor
from torch.distributions import Distribution

from vaelab.core.errors import VaelabError
from vaelab.models.base import MODELS
from vaelab.models.betavae import BetaVAE
from vaelab.models.vae import VAEConfig


@dataclass(frozen=True)
class AnnealedVAEConfig(VAEConfig):
    gamma: float = 1000.0  # weight of |KL - C| (Burgess et al.: 1000)
    capacity_max: float = 25.0  # C_max, nats (Burgess et al.: 25 on dSprites)
    capacity_steps: int = 100_000  # steps over which C rises linearly from 0 to C_max; 0: C_max from the start

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.gamma > 0:
            raise VaelabError(f"gamma must be > 0, got {self.gamma}")
        if not self.capacity_max >= 0:
            raise VaelabError(f"capacity_max (C_max, nats) must be >= 0, got {self.capacity_max}")
        if self.capacity_steps < 0:
            raise VaelabError(f"capacity_steps must be >= 0, got {self.capacity_steps}")
        if self.beta != 1.0 or self.kl_warmup_steps:
            raise VaelabError(
                "annealed-vae weighs the KL with gamma and schedules it with capacity_max/capacity_steps; "
                "beta and kl_warmup_steps do not apply"
            )


@MODELS.register("annealed-vae", "capacity-annealed beta-VAE (Burgess 2018): gamma |KL - C|, C rising to C_max")
class AnnealedVAE(BetaVAE):
    Config = AnnealedVAEConfig
    config: AnnealedVAEConfig

    def capacity(self, step: int | None) -> float:
        """C at a training step: C_max step / capacity_steps, capped at C_max; C_max at evaluation (None)."""
        cfg = self.config
        if step is None or cfg.capacity_steps == 0:
            return cfg.capacity_max
        return cfg.capacity_max * min(1.0, step / cfg.capacity_steps)

    def regularizer(
        self, q: Distribution, p: Distribution, kl: Tensor, step: int | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        c = self.capacity(step)
        penalty = self.config.gamma * (self.kl_penalty(q, p, kl) - c).abs()
        return penalty, {"capacity": kl.new_tensor(c)}

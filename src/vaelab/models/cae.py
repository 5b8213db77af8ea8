"""Contractive autoencoder (Rifai et al. 2011): a code that barely moves when the input moves.

    loss = -log p(x | h = f(x)) + λ ‖J_f(x)‖_F²,      J_f(x) = ∂h/∂x   (D × d per data point)

For a one-layer encoder h = σ(Wx + b) with an elementwise σ, J = diag(σ'(a)) W and the penalty is closed-form,

    ‖J_f(x)‖_F² = Σ_j σ'(a_j)² Σ_i W_ji²,      = Σ_j (h_j (1 − h_j))² Σ_i W_ji²  for the paper's sigmoid,

one matrix product (σ'(a) comes from one forward-mode pass, ``jvp``). Any deeper encoder gets its exact
Jacobian, batched with torch.func: vmap over jacfwd (d forward passes) when the input is smaller than
the code, else over jacrev (D backward passes); that costs about d (or D) times a forward pass.
The penalty's gradient differentiates the Jacobian, so the encoder must be smooth: relu and leaky_relu
(whose second derivative vanishes) are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import jacfwd, jacrev, jvp, vmap

from vaelab.core.errors import VaelabError
from vaelab.models.ae import AEConfig, AutoEncoder
from vaelab.models.base import MODELS, DataSpec, Loss
from vaelab.nn.backbones import MLPEncoder

NON_SMOOTH = ("relu", "leaky_relu")
SMOOTH_ACTIVATIONS = "sigmoid, tanh, softplus, elu, gelu (and linear for the code)"
JACOBIAN_BUDGET = 2**25  # Jacobian entries held at once; bounds memory for large codes and batches


def contraction_closed_form(weight: Tensor, slope: Tensor) -> Tensor:
    """‖J‖_F² of h = σ(Wx + b) for each row of slope = σ'(Wx + b) (B, D): Σ_j σ'(a_j)² Σ_i W_ji²; W (D, d)."""
    return slope.float().pow(2) @ weight.float().pow(2).sum(1)


def contraction_exact(f: Callable[[Tensor], Tensor], x: Tensor, code_size: int) -> Tensor:
    """‖∂f(x)/∂x‖_F² of each example of x, from the exact Jacobians of the batched map f: (B, ...) -> (B, D)."""

    def one(xi: Tensor) -> Tensor:
        return f(xi.unsqueeze(0)).squeeze(0)

    jacobian = jacfwd(one) if x[0].numel() < code_size else jacrev(one)
    chunk = max(1, JACOBIAN_BUDGET // (x[0].numel() * code_size))
    return vmap(jacobian, chunk_size=chunk)(x).float().pow(2).flatten(1).sum(1)


@dataclass(frozen=True)
class CAEConfig(AEConfig):
    hidden: tuple[int, ...] = ()
    activation: str = "sigmoid"
    code_activation: str = "sigmoid"
    contraction: float = 0.1  # λ, the weight of ‖J_f(x)‖_F²

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.contraction >= 0:
            raise VaelabError(
                f"contraction (λ, the weight of the Jacobian penalty) must be >= 0, got {self.contraction}"
            )


@MODELS.register("cae", "contractive autoencoder: λ‖J_f(x)‖_F², closed form (one layer) or exact batched Jacobian")
class ContractiveAutoEncoder(AutoEncoder):
    Config = CAEConfig
    config: CAEConfig

    def __init__(self, config: CAEConfig, data: DataSpec | tuple[int, ...]) -> None:
        super().__init__(config, data)
        # activation too, even where the default one-layer encoder has no hidden layer that uses it: a non-smooth
        # choice is refused, never silently ignored
        for key, value in (("activation", config.activation), ("code_activation", config.code_activation)):
            if value in NON_SMOOTH:
                raise VaelabError(
                    f"the contractive penalty needs a differentiable encoder (its gradient differentiates the "
                    f"Jacobian), but {key}={value} is not smooth; choose {key} from: {SMOOTH_ACTIVATIONS}"
                )
        self.closed_form = isinstance(self.encoder, MLPEncoder) and len(self.encoder.net) <= 2  # one layer

    def code_and_contraction(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The code h = f(x) and ‖J_f(x)‖_F² of each data point."""
        if self.closed_form:
            linear, activation = self.encoder.net[0], self.encoder.net[1:]  # σ: one elementwise module, or none
            a = linear(x.flatten(1))
            h, slope = jvp(activation, (a,), (torch.ones_like(a),))  # σ(a) and σ'(a), elementwise
            return h, contraction_closed_form(linear.weight, slope)
        h = self.encode(x)
        return h, contraction_exact(self.encoder, x, h.shape[-1])

    def loss(self, x: Tensor, step: int | None = None) -> Loss:
        if step is None:  # outside the trainer, which checks the whole training set once
            self.check_data(x)
        h, jacobian_norm = self.code_and_contraction(x)
        reconstruction = -self.decode(h).log_prob(x).mean()
        contraction = jacobian_norm.mean()
        total = reconstruction + self.config.contraction * contraction
        return Loss(total, {"reconstruction": reconstruction, "contraction": contraction})

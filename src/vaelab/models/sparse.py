"""Sparse autoencoder (Ng, "Sparse autoencoder" notes; Lee et al. 2008): hidden units that are mostly off.

    ŝ_j = (1/B) Σ_b h_j(x_b)                       the mean activation of unit j over the batch
    kl:  Ω = Σ_j KL(Bernoulli(s) ‖ Bernoulli(ŝ_j))   (sigmoid units; s = sparsity_target)
    l1:  Ω = (1/B) Σ_b Σ_j |h_j(x_b)|
    loss = -log p(x | f(x)) + β Ω

Ω sums over the units of every chosen layer (``sparse_layers``, the code by default). The KL term is
a function of the batch's mean activations, so, unlike the reconstruction, it is a per-batch
quantity in nats, not an average over data points. The defaults are the papers' one-layer sigmoid
encoder, where the code is the hidden layer.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor
from torch.distributions import Bernoulli, kl_divergence

from vaelab.core.errors import VaelabError
from vaelab.models.ae import AEConfig, AutoEncoder
from vaelab.models.base import MODELS, DataSpec, Loss
from vaelab.nn import resolve_backbone

PENALTIES = ("kl", "l1")
EPS = 1e-6


def kl_sparsity(h: Tensor, target: float) -> Tensor:
    """Σ_j KL(Bernoulli(s) ‖ Bernoulli(ŝ_j)), with ŝ_j the batch mean of unit j of h (B, units) in (0, 1)."""
    s_hat = h.float().mean(0).clamp(EPS, 1 - EPS)  # a saturated unit gives a large, finite penalty
    return kl_divergence(Bernoulli(probs=s_hat.new_tensor(target)), Bernoulli(probs=s_hat)).sum()


def l1_sparsity(h: Tensor) -> Tensor:
    """Σ_j |h_j| per data point, averaged over the batch."""
    return h.float().abs().sum(1).mean()


@dataclass(frozen=True)
class SparseAEConfig(AEConfig):
    hidden: tuple[int, ...] = ()
    activation: str = "sigmoid"
    code_activation: str = "sigmoid"
    penalty: str = "kl"  # kl: KL(s ‖ ŝ_j) on mean activations; l1: |h_j| on every activation
    sparsity_target: float = 0.05  # s, the target mean activation of the KL penalty
    beta: float = 3.0  # weight of the sparsity penalty
    sparse_layers: tuple[int, ...] = (-1,)  # encoder layers penalized: 0 the first hidden layer, -1 the code

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.penalty not in PENALTIES:
            raise VaelabError(f"unknown penalty {self.penalty!r}; choose from: {', '.join(PENALTIES)}")
        if not 0 < self.sparsity_target < 1:
            raise VaelabError(f"sparsity_target must be in (0, 1), got {self.sparsity_target}")
        if not self.beta >= 0:
            raise VaelabError(f"beta (the weight of the sparsity penalty) must be >= 0, got {self.beta}")
        if not self.sparse_layers:
            raise VaelabError("sparse_layers must name at least one encoder layer (-1 is the code)")


@MODELS.register("sparse-ae", "sparse autoencoder: β Σ_j KL(s‖ŝ_j) on mean activations (or an L1 penalty)")
class SparseAutoEncoder(AutoEncoder):
    Config = SparseAEConfig
    config: SparseAEConfig

    def __init__(self, config: SparseAEConfig, data: DataSpec | tuple[int, ...]) -> None:
        super().__init__(config, data)
        mlp = resolve_backbone(config, self.data_shape) == "mlp"
        depth = len(config.hidden if mlp else config.channels) + 1  # hidden layers, then the code
        if any(not -depth <= i < depth for i in config.sparse_layers):
            raise VaelabError(
                f"sparse_layers must be in [{-depth}, {depth - 1}] (the encoder has {depth} layers: "
                f"0 is the first hidden layer, {depth - 1} or -1 the code), got {config.sparse_layers}"
            )
        self.layers = sorted({i % depth for i in config.sparse_layers})
        if config.penalty == "kl":
            for i in self.layers:
                key = "code_activation" if i == depth - 1 else "activation"
                if getattr(config, key) != "sigmoid":
                    raise VaelabError(
                        f"the KL sparsity penalty compares mean activations with a Bernoulli(s), so layer {i} needs "
                        f"sigmoid units in (0, 1), but {key}={getattr(config, key)}; "
                        f"set {key}=sigmoid, or use penalty=l1"
                    )

    def sparsity(self, layers: list[Tensor]) -> Tensor:
        """Ω summed over the chosen layers, each flattened to (B, units)."""
        chosen = [layers[i].flatten(1) for i in self.layers]
        if self.config.penalty == "kl":
            return sum(kl_sparsity(h, self.config.sparsity_target) for h in chosen)
        return sum(l1_sparsity(h) for h in chosen)

    def loss(self, x: Tensor, step: int | None = None) -> Loss:
        if step is None:  # outside the trainer, which checks the whole training set once
            self.check_data(x)
        layers = self.encoder.activations(x)  # hidden activations, the code h = f(x) last
        reconstruction = -self.decode(layers[-1]).log_prob(x).mean()
        sparsity = self.sparsity(layers)
        total = reconstruction + self.config.beta * sparsity
        return Loss(total, {"reconstruction": reconstruction, "sparsity": sparsity})

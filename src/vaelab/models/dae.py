"""Denoising autoencoder (Vincent et al. 2008): reconstruct the clean x from a corrupted x̃.

    x̃ ~ M(x̃|x),   loss = -log p(x | h = f(x̃))

The corruption M is applied in training only (the code of a trained DAE is f(x) of clean data);
see ``vaelab.probability.corruption`` for the processes. The defaults are the paper's one-layer sigmoid encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from vaelab.models.ae import AEConfig, AutoEncoder
from vaelab.models.base import MODELS, DataSpec
from vaelab.probability.corruption import CORRUPTIONS


@dataclass(frozen=True)
class DAEConfig(AEConfig):
    hidden: tuple[int, ...] = ()
    code_activation: str = "sigmoid"
    corruption: str = "masking"  # gaussian, masking or salt-and-pepper
    noise: float = 0.25  # σ of gaussian noise, or the fraction of masked / salt-and-pepper components

    def __post_init__(self) -> None:
        super().__post_init__()
        CORRUPTIONS.get(self.corruption)(self.noise)  # checks the name and the noise level's range


@MODELS.register("dae", "denoising autoencoder: reconstruct x from x̃ ~ M(x̃|x) (gaussian, masking, salt-and-pepper)")
class DenoisingAutoEncoder(AutoEncoder):
    Config = DAEConfig
    config: DAEConfig

    def __init__(self, config: DAEConfig, data: DataSpec | tuple[int, ...]) -> None:
        super().__init__(config, data)
        self.corruption = CORRUPTIONS.get(config.corruption)(config.noise)

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(self.corruption(x))  # f(x̃) in training, f(x) in eval mode

"""Models, found by name through ``MODELS``; importing this package registers them all."""

from vaelab.models import (  # noqa: F401  (registration)
    ae,
    annealed_vae,
    beta_tcvae,
    betavae,
    cae,
    dae,
    iwae,
    ksparse,
    sparse,
    tdvae,
    vae,
    vqvae,
)
from vaelab.models.base import MODELS, Loss, Model, ModelConfig, build_model

__all__ = ["MODELS", "Loss", "Model", "ModelConfig", "build_model"]

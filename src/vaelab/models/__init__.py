"""Models, found by name through ``MODELS``; importing this package registers them all."""

from vaelab.models import ae, cae, dae, iwae, ksparse, sparse, tdvae, vae  # noqa: F401  (registration)
from vaelab.models.base import MODELS, Loss, Model, ModelConfig, build_model

__all__ = ["MODELS", "Loss", "Model", "ModelConfig", "build_model"]

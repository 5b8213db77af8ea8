"""Models, found by name through ``MODELS``; importing this package registers them all."""

from vaelab.models import (  # noqa: F401  (registration)
    ae,
    annealed_vae,
    beta_tcvae,
    betavae,
    cae,
    code_prior,
    dae,
    factor_vae,
    iwae,
    ksparse,
    linear_gaussian,
    sparse,
    tdvae,
    vae,
    vqvae,
)
from vaelab.models.base import (
    DATA_KINDS,
    MODELS,
    DataSpec,
    LikelihoodModel,
    Loss,
    Model,
    ModelConfig,
    VectorLatentModel,
    build_model,
    model_from_spec,
)

__all__ = [
    "DATA_KINDS",
    "MODELS",
    "DataSpec",
    "LikelihoodModel",
    "Loss",
    "Model",
    "ModelConfig",
    "VectorLatentModel",
    "build_model",
    "model_from_spec",
]

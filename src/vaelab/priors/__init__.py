"""Learned priors over the discrete codes of VQ models: gated PixelCNNs, trained on a frozen run's codes."""

from vaelab.priors.pixelcnn import GatedPixelCNN
from vaelab.priors.prior import (
    VQ_MODELS,
    CodePrior,
    PriorConfig,
    PriorTrainConfig,
    fit_prior,
    is_vq,
    load_prior,
    load_without_prior,
    train_prior,
)

__all__ = [
    "VQ_MODELS",
    "CodePrior",
    "GatedPixelCNN",
    "PriorConfig",
    "PriorTrainConfig",
    "fit_prior",
    "is_vq",
    "load_prior",
    "load_without_prior",
    "train_prior",
]

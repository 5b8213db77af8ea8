"""Figures, registered by model type (``registry``): common grids and curves (``figures``), autoencoder features,
latent spaces, traversals, VQ codes, sequence rollouts. Importing this package registers them all."""

from vaelab.viz import features, gaps, latents, sequences, traversals, vq  # noqa: F401  (registration)
from vaelab.viz.figures import save_images, save_samples, training_figures
from vaelab.viz.registry import LATENT_FIGURES, REPORT_FIGURES, RUN_FIGURES, TRAVERSAL_FIGURES

__all__ = [
    "LATENT_FIGURES",
    "REPORT_FIGURES",
    "RUN_FIGURES",
    "TRAVERSAL_FIGURES",
    "save_images",
    "save_samples",
    "training_figures",
]

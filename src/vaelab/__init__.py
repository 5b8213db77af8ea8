"""vaelab: the autoencoder family, from the plain autoencoder to the VAE, in PyTorch."""

from vaelab.api import make_run_config, resume, train
from vaelab.data import DATASETS, DataConfig, load_dataset
from vaelab.errors import VaelabError
from vaelab.evaluate import evaluate, evaluate_model
from vaelab.features import probe
from vaelab.models import MODELS, Loss, Model, build_model
from vaelab.run import Run, RunConfig, load

__version__ = "0.1.0"

__all__ = [
    "DATASETS",
    "MODELS",
    "DataConfig",
    "Loss",
    "Model",
    "Run",
    "RunConfig",
    "VaelabError",
    "build_model",
    "evaluate",
    "evaluate_model",
    "load",
    "load_dataset",
    "make_run_config",
    "probe",
    "resume",
    "train",
]

"""vaelab: the autoencoder family, from the plain autoencoder to the VAE, in PyTorch.

The layers, each importing only those below it: ``core`` <- ``probability``, ``nn`` <- ``models`` <- ``data`` <-
``runs`` <- ``training`` <- ``eval`` <- ``viz`` <- ``presets`` <- ``sweeps`` <- ``api``
<- ``cli``.
"""

from vaelab.api import aggregate, resume, sweep, train, train_prior
from vaelab.core.errors import VaelabError
from vaelab.core.version import VERSION
from vaelab.data import DATASETS, DataConfig, load_dataset
from vaelab.eval import evaluate, evaluate_model, probe
from vaelab.models import MODELS, DataSpec, Loss, Model, build_model
from vaelab.probability import PRIORS
from vaelab.runs import Run, RunConfig, from_pretrained, load, make_run_config

__version__ = VERSION

__all__ = [
    "DATASETS",
    "MODELS",
    "PRIORS",
    "DataConfig",
    "DataSpec",
    "Loss",
    "Model",
    "Run",
    "RunConfig",
    "VaelabError",
    "aggregate",
    "build_model",
    "evaluate",
    "evaluate_model",
    "from_pretrained",
    "load",
    "load_dataset",
    "make_run_config",
    "probe",
    "resume",
    "sweep",
    "train",
    "train_prior",
]

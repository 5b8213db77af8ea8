"""pythae's own VAE reproduction on statically binarized MNIST, trained by pythae: the other side of
``static_mnist.py``.

pythae 0.1.2's ``examples/scripts/reproducibility/vae.py`` networks (784-400 ReLU, two 400→40 heads for the mean and
the log-variance; 40-400 ReLU-784 sigmoid), its ``VAE`` with ``reconstruction_loss="bce"``, its ``BaseTrainer`` with
Adam lr 1e-4, batch 100 and the script's ``MultiStepLR`` (milestones 200, 350, 500, 750, 1000, γ = 10^(−1/5)), seed
123 as there, on Larochelle's 50k train / 10k valid split read from ``VAELAB_DATA``. At the end: the validation
−ELBO of the final model and its test NLL by pythae's ``get_nll`` at K = ``--k`` (200, the K of the 89.78 nats in
pythae's reproducibility table), the final model as the script evaluates it. vaelab's side of the comparison is
``static_mnist.py --stages E --k 200``: the same setting through vaelab's trainer.

pythae is this benchmark's optional dependency, never vaelab's: run it in a scratch venv.

    python3 -m venv /tmp/venv-pythae && /tmp/venv-pythae/bin/pip install "torch==2.13.0" "pythae==0.1.2"
    VAELAB_DATA=/work/shared/data OMP_NUM_THREADS=1 /tmp/venv-pythae/bin/python benchmarks/static_mnist_pythae.py \
        --epochs 50 --out /tmp/pythae-static-mnist
Results: one JSON line on stdout (and OUT/result.json); pythae's per-epoch "Eval loss" lines on its log.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from pythae.data.preprocessors import DataProcessor
from pythae.models import VAE, VAEConfig
from pythae.models.base.base_utils import ModelOutput
from pythae.models.nn import BaseDecoder, BaseEncoder
from pythae.trainers import BaseTrainer, BaseTrainerConfig
from torch import nn


class Encoder(BaseEncoder):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(784, 400), nn.ReLU())
        self.embedding = nn.Linear(400, 40)
        self.log_var = nn.Linear(400, 40)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        h = self.layers(x.reshape(-1, 784))
        return ModelOutput(embedding=self.embedding(h), log_covariance=self.log_var(h))


class Decoder(BaseDecoder):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(40, 400), nn.ReLU(), nn.Linear(400, 784), nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> ModelOutput:
        return ModelOutput(reconstruction=self.layers(z).reshape(z.shape[0], 1, 28, 28))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--k", type=int, default=200, help="importance samples of get_nll")
    parser.add_argument("--out", type=Path, default=Path("/tmp/pythae-static-mnist"))
    args = parser.parse_args()
    arrays = np.load(Path(os.environ["VAELAB_DATA"]) / "binarized-mnist" / "binarized_mnist.npz")
    train, valid, test = (arrays[k].astype(np.float32) for k in ("train", "valid", "test"))
    processor = DataProcessor()
    train_set, valid_set = (
        processor.to_dataset(processor.process_data(a).reshape(-1, 1, 28, 28)) for a in (train, valid)
    )
    torch.manual_seed(123)
    model = VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=40, reconstruction_loss="bce"), Encoder(), Decoder())
    config = BaseTrainerConfig(
        output_dir=str(args.out),
        per_device_train_batch_size=100,
        per_device_eval_batch_size=100,
        num_epochs=args.epochs,
        learning_rate=1e-4,
        optimizer_cls="Adam",
        scheduler_cls="MultiStepLR",
        scheduler_params={"milestones": [200, 350, 500, 750, 1000], "gamma": 10 ** (-1 / 5)},
        steps_saving=None,
        no_cuda=True,
    )
    start = time.perf_counter()
    BaseTrainer(model=model, train_dataset=train_set, eval_dataset=valid_set, training_config=config).train()
    train_s = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        x = torch.from_numpy(valid).reshape(-1, 1, 28, 28)
        val_loss = sum(float(model({"data": x[i : i + 500]}).loss) * len(x[i : i + 500]) for i in range(0, len(x), 500))
        start = time.perf_counter()
        log_px = model.get_nll(torch.from_numpy(test).reshape(-1, 1, 28, 28), n_samples=args.k, batch_size=100)
    result = {
        "epochs": args.epochs,
        "val_elbo": -val_loss / len(x),
        "k": args.k,
        "test_nll": -float(log_px),  # get_nll returns the mean log p(x), negative: its sign is flipped here
        "train_s": round(train_s, 1),
        "eval_s": round(time.perf_counter() - start, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

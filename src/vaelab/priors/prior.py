"""The learned prior of a VQ run: gated PixelCNNs over its frozen codes, trained by ``vaelab train-prior RUN``.

    VQ-VAE:    p(k) = PixelCNN(k)
    VQ-VAE-2:  p(k_top, k_bottom) = PixelCNN_top(k_top) · PixelCNN_bottom(k_bottom | k_top)

The codes of the training set are computed once with the frozen model (a fixed binarization for Bernoulli
models trained on dynamically binarized data) and kept on the device; the prior is fitted by maximum likelihood
(cross-entropy, nats per image) with Adam, and the weights of the best validation epoch are kept in

    RUN/prior/config.json        architecture, training options, the result (val / test NLL)
    RUN/prior/model.safetensors  weights
    RUN/prior/metrics.jsonl      one line per epoch
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from vaelab.config import make_config
from vaelab.errors import VaelabError
from vaelab.priors.pixelcnn import GatedPixelCNN

if TYPE_CHECKING:
    from vaelab.data import Dataset
    from vaelab.models.vqvae import VQModel
    from vaelab.run import Run

PRIOR_FORMAT = "vaelab-prior"
PRIOR_DIR = "prior"
VQ_MODELS = ("vqvae", "vqvae2")


@dataclass
class PriorConfig:
    channels: int = 32  # width of the gated layers (64-128 on a GPU)
    layers: int = 6
    kernel: int = 5  # odd; the receptive field grows by kernel // 2 rows and columns per layer

    def __post_init__(self) -> None:
        if self.channels < 1 or self.layers < 1:
            raise VaelabError(f"prior channels and layers must be >= 1, got {self.channels} and {self.layers}")
        if self.kernel < 3 or self.kernel % 2 == 0:
            raise VaelabError(f"the prior's kernel must be odd and >= 3, got {self.kernel}")


@dataclass
class PriorTrainConfig:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise VaelabError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        if not self.lr > 0:
            raise VaelabError(f"lr must be > 0, got {self.lr}")


class CodePrior(nn.Module):
    """One PixelCNN per level of codes; each level after the first is conditioned on the level above it."""

    def __init__(self, num_codes: int, levels: int, config: PriorConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.levels = nn.ModuleList(
            GatedPixelCNN(num_codes, c.channels, c.layers, c.kernel, cond_codes=num_codes if i else 0)
            for i in range(levels)
        )

    def level_nll(self, codes: list[Tensor]) -> list[Tensor]:
        """−log p of each level's codes (B,) in nats, given the levels above it."""
        return [net.nll(k, codes[i - 1] if i else None) for i, (net, k) in enumerate(zip(self.levels, codes))]

    def nll(self, codes: list[Tensor]) -> Tensor:
        """−log p(all levels' codes) per image (B,), in nats."""
        return torch.stack(self.level_nll(codes)).sum(0)

    @torch.no_grad()
    def sample(self, n: int, shapes: list[tuple[int, int]]) -> list[Tensor]:
        codes: list[Tensor] = []
        for i, (net, size) in enumerate(zip(self.levels, shapes)):
            codes.append(net.sample(n, size, codes[i - 1] if i else None))
        return codes


def is_vq(model: nn.Module) -> bool:
    from vaelab.models.vqvae import VQModel

    return isinstance(model, VQModel)


def build_prior(model: VQModel, config: PriorConfig) -> CodePrior:
    return CodePrior(model.config.codebook_size, len(model.code_shapes()), config)


def load_prior(run_dir: Path, model: VQModel) -> CodePrior | None:
    """The prior of RUN/prior/, or None when there is none yet."""
    folder = Path(run_dir) / PRIOR_DIR
    if not (folder / "config.json").is_file():
        return None
    try:
        d = json.loads((folder / "config.json").read_text())
        if d.get("format") != PRIOR_FORMAT:
            raise ValueError("not a prior config")
        prior = build_prior(model, make_config(PriorConfig, d["prior"], "prior"))
        prior.load_state_dict(load_file(str(folder / "model.safetensors")))
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise VaelabError(
            f"the prior in {folder} is corrupt or does not fit the model ({first}); "
            f"retrain it: vaelab train-prior {run_dir}"
        ) from None
    return prior.to(next(model.parameters()).device).eval()


@torch.no_grad()
def split_codes(model: VQModel, x: Tensor, batch_size: int) -> list[Tensor]:
    """Every level's codes of a whole split, computed once in batches."""
    parts = [model.codes(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return [torch.cat([p[level] for p in parts]) for level in range(len(parts[0]))] if parts else []


@torch.no_grad()
def mean_nll(prior: CodePrior, codes: list[Tensor], batch_size: int) -> float:
    prior.eval()
    n = len(codes[0])
    total = sum(float(prior.nll([c[i : i + batch_size] for c in codes]).sum()) for i in range(0, n, batch_size))
    return total / max(n, 1)


def load_without_prior(run_dir: str | Path, device: torch.device | str = "cpu") -> Run:
    """A run with its weights but not its prior, so that a missing or broken prior can be (re)trained."""
    from vaelab.run import Run, build_run_model, load_weights, read_config

    path = Path(run_dir)
    config = read_config(path)
    model = build_run_model(config)
    load_weights(model, path / "model.safetensors")
    return Run(path, config, model.to(device).eval())


def train_prior(
    run: Run,
    prior_config: PriorConfig | None = None,
    train_config: PriorTrainConfig | None = None,
    device: torch.device | str = "cpu",
    data_dir: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Fit the prior of a VQ run on its frozen training codes; write RUN/prior/ and figures/prior_samples.png."""
    if not is_vq(run.model):
        raise VaelabError(
            f"train-prior fits a prior over discrete codes: it needs a VQ model ({', '.join(VQ_MODELS)}), "
            f"but {run.path} is a {run.config.model} run"
        )
    pc, tc = prior_config or PriorConfig(), train_config or PriorTrainConfig()
    if log:
        log(f"training the prior of {run.path} ({run.config.model})")
    model = run.model.to(device).eval()
    data = run.dataset(device, data_dir)
    folder = run.path / PRIOR_DIR
    folder.mkdir(parents=True, exist_ok=True)
    prior, result = fit_prior(model, data, pc, tc, run.config.train.eval_batch_size, log, folder / "metrics.jsonl")
    _save(folder, prior, pc, tc, result)
    model.code_prior, model.run_dir = prior, run.path
    from vaelab.vq_figures import prior_samples

    torch.manual_seed(tc.seed)
    result["figure"] = str(prior_samples(run.path / "figures" / "prior_samples.png", model))
    return result


def fit_prior(
    model: VQModel,
    data: Dataset,
    pc: PriorConfig,
    tc: PriorTrainConfig,
    eval_batch_size: int = 500,
    log: Callable[[str], None] | None = None,
    metrics_path: Path | None = None,
) -> tuple[CodePrior, dict[str, Any]]:
    """Fit a prior to the frozen model's codes of ``data``'s training split (best validation epoch kept)."""
    device = next(model.parameters()).device
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    torch.manual_seed(tc.seed)
    train_x = torch.bernoulli(data.train) if data.dynamic else data.train  # one fixed binarization
    bs = eval_batch_size
    codes = {"train": split_codes(model, train_x, bs), "test": split_codes(model, data.test, bs)}
    codes["val"] = split_codes(model, data.val, bs) if len(data.val) else codes["train"]
    prior = build_prior(model, pc).to(device)
    optimizer = torch.optim.Adam(prior.parameters(), lr=tc.lr)
    if metrics_path is not None:
        metrics_path.write_text("")
    n = len(codes["train"][0])
    if n < tc.batch_size:
        raise VaelabError(f"batch size {tc.batch_size} is larger than the training set ({n} examples)")
    generator = torch.Generator().manual_seed(tc.seed)
    best, best_state, best_epoch = math.inf, None, -1
    dims = math.prod(model.data_shape) * math.log(2)
    for epoch in range(tc.epochs):
        start = time.perf_counter()
        prior.train()
        perm = torch.randperm(n, generator=generator).to(device)
        total, steps = 0.0, n // tc.batch_size
        for s in range(steps):
            idx = perm[s * tc.batch_size : (s + 1) * tc.batch_size]
            loss = prior.nll([c[idx] for c in codes["train"]]).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        val = mean_nll(prior, codes["val"], bs)
        record = {
            "epoch": epoch + 1,
            "train_nll": total / steps,
            "val_nll": val,
            "seconds": time.perf_counter() - start,
        }
        if metrics_path is not None:
            with metrics_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        if log:
            log(
                f"epoch {epoch + 1}/{tc.epochs}: prior NLL train {record['train_nll']:.2f}, val {val:.2f} nats per "
                f"image ({val / dims:.4f} bits/dim)"
            )
        if val < best:
            best, best_epoch = val, epoch + 1
            best_state = {k: v.detach().clone() for k, v in prior.state_dict().items()}
    prior.load_state_dict(best_state)
    prior.eval()
    result = {
        "best_epoch": best_epoch,
        "val_nll": best,
        "test_nll": mean_nll(prior, codes["test"], bs),
        "uniform_nll": sum(h * w for h, w in model.code_shapes()) * math.log(model.config.codebook_size),
        "num_train_codes": n,
    }
    return prior, result


def _save(folder: Path, prior: CodePrior, pc: PriorConfig, tc: PriorTrainConfig, result: dict[str, Any]) -> None:
    from vaelab.run import atomic_write, write_json

    state = {k: v.detach().contiguous().cpu() for k, v in prior.state_dict().items()}
    atomic_write(folder / "model.safetensors", lambda p: save_file(state, p, metadata={"format": PRIOR_FORMAT}))
    write_json(
        folder / "config.json",
        {"format": PRIOR_FORMAT, "prior": dataclasses.asdict(pc), "train": dataclasses.asdict(tc), "result": result},
    )

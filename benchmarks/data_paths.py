"""The data paths: uint8 on the device against float32, streaming a folder of PNGs against a plain DataLoader,
and full dSprites held as bits.

(a) throughput  MNIST (54,000 training images), an MLP VAE 784-512-16 with a Bernoulli likelihood (vaelab's own
                model), batch 100, dynamic binarization, fused Adam, ``--steps`` steps per timed run. The same
                loop over the same ``Dataset.train_batches`` twice: once with the training split held as float32
                (what vaelab held before: ``DeviceSplit.of`` a float tensor), once as uint8 (``load_dataset``,
                decoded per batch). Runs alternate after an untimed warm-up; best and median samples/s. Memory: the
                bytes the splits take on the device, and the peak memory of a fresh process that loads the data and
                trains ``--steps`` steps (CUDA: ``max_memory_allocated``; CPU: the peak resident set, which
                includes the MNIST loader's float32 arrays on the host either way).
(b) streaming   the 60,000 MNIST training images written as PNGs (``--png-dir``, default /tmp/vaelab-mnist-png,
                class subfolders; written once). vaelab's streaming path (``data.memory_budget`` below the data,
                ``--workers`` loader processes) against a plain DataLoader over the same files: a Dataset whose
                ``__getitem__`` opens one PNG with Pillow and returns it as a float32 tensor / 255 (torchvision's
                ToTensor), ``shuffle=True``, ``batch_size=100``, the same workers, pinned memory on CUDA. Each side
                delivers ``--stream-batches`` batches to the device; images/s, best of ``--repeats``. The setup of
                the vaelab side (listing, header scan, fingerprint) is timed apart.
(c) dSprites    the dSprites grid (procedural) held compactly: ``--dsprites N`` images drawn lazily and packed
                8 pixels to a byte on the device (0: the whole grid, 737,280 images; drawing takes minutes), and
                the bytes of the whole grid as bits, uint8 and float32.

Usage:
    VAELAB_DATA=/work/shared/data .venv/bin/python benchmarks/data_paths.py
    VAELAB_DATA=/work/shared/data .venv/bin/python benchmarks/data_paths.py --steps 300 --repeats 3 --dsprites 0
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.utils.data
from PIL import Image

from vaelab.data import DATASETS, DataConfig, Dataset, describe_data, load_dataset
from vaelab.data.dsprites import DSprites, FactorImages
from vaelab.data.storage import DeviceSplit, row_bytes, scan
from vaelab.models import MODELS, DataSpec, build_model
from vaelab.models.base import Model

FULL_DSPRITES = 737_280


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mnist(device: torch.device, encoding: str) -> Dataset:
    data = load_dataset(DataConfig("mnist"), 0, device, binary_model=True)
    if encoding == "float32":  # the float32 path: the training split held as float32 tensors
        data.splits["train"] = DeviceSplit.of(data.train)
    return data


def make_model(device: torch.device) -> tuple[Model, torch.optim.Optimizer]:
    torch.manual_seed(0)
    config = MODELS.get("vae").Config(latent_dim=16, hidden=(512,), backbone="mlp")
    model = build_model("vae", DataSpec((1, 28, 28), 54_000), config).to(device)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)


def train_steps(data: Dataset, model: Model, opt: torch.optim.Optimizer, steps: int, device: torch.device) -> float:
    """Seconds for ``steps`` training steps drawn by ``train_batches`` (epochs chained as needed)."""
    gen = torch.Generator().manual_seed(0)
    done = 0
    sync(device)
    start = time.perf_counter()
    while done < steps:
        for x in data.train_batches(100, gen):
            loss = model(x, step=done)
            opt.zero_grad(set_to_none=True)
            loss.total.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    sync(device)
    return time.perf_counter() - start


def throughput(args: argparse.Namespace, device: torch.device) -> dict:
    sets = {e: mnist(device, e) for e in ("float32", "uint8")}
    rates: dict[str, list[float]] = {e: [] for e in sets}
    for data in sets.values():  # warm-up
        train_steps(data, *make_model(device), min(20, args.steps), device)
    for r in range(args.repeats):
        for e in sets if r % 2 == 0 else list(sets)[::-1]:
            rates[e].append(100 * args.steps / train_steps(sets[e], *make_model(device), args.steps, device))
    out = {
        e: {
            "best_samples_per_s": max(v),
            "median_samples_per_s": statistics.median(v),
            "held_bytes": sets[e].nbytes,
            "peak": peak_memory(args, e),
        }
        for e, v in rates.items()
    }
    out["ratio_best"] = out["uint8"]["best_samples_per_s"] / out["float32"]["best_samples_per_s"]
    out["ratio_median"] = out["uint8"]["median_samples_per_s"] / out["float32"]["median_samples_per_s"]
    return out


def peak_memory(args: argparse.Namespace, encoding: str) -> dict:
    """The peak memory of a fresh process that loads MNIST in ``encoding`` and trains ``--steps`` steps."""
    cmd = [sys.executable, __file__, "--peak-of", encoding, "--steps", str(args.steps), "--device", args.device]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])


def rss() -> int:
    """The resident memory of this process now (Linux)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def peak_of(args: argparse.Namespace, device: torch.device) -> None:
    data = mnist(device, args.peak_of)
    gc.collect()
    train_steps(data, *make_model(device), args.steps, device)
    peak = {"max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "rss_after_bytes": rss()}
    if device.type == "cuda":
        peak["cuda_max_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
    print(json.dumps(peak))


# -- (b) streaming --------------------------------------------------------------------------------------------------


def write_pngs(folder: Path) -> None:
    """The 60,000 MNIST training images as FOLDER/LABEL/INDEX.png (skipped when all are there)."""
    if folder.is_dir() and sum(1 for _ in folder.rglob("*.png")) == 60_000:
        return
    arrays = DATASETS.get("mnist")(None if not _data_dir() else Path(_data_dir()))
    images = np.rint(arrays.train[:, 0] * 255).astype(np.uint8)
    for i, (img, label) in enumerate(zip(images, arrays.train_labels)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / str(label) / f"{i:05d}.png")


def _data_dir() -> str | None:
    return os.environ.get("VAELAB_DATA")


class PlainPNGs(torch.utils.data.Dataset):
    """What a user writes: one PNG per item, Pillow, a float32 tensor / 255 (torchvision's ToTensor)."""

    def __init__(self, files: list[str]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.files[i]) as img:
            return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).unsqueeze(0)


def deliver(batches, device: torch.device, limit: int) -> float:
    """Images per second of the first ``limit`` batches, each on the device."""
    n = 0
    sync(device)
    start = time.perf_counter()
    for k, x in enumerate(batches):
        x = x.to(device, non_blocking=True)
        n += len(x)
        if k + 1 == limit:
            break
    sync(device)
    return n / (time.perf_counter() - start)


def streaming(args: argparse.Namespace, device: torch.device) -> dict:
    folder = Path(args.png_dir)
    write_pngs(folder)
    start = time.perf_counter()
    section = describe_data(folder, 0, {})
    data = load_dataset(DataConfig(**section, memory_budget=1e-9, workers=args.workers), 0, device)
    setup = time.perf_counter() - start
    rows = data.splits["train"].array  # the training split: rows of the folder's ImageFiles
    files = [rows.base.files[i] for i in rows.indices]
    rates: dict[str, list[float]] = {"vaelab": [], "plain": []}
    for r in range(args.repeats):
        for side in ("vaelab", "plain") if r % 2 == 0 else ("plain", "vaelab"):
            if side == "vaelab":
                batches = data.train_batches(100, torch.Generator().manual_seed(r))
            else:
                batches = torch.utils.data.DataLoader(
                    PlainPNGs(files),
                    100,
                    shuffle=True,
                    num_workers=args.workers,
                    drop_last=True,
                    pin_memory=device.type == "cuda",
                )
            rates[side].append(deliver(batches, device, args.stream_batches))
    return {
        "note": data.note,
        "setup_s": setup,
        "images": len(files),
        **{f"{s}_best_images_per_s": max(v) for s, v in rates.items()},
        **{f"{s}_median_images_per_s": statistics.median(v) for s, v in rates.items()},
        "ratio_best": max(rates["vaelab"]) / max(rates["plain"]),
    }


# -- (c) dSprites ---------------------------------------------------------------------------------------------------


def dsprites(args: argparse.Namespace, device: torch.device) -> dict:
    source = DSprites()
    n = args.dsprites or len(source)
    lazy = FactorImages(source, np.arange(n))
    start = time.perf_counter()
    split = DeviceSplit.build(lazy, scan(lazy), device)
    seconds = time.perf_counter() - start
    pick = np.random.default_rng(0).choice(n, 64, replace=False)
    exact = bool(
        np.array_equal(
            split.batches([torch.from_numpy(pick)]).__next__().cpu().numpy(), source.images(pick).astype(np.float32)
        )
    )
    shape = (1, 64, 64)
    return {
        "images_held": n,
        "held_bytes": split.nbytes,
        "build_s": seconds,
        "decodes_exactly": exact,
        "full_grid_bytes": {e: row_bytes(shape, e) * FULL_DSPRITES for e in ("bits", "uint8", "float32")},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--png-dir", default="/tmp/vaelab-mnist-png")
    p.add_argument("--stream-batches", type=int, default=200)
    p.add_argument("--dsprites", type=int, default=100_000, help="images of the grid to hold (0: all 737,280)")
    p.add_argument("--parts", default="throughput,streaming,dsprites")
    p.add_argument("--peak-of", help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.peak_of:
        return peak_of(args, device)
    parts = {"throughput": throughput, "streaming": streaming, "dsprites": dsprites}
    result = {"device": str(device), "threads": args.threads, "workers": args.workers}
    for name in args.parts.split(","):
        result[name] = parts[name](args, device)
        print(json.dumps({name: result[name]}, indent=1), flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

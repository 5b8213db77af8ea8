"""Sequence data sets: procedural moving digits (Moving MNIST) and a noisy harmonic oscillator.

A sequence data set is an ``ImageArrays`` whose examples are sequences: (T, C, H, W) frames or (T, D) vectors.
The ``Dataset`` then holds (N, T, ...) tensors and batches them by index permutation exactly like images.
Sequences are generated from fixed seeds (the same data whatever seed a run uses); the validation split is
carved from the training sequences by the run's seed, as for images.

moving digits   K digits (thresholded at 0.5, so frames are binary) start at random integer positions and move
                with constant integer velocities, bouncing off the frame's edges:
                    p(t) = reflect(p(0) + v t),  reflect(u) = L - |L - (u mod 2L)|,  L = frame size - digit size
                (the closed form of a point bouncing in [0, L]); overlapping digits are combined with max.
oscillator      q'' = -w^2 q, sampled at integer times with the exact one-step flow and small process noise,
                observed through the position with Gaussian noise:
                    s_{t+1} = R(w) s_t + eta_t,  R(w) = [[cos w, sin(w)/w], [-w sin w, cos w]],  s = (q, v)
                    x_t = q_t + sigma eps_t
                so without process noise q_t = A cos(w t + phi) and v_t = -A w sin(w t + phi). A, phi and w are
                drawn per sequence; the true states are returned by ``oscillator`` beside the observations.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vaelab.core.errors import VaelabError
from vaelab.data.base import DATASETS, ImageArrays

TRAIN_SEED, TEST_SEED = 0, 1  # fixed, so the sequences are the same whatever seed a run uses
TEST_SHARE = 4  # the test split has sequences // TEST_SHARE sequences
THRESHOLD = 0.5  # digit pixels above it are on


# -- moving digits -----------------------------------------------------------------------------------------------


def bouncing_positions(start: np.ndarray, velocity: np.ndarray, frames: int, span: int) -> np.ndarray:
    """Positions in [0, span] of points moving with constant velocity and bouncing: start (..., ) -> (..., frames).

    reflect(u) = span - |span - (u mod 2 span)| is the triangle wave of a point bouncing between 0 and span.
    """
    free = start[..., None] + velocity[..., None] * np.arange(frames)
    if span == 0:
        return np.zeros_like(free)
    return span - np.abs(span - np.mod(free, 2 * span))


def render(digits: np.ndarray, positions: np.ndarray, size: int) -> np.ndarray:
    """Frames (N, T, 1, size, size): digits (N, K, h, w) drawn with top-left corners positions (N, K, 2, T)."""
    n, k_digits, h, w = digits.shape
    frames = np.zeros((n, positions.shape[-1], size, size), dtype=np.float32)
    seq = np.arange(n)[:, None, None, None]
    time = np.arange(positions.shape[-1])[None, :, None, None]
    for k in range(k_digits):  # a few digits per frame; each is drawn into every frame at once
        rows = positions[:, k, 0, :, None, None] + np.arange(h)[:, None]  # (N, T, h, 1)
        cols = positions[:, k, 1, :, None, None] + np.arange(w)  # (N, T, 1, w)
        frames[seq, time, rows, cols] = np.maximum(frames[seq, time, rows, cols], digits[:, k, None])
    return frames[:, :, None]


def max_speed(span: int) -> int:
    """Pixels per frame at most: a quarter of the free span, between 1 and 3."""
    return max(1, min(3, span // 4))


def moving_digits(images: np.ndarray, n: int, frames: int, size: int, digits: int, seed: int) -> np.ndarray:
    """n sequences (n, frames, 1, size, size) of ``digits`` random images (N, 1, h, w), moving and bouncing."""
    h, w = images.shape[-2:]
    span = size - max(h, w)
    if span < 1:
        raise VaelabError(
            f"frame_size {size} leaves the {h}x{w} digits no room to move; use frame_size >= {max(h, w) + 1}"
        )
    rng = np.random.default_rng(seed)
    picked = (images[rng.integers(0, len(images), (n, digits)), 0] > THRESHOLD).astype(np.float32)
    start = rng.integers(0, span + 1, (n, digits, 2))
    top = max_speed(span)
    velocity = rng.integers(-top, top + 1, (n, digits, 2))
    still = (velocity == 0).all(-1)
    velocity[still, 1] = rng.choice([-1, 1], int(still.sum()))  # every digit moves
    return render(picked, bouncing_positions(start, velocity, frames, span), size)


def _moving(images: ImageArrays, frames: int, frame_size: int, digits: int, sequences: int) -> ImageArrays:
    for key, value in (("frames", frames), ("frame_size", frame_size), ("digits", digits), ("sequences", sequences)):
        if value < 1:
            raise VaelabError(f"{key} must be >= 1, got {value}")
    train = moving_digits(images.train, sequences, frames, frame_size, digits, TRAIN_SEED)
    test = moving_digits(images.test, max(1, sequences // TEST_SHARE), frames, frame_size, digits, TEST_SEED)
    return ImageArrays(train, test, binary=True)  # held-out sequences move held-out digits


def moving_mnist(data_dir: Path | None, frames: int, frame_size: int, digits: int, sequences: int) -> ImageArrays:
    """MNIST digits (28x28) through the data registry; offline (no folder given, download failed) the 8x8 digits."""
    try:
        source = DATASETS.get("mnist")(data_dir)
    except VaelabError as e:
        if data_dir is not None:  # the user pointed at a folder: a wrong one is their error to fix
            raise
        warnings.warn(f"moving-mnist uses the embedded 8x8 digits: MNIST is unavailable ({e})", stacklevel=2)
        source = DATASETS.get("digits")(None)
    return _moving(source, frames, frame_size, digits, sequences)


def moving_embedded_digits(data_dir: Path | None, frames: int, frame_size: int, digits: int, sequences: int):
    """The embedded 8x8 digits moving in small frames: no download, for tests and the demo."""
    return _moving(DATASETS.get("digits")(None), frames, frame_size, digits, sequences)


# -- oscillator ---------------------------------------------------------------------------------------------------

OBSERVATION_NOISE = 0.1  # sigma of x_t = q_t + sigma eps_t
PROCESS_NOISE = 0.01  # std of eta_t, added to position and velocity every step
OMEGA = (0.2, 0.6)  # radians per frame: periods of 10 to 31 frames
AMPLITUDE = (0.5, 1.5)


@dataclass
class Oscillations:
    """Observations (N, T, 1), true states (N, T, 2) = (q_t, v_t), and each sequence's amplitude, phase, w."""

    observations: np.ndarray
    states: np.ndarray
    amplitude: np.ndarray
    phase: np.ndarray
    omega: np.ndarray


def flow(omega: np.ndarray) -> np.ndarray:
    """R(w), the exact map (q, v)(t) -> (q, v)(t + 1) of q'' = -w^2 q: shape (..., 2, 2)."""
    c, s = np.cos(omega), np.sin(omega)
    return np.stack([np.stack([c, s / omega], -1), np.stack([-omega * s, c], -1)], -2)


def oscillator(
    n: int,
    frames: int,
    seed: int,
    observation_noise: float = OBSERVATION_NOISE,
    process_noise: float = PROCESS_NOISE,
) -> Oscillations:
    """n noisy harmonic oscillators over ``frames`` steps (see the module docstring)."""
    rng = np.random.default_rng(seed)
    amplitude, phase = rng.uniform(*AMPLITUDE, n), rng.uniform(0, 2 * math.pi, n)
    omega = rng.uniform(*OMEGA, n)
    step = flow(omega)
    s = np.stack([amplitude * np.cos(phase), -amplitude * omega * np.sin(phase)], -1)  # (N, 2) at t = 0
    states = np.empty((n, frames, 2))
    for t in range(frames):  # a loop over time, vectorized over the sequences
        states[:, t] = s
        s = np.einsum("nij,nj->ni", step, s) + process_noise * rng.standard_normal((n, 2))
    observations = states[..., :1] + observation_noise * rng.standard_normal((n, frames, 1))
    return Oscillations(observations.astype(np.float32), states.astype(np.float32), amplitude, phase, omega)


def oscillator_arrays(data_dir: Path | None, frames: int, sequences: int) -> ImageArrays:
    for key, value in (("frames", frames), ("sequences", sequences)):
        if value < 1:
            raise VaelabError(f"{key} must be >= 1, got {value}")
    train = oscillator(sequences, frames, TRAIN_SEED).observations
    test = oscillator(max(1, sequences // TEST_SHARE), frames, TEST_SEED).observations
    return ImageArrays(train, test)


# -- registration -------------------------------------------------------------------------------------------------


class GeneratedSource:
    """A registered data set made by a function: ``source(data_dir, **options)``; ``options`` are its defaults."""

    def __init__(self, make: Callable[..., ImageArrays], **defaults: int) -> None:
        self.make, self.defaults = make, defaults
        self.options = tuple(defaults)  # DataConfig keys it accepts

    def __call__(self, data_dir: Path | None, **options: Any) -> ImageArrays:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise VaelabError(f"unknown option {unknown[0]!r}; this data set takes: {', '.join(self.options)}")
        return self.make(data_dir, **{**self.defaults, **options})


def _register(name: str, description: str, shape: tuple[int, ...], source: GeneratedSource, **meta: str) -> None:
    DATASETS.register(name, description, kind="sequences", shape=shape, options=source.options, **meta)(source)


_register(
    "moving-mnist",
    "Moving MNIST: bouncing MNIST digits, 2 per 64x64 frame, 20 frames (procedural)",
    (20, 1, 64, 64),
    GeneratedSource(moving_mnist, frames=20, frame_size=64, digits=2, sequences=1000),
)
_register(
    "moving-digits",
    "small Moving MNIST from the embedded 8x8 digits, 16x16 frames; no download",
    (12, 1, 16, 16),
    GeneratedSource(moving_embedded_digits, frames=12, frame_size=16, digits=1, sequences=1000),
)
_register(
    "oscillator",
    "noisy harmonic oscillator: 1-D noisy positions, 40 frames, random A, phase, w",
    (40, 1),
    GeneratedSource(oscillator_arrays, frames=40, sequences=4000),
    likelihood="gaussian",  # real-valued signals
)

"""VQ-VAE and VQ-VAE-2: shapes, the loss by hand, the straight-through path, bounds, usage, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vaelab.core.errors import VaelabError
from vaelab.data import DataConfig, load_dataset
from vaelab.eval.codes import codebook_usage_epoch, discrete_bounds
from vaelab.eval.evaluate import evaluate_model
from vaelab.models import build_model
from vaelab.models.vqvae import VQVAE, VQVAEConfig, discrete_nll
from vaelab.probability import LIKELIHOODS

TINY = dict(hidden_channels=16, residual_channels=8, residual_blocks=1, code_dim=8, codebook_size=16)


@pytest.mark.parametrize(("shape", "grid"), [((1, 28, 28), (7, 7)), ((3, 32, 32), (8, 8)), ((3, 64, 64), (16, 16))])
def test_vqvae_shapes(shape, grid):
    torch.manual_seed(0)
    model = build_model("vqvae", shape, **TINY)
    x = torch.rand(3, *shape).bernoulli()
    assert model.code_shapes() == [grid]
    (codes,) = model.codes(x)
    assert codes.shape == (3, *grid) and codes.dtype == torch.int64
    assert model.reconstruct(x).shape == x.shape
    assert model.code(x).shape == (3, 8 * grid[0] * grid[1])
    assert model.decode_codes([codes]).mean.shape == x.shape
    loss = model.loss(x)
    assert set(loss.terms) == {"reconstruction", "commitment", "perplexity"}  # EMA: no codebook loss
    assert torch.isfinite(loss.total)


@pytest.mark.parametrize(
    ("shape", "down", "grids"),
    [((1, 28, 28), 1, [(7, 7), (14, 14)]), ((3, 32, 32), 2, [(4, 4), (8, 8)]), ((3, 64, 64), 2, [(8, 8), (16, 16)])],
)
def test_vqvae2_shapes_and_levels(shape, down, grids):
    torch.manual_seed(0)
    model = build_model("vqvae2", shape, downsample=down, **TINY)
    x = torch.rand(2, *shape).bernoulli()
    model.loss(x)  # k-means initialisation of both codebooks on this batch
    model.eval()  # no more codebook updates
    assert model.code_shapes() == grids
    top, bottom = model.codes(x)
    assert top.shape == (2, *grids[0]) and bottom.shape == (2, *grids[1])
    levels = model.reconstruct_levels(x)
    assert set(levels) == {"both", "top", "bottom"} and all(v.shape == x.shape for v in levels.values())
    torch.testing.assert_close(levels["both"], model.reconstruct(x))
    torch.testing.assert_close(model.decode_codes([top, bottom]).mean, model.reconstruct(x))
    assert not torch.allclose(levels["top"], levels["both"]) and not torch.allclose(levels["bottom"], levels["both"])
    terms = model.loss(x).terms
    assert {"commitment_top", "commitment_bottom", "perplexity_top", "perplexity_bottom"} <= set(terms)


def test_loss_terms_recomputed_by_hand():
    torch.manual_seed(1)
    model = build_model("vqvae", (1, 8, 8), downsample=1, ema=False, commitment=0.4, kmeans_init=False, **TINY)
    model.quantizer.codebook.data.normal_()
    x = torch.rand(5, 1, 8, 8).bernoulli()
    loss = model.loss(x)
    z_e = model.encoder(x)  # (B, D, 4, 4)
    flat = z_e.movedim(1, -1).reshape(-1, 8)
    k = torch.cdist(flat, model.quantizer.codebook.detach()).argmin(1)
    e = model.quantizer.codebook.detach()[k]
    sq = (flat - e).pow(2).sum() / 5
    z_q = e.view(5, 4, 4, 8).movedim(-1, 1)
    logits = model.decoder(z_q)
    reconstruction = nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="sum") / 5
    torch.testing.assert_close(loss.terms["reconstruction"], reconstruction)
    torch.testing.assert_close(loss.terms["codebook"], sq)
    torch.testing.assert_close(loss.terms["commitment"], 0.4 * sq)
    torch.testing.assert_close(loss.total, reconstruction + 1.4 * sq)


@pytest.mark.parametrize("ema", [False, True])
def test_straight_through_gradient_reaches_the_encoder(ema):
    torch.manual_seed(2)
    model = build_model("vqvae", (1, 8, 8), downsample=1, ema=ema, commitment=0.0, **TINY)
    x = torch.rand(4, 1, 8, 8).bernoulli()
    model.loss(x).terms["reconstruction"].backward()  # only through the decoder and z_q = z_e + sg[e − z_e]
    first = model.encoder[0].net[0].weight
    assert first.grad is not None and first.grad.abs().sum() > 0
    if not ema:
        assert model.quantizer.codebook.grad is None or model.quantizer.codebook.grad.abs().sum() == 0


def test_bits_per_dim_with_a_uniform_prior_by_hand():
    torch.manual_seed(3)
    model = build_model("vqvae", (1, 8, 8), downsample=2, **TINY).eval()
    x = torch.rand(4, 1, 8, 8).bernoulli()
    m = discrete_bounds(model, x)
    rec = -model.decode_codes(model.codes(x)).log_prob(x)
    expected = (rec.mean() + 4 * math.log(16)) / (64 * math.log(2))  # 2x2 codes of K = 16
    torch.testing.assert_close(m["bits_per_dim_uniform_prior"], expected)
    assert "bits_per_dim" not in m  # no prior yet


def test_discretized_gaussian_is_a_distribution_over_the_256_levels():
    grid = torch.arange(256.0) / 255
    mu = torch.tensor([0.0, 0.3, 0.97, 1.2])
    for sigma in (0.02, 0.3):  # P(x = level | mu) for every level and mean: they sum to 1 over the levels
        per_level = torch.stack(
            [discrete_nll(LIKELIHOODS.get("gaussian")((1,), sigma)(mu[:, None]), g.expand(4, 1)) for g in grid]
        )
        torch.testing.assert_close(torch.exp(-per_level).sum(0), torch.ones(4), atol=1e-4, rtol=0)


def test_epoch_metrics_report_usage_then_reset():
    torch.manual_seed(4)
    model = build_model("vqvae", (1, 8, 8), downsample=1, **TINY).train()
    model.loss(torch.rand(16, 1, 8, 8).bernoulli())
    m = codebook_usage_epoch(model, None, 0)
    assert 0 < m["codebook_usage"] <= 1 and 1 <= m["codebook_perplexity"] <= 16
    assert len(m["codebook_histogram"]) == 16 and sum(m["codebook_histogram"]) == 16 * 16
    assert model.quantizer.usage.sum() == 0


def test_evaluate_model_runs_on_a_vq_model():
    torch.manual_seed(5)
    model = build_model("vqvae2", (1, 8, 8), downsample=1, **TINY)
    data = load_dataset(DataConfig("digits"), 0, binary_model=True)
    result = evaluate_model(model, data, "test", batch_size=100)
    keys = ("reconstruction", "mse", "bits_per_dim_uniform_prior", "codes_in_use_top", "codebook_perplexity_bottom")
    for key in keys:
        assert key in result, key
    assert result["num_examples"] == 297 and 1 <= result["codes_in_use_bottom"] <= 16


def test_bad_input_is_a_clear_error():
    with pytest.raises(VaelabError, match="codebook_size must be >= 2"):
        build_model("vqvae", (1, 28, 28), codebook_size=1)
    with pytest.raises(VaelabError, match=r"a 28x28 image cannot be halved 3 times .* use at most 2 steps"):
        build_model("vqvae", (1, 28, 28), downsample=3, pad=False)
    with pytest.raises(VaelabError, match=r"cannot be halved 3 times \(downsample \+ top_downsample = 2 \+ 1"):
        build_model("vqvae2", (1, 28, 28), downsample=2, pad=False)
    with pytest.raises(VaelabError, match=r"8x8 image cannot be halved 4 times .* would make it mostly padding"):
        build_model("vqvae", (1, 8, 8), downsample=4)
    with pytest.raises(VaelabError, match="unknown config key 'latent_dim'"):
        build_model("vqvae", (1, 28, 28), latent_dim=5)
    wrong = nn.Conv2d(1, 4, 4, stride=4)  # 4 channels on the 7x7 grid, code_dim 8
    with pytest.raises(VaelabError, match=r"outputs .* per image, but code_dim is 8.*set code_dim=4"):
        VQVAE(VQVAEConfig(**TINY), (1, 28, 28), encoder=wrong)
    ok = VQVAE(VQVAEConfig(**TINY), (1, 28, 28), encoder=nn.Conv2d(1, 8, 4, stride=4))
    assert ok.code_shapes() == [(7, 7)]
    model = build_model("vqvae", (1, 8, 8), **TINY)
    with pytest.raises(VaelabError, match=r"channel dimension .* is 3, but the codebook's code_dim is 8"):
        model.quantizer(torch.randn(2, 3, 2, 2))
    with pytest.raises(VaelabError, match="no code prior has been fitted to this model's codes"):
        model.sample(4)


@pytest.mark.parametrize("model", ["vqvae", "vqvae2"])
def test_images_the_strides_do_not_divide_are_padded_and_cropped(model):
    """28x28 under 3 stride-2 steps: zero-padded to 32x32 (and said so), the likelihood over the 28x28 pixels."""
    torch.manual_seed(6)
    vq = build_model(model, (1, 28, 28), downsample=3 if model == "vqvae" else 2, **TINY)
    assert vq.padded == (32, 32) and "zero-padded to 32x32" in vq.notes[0]
    x = torch.rand(3, 1, 28, 28).bernoulli()
    assert vq.reconstruct(x).shape == x.shape
    assert vq.decode_codes(vq.codes(x)).batch_shape == (3,) and vq.code_shapes()[0] == (4, 4)
    assert torch.isfinite(vq.loss(x).total)
    assert build_model(model, (1, 32, 32), **TINY).notes == []

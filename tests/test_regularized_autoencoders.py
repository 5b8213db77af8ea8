"""Denoising, sparse, k-sparse and contractive autoencoders: each equation against an independent route, and
each bad input refused with the parameter and its accepted range."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch.autograd.functional import jacobian

from vaelab.core.errors import VaelabError
from vaelab.data import Dataset
from vaelab.eval.features import PROBE_SEED, denoising
from vaelab.models import build_model
from vaelab.models.cae import contraction_exact
from vaelab.models.ksparse import top_k
from vaelab.models.sparse import kl_sparsity, l1_sparsity
from vaelab.probability.corruption import GaussianNoise, Masking, SaltAndPepper, corrupt_inputs

SHAPE = (1, 8, 8)


def grey_batch(n=6, seed=1):
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


def bce(logits, x):
    """-log p(x | logits) of Bernoulli pixels, per data point, batch mean (written out, not torch.distributions)."""
    p = torch.sigmoid(logits.flatten(1))
    x = x.flatten(1)
    return -(x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum(1).mean()


# --- the backbone extension: a code activation and per-layer activations ---------------------------------------------


def test_code_activation_and_layer_activations():
    torch.manual_seed(0)
    ae = build_model("ae", SHAPE, latent_dim=5, hidden=(7, 6), activation="tanh", code_activation="sigmoid")
    x = grey_batch()
    layers = ae.encoder.activations(x)
    assert [tuple(h.shape) for h in layers] == [(6, 7), (6, 6), (6, 5)]
    torch.testing.assert_close(layers[-1], ae.encode(x))
    assert ((layers[-1] > 0) & (layers[-1] < 1)).all() and (layers[0].abs() < 1).all()
    first = ae.encoder.net[0]
    torch.testing.assert_close(layers[0], torch.tanh(x.flatten(1) @ first.weight.T + first.bias))
    linear = build_model("ae", SHAPE, latent_dim=5, hidden=())  # the default code is linear: one Linear layer
    assert len(linear.encoder.net) == 1 and len(linear.encoder.activations(x)) == 1
    conv = build_model("ae", SHAPE, latent_dim=3, backbone="conv", channels=(2,), code_activation="sigmoid")
    maps, code = conv.encoder.activations(x)
    assert maps.shape == (6, 2, 4, 4) and (maps >= 0).all() and ((code > 0) & (code < 1)).all()
    with pytest.raises(VaelabError, match="unknown code_activation 'step'; choose from: linear, relu"):
        build_model("ae", SHAPE, code_activation="step")


def test_tied_weights():
    """tied=true: the decoder is x̂ = Wᵀh + c with the encoder's W, stored once and trained through both paths."""
    torch.manual_seed(0)
    model = build_model("dae", SHAPE, latent_dim=5, tied=True).eval()
    assert set(model.state_dict()) == {"encoder.net.0.weight", "encoder.net.0.bias", "decoder.bias"}
    x = grey_batch()
    W, b, c = model.encoder.net[0].weight, model.encoder.net[0].bias, model.decoder.bias
    (grad,) = torch.autograd.grad(model.loss(x).total, W)
    w_enc, w_dec = (W.detach().clone().requires_grad_() for _ in range(2))  # the two uses of W, untied by hand
    h = torch.sigmoid(x.flatten(1) @ w_enc.T + b)
    loss = bce(h @ w_dec + c, x)
    torch.testing.assert_close(model.loss(x).total, loss)
    g_enc, g_dec = torch.autograd.grad(loss, (w_enc, w_dec))
    torch.testing.assert_close(grad, g_enc + g_dec)
    twin = copy.deepcopy(model)  # a copy keeps its own tie
    assert twin.decoder.tied is twin.encoder.net[0] and twin.decoder.tied is not model.encoder.net[0]
    for options in ({"hidden": (8,)}, {"backbone": "conv", "channels": (2,)}):
        with pytest.raises(VaelabError, match="tied=true ties the decoder to a one-layer encoder"):
            build_model("cae", SHAPE, tied=True, **options)


# --- corruptions -------------------------------------------------------------------------------------------------


def test_gaussian_corruption_adds_noise_of_standard_deviation_sigma():
    torch.manual_seed(0)
    x = torch.rand(400, *SHAPE)
    noise = GaussianNoise(0.3).sample(x) - x  # 25600 draws: the SE of the sample std is 0.3 / sqrt(2 * 25600) ≈ 0.0013
    assert abs(float(noise.mean())) < 0.01 and abs(float(noise.std()) - 0.3) < 0.01
    assert torch.equal(GaussianNoise(0).sample(x), x)


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 1.0])
def test_masking_zeroes_a_fixed_fraction_of_each_example(fraction):
    torch.manual_seed(0)
    x = torch.rand(2000, *SHAPE) + 0.5  # no zeros of its own
    x_tilde = Masking(fraction).sample(x)
    masked = x_tilde == 0
    assert (masked.flatten(1).sum(1) == round(fraction * 64)).all()  # exactly round(ν d) per example
    assert torch.equal(x_tilde[~masked], x[~masked])  # the rest untouched
    # drawn per example, uniformly: each position is masked in a fraction ν of the examples (SE ≤ 0.011)
    assert (masked.float().mean(0) - fraction).abs().max() < 0.05
    if 0 < fraction < 1:
        assert len({tuple(m.flatten().tolist()) for m in masked[:20]}) == 20


def test_salt_and_pepper_sets_a_fixed_fraction_to_zero_or_one():
    torch.manual_seed(0)
    x = torch.full((2000, *SHAPE), 0.5)
    x_tilde = SaltAndPepper(0.25).sample(x)
    changed = x_tilde != 0.5
    assert (changed.flatten(1).sum(1) == 16).all()
    values = x_tilde[changed]
    assert ((values == 0) | (values == 1)).all()
    assert abs(float(values.mean()) - 0.5) < 0.02  # a fair coin: 32000 flips, SE 0.003


def test_corruption_applies_in_training_only():
    x = grey_batch()
    for corruption in (GaussianNoise(0.5), Masking(0.5), SaltAndPepper(0.5)):
        assert not torch.equal(corruption(x), x)  # a fresh module is in training mode
        corruption.eval()
        assert torch.equal(corruption(x), x)
        assert not torch.equal(corruption.sample(x), x)  # sample always corrupts


@pytest.mark.parametrize(
    ("corruption", "noise", "words"),
    [
        ("gaussian", -0.1, ["noise", ">= 0", "-0.1"]),
        ("masking", 1.5, ["noise", "[0, 1]", "1.5"]),
        ("masking", -0.2, ["noise", "[0, 1]"]),
        ("salt-and-pepper", 2.0, ["noise", "[0, 1]"]),
        ("salt-and-pepper", -1.0, ["noise", "[0, 1]"]),
        ("blur", 0.1, ["unknown corruption 'blur'", "gaussian", "masking", "salt-and-pepper"]),
    ],
)
def test_bad_noise_levels(corruption, noise, words):
    with pytest.raises(VaelabError) as err:
        build_model("dae", SHAPE, corruption=corruption, noise=noise)
    for word in words:
        assert word in str(err.value), str(err.value)


# --- denoising autoencoder -------------------------------------------------------------------------------------------


def test_dae_reconstructs_the_clean_input_from_the_corrupted_one():
    torch.manual_seed(0)
    model = build_model("dae", SHAPE, latent_dim=5, corruption="masking", noise=0.5)
    x = grey_batch()
    torch.manual_seed(3)
    loss = model.loss(x)
    torch.manual_seed(3)
    x_tilde = Masking(0.5).sample(x)  # the same draw
    linear_in, linear_out = model.encoder.net[0], model.decoder.net[0]
    h = torch.sigmoid(x_tilde.flatten(1) @ linear_in.weight.T + linear_in.bias)
    torch.testing.assert_close(loss.total, bce(h @ linear_out.weight.T + linear_out.bias, x))
    assert set(loss.terms) == {"reconstruction"}
    model.eval()  # no corruption: the plain autoencoder's loss on clean data
    h = torch.sigmoid(x.flatten(1) @ linear_in.weight.T + linear_in.bias)
    torch.testing.assert_close(model.loss(x).total, bce(h @ linear_out.weight.T + linear_out.bias, x))
    torch.testing.assert_close(model.code(x), h)


def test_dae_metrics_on_corrupted_data():
    """The denoising numbers registered for the DAE, recomputed by hand on the same corruption draws."""
    torch.manual_seed(0)
    model = build_model("dae", SHAPE, latent_dim=5, corruption="gaussian", noise=0.2).eval()
    x = grey_batch(50)
    data = Dataset("test", SHAPE, x, x[:0], x, None, None, None, dynamic=False)
    m = denoising(model, data, "test", batch_size=50)
    torch.manual_seed(PROBE_SEED)
    x_tilde = x + 0.2 * torch.randn_like(x)
    restored = torch.sigmoid(model.decoder(model.encoder(x_tilde)))
    mse_corrupted, mse_denoised = float(((x_tilde - x) ** 2).mean()), float(((restored - x) ** 2).mean())
    assert m["mse_corrupted"] == pytest.approx(mse_corrupted, rel=1e-5)
    assert m["mse_denoised"] == pytest.approx(mse_denoised, rel=1e-5)
    criterion = float(bce(model.decoder(model.encoder(x_tilde)), x))
    assert m["reconstruction_corrupted"] == pytest.approx(criterion, rel=1e-5)
    assert m["denoising_gain_db"] == pytest.approx(10 * math.log10(mse_corrupted / mse_denoised), rel=1e-5)


def test_any_model_can_be_made_denoising():
    """corrupt_inputs puts the corruption in front of a VAE's encoder: in training it sees exactly-masked inputs."""
    torch.manual_seed(0)
    plain = build_model("vae", SHAPE, latent_dim=3, hidden=(16,))
    wrapped = build_model("vae", SHAPE, latent_dim=3, hidden=(16,))
    wrapped.load_state_dict(plain.state_dict())
    encoder = wrapped.encoder
    corrupt_inputs(wrapped, Masking(0.5))
    seen = []
    encoder.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    x = grey_batch() * 0.8 + 0.1
    wrapped.loss(x)
    assert ((seen[-1] == 0).flatten(1).sum(1) == 32).all()
    torch.manual_seed(1)
    a = wrapped.eval().loss(x).total
    torch.manual_seed(1)
    b = plain.eval().loss(x).total
    assert torch.equal(a, b)  # identity in eval mode
    assert torch.equal(seen[-1], x)


# --- sparse autoencoder --------------------------------------------------------------------------------------------


def test_kl_sparsity_is_the_written_formula():
    h = torch.rand(7, 5, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.05
    s = 0.05
    expected = 0.0
    for j in range(5):
        s_hat = sum(h[b, j].item() for b in range(7)) / 7
        expected += s * math.log(s / s_hat) + (1 - s) * math.log((1 - s) / (1 - s_hat))
    assert kl_sparsity(h, s).item() == pytest.approx(expected, rel=1e-5)
    assert kl_sparsity(torch.full((4, 3), 0.2), 0.2).item() == pytest.approx(0, abs=1e-6)
    assert math.isfinite(kl_sparsity(torch.ones(4, 3), 0.05).item())  # saturated units: large but finite
    assert l1_sparsity(torch.tensor([[1.0, -2.0], [0.5, 0.0]])).item() == pytest.approx(1.75)


@pytest.mark.parametrize("penalty", ["kl", "l1"])
def test_sparse_ae_loss(penalty):
    torch.manual_seed(0)
    model = build_model("sparse-ae", SHAPE, latent_dim=6, beta=2.0, sparsity_target=0.1, penalty=penalty)
    x = grey_batch()
    loss = model.loss(x)
    enc, dec = model.encoder.net[0], model.decoder.net[0]
    h = torch.sigmoid(x.flatten(1) @ enc.weight.T + enc.bias)  # the one sigmoid layer is the code
    rec = bce(h @ dec.weight.T + dec.bias, x)
    if penalty == "kl":
        s_hat = h.mean(0)
        sparsity = (0.1 * torch.log(0.1 / s_hat) + 0.9 * torch.log(0.9 / (1 - s_hat))).sum()
    else:
        sparsity = h.abs().sum(1).mean()
    torch.testing.assert_close(loss.terms["reconstruction"], rec)
    torch.testing.assert_close(loss.terms["sparsity"], sparsity)
    torch.testing.assert_close(loss.total, rec + 2.0 * sparsity)


def test_sparsity_on_chosen_hidden_layers():
    torch.manual_seed(0)
    x = grey_batch()
    both = build_model("sparse-ae", SHAPE, latent_dim=4, hidden=(8,), sparse_layers=(0, -1))
    first, code = both.encoder.net[0], both.encoder.net[2]
    h1 = torch.sigmoid(x.flatten(1) @ first.weight.T + first.bias)
    h2 = torch.sigmoid(h1 @ code.weight.T + code.bias)
    expected = kl_sparsity(h1, 0.05) + kl_sparsity(h2, 0.05)
    torch.testing.assert_close(both.loss(x).terms["sparsity"], expected)
    hidden_only = build_model("sparse-ae", SHAPE, latent_dim=4, hidden=(8,), sparse_layers=(0,))
    hidden_only.load_state_dict(both.state_dict())
    torch.testing.assert_close(hidden_only.loss(x).terms["sparsity"], kl_sparsity(h1, 0.05))


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"sparsity_target": 0}, ["sparsity_target", "(0, 1)"]),
        ({"sparsity_target": 1}, ["sparsity_target", "(0, 1)"]),
        ({"sparsity_target": 1.5}, ["sparsity_target", "(0, 1)", "1.5"]),
        ({"sparsity_target": -0.05}, ["sparsity_target", "(0, 1)"]),
        ({"beta": -1}, ["beta", ">= 0"]),
        ({"penalty": "l2"}, ["unknown penalty 'l2'", "kl", "l1"]),
        ({"code_activation": "linear"}, ["sigmoid", "code_activation=linear", "penalty=l1"]),
        ({"hidden": (8,), "activation": "relu", "sparse_layers": (0,)}, ["sigmoid", "activation=relu"]),
        ({"sparse_layers": (1,)}, ["sparse_layers", "[-1, 0]"]),
        ({"hidden": (8,), "sparse_layers": (-3,)}, ["sparse_layers", "[-2, 1]"]),
        ({"sparse_layers": ()}, ["sparse_layers"]),
    ],
)
def test_bad_sparse_options(options, words):
    with pytest.raises(VaelabError) as err:
        build_model("sparse-ae", SHAPE, **options)
    for word in words:
        assert word in str(err.value), str(err.value)


def test_l1_penalty_takes_any_activation():
    model = build_model("sparse-ae", SHAPE, penalty="l1", code_activation="relu")
    assert model.loss(grey_batch()).terms["sparsity"] >= 0


# --- k-sparse autoencoder ------------------------------------------------------------------------------------------


def test_top_k_keeps_the_k_largest():
    a = torch.randn(6, 20, generator=torch.Generator().manual_seed(0))
    kept = a >= a.sort(dim=1, descending=True).values[:, 4:5]  # a mask by sorting
    torch.testing.assert_close(top_k(a, 5), a * kept)
    assert ((top_k(a, 5) != 0).sum(1) == 5).all()


def test_ksparse_gradient_flows_through_the_kept_units_only():
    torch.manual_seed(0)
    model = build_model("ksparse-ae", SHAPE, latent_dim=12, k=3)
    x = grey_batch()
    params = list(model.parameters())
    grads = torch.autograd.grad(model.loss(x).total, params)
    a = model.encoder(x)
    mask = (a >= a.sort(dim=1, descending=True).values[:, 2:3]).detach().float()  # constant: no gradient of its own
    manual = torch.autograd.grad(-model.decode(a * mask).log_prob(x).mean(), params)
    for g, m in zip(grads, manual):
        torch.testing.assert_close(g, m)
    a = a.detach().requires_grad_()
    (g,) = torch.autograd.grad(-model.decode(top_k(a, 3)).log_prob(x).mean(), a)
    assert (g[mask == 0] == 0).all() and (g[mask == 1] != 0).all()


def test_k_schedule_and_the_alpha_k_encoding():
    torch.manual_seed(0)
    model = build_model("ksparse-ae", SHAPE, latent_dim=12, k=3, alpha=2.0, k_start=12, k_anneal_steps=90)
    assert [model.k_at(s) for s in (0, 30, 60, 90, 1000, None)] == [12, 9, 6, 3, 3, 3]
    dense = build_model("ksparse-ae", SHAPE, latent_dim=12, k=3, k_anneal_steps=10)  # k_start 0: the code size
    assert dense.k_at(0) == 12 and dense.k_at(5) == round(7.5) and dense.k_at(10) == 3
    assert build_model("ksparse-ae", SHAPE, latent_dim=12, k=3).k_at(0) == 3  # no schedule
    x = grey_batch()
    a = model.encoder(x)
    for step, k in ((0, 12), (30, 9), (None, 3)):
        torch.testing.assert_close(model.loss(x, step=step).total, -model.decode(top_k(a, k)).log_prob(x).mean())
    assert ((model.code(x) != 0).sum(1) == 6).all()  # the features keep alpha * k
    assert ((model.encode(x) != 0).sum(1) == 3).all()
    torch.testing.assert_close(model.reconstruct(x), model.decode(top_k(a, 3)).mean)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"k": 0}, ["k must be in [1, latent_dim] = [1, 12], got 0"]),
        ({"k": 13}, ["k must be in [1, latent_dim] = [1, 12], got 13"]),
        ({"k": 3, "alpha": 0.5}, ["alpha", "[1, 4]"]),
        ({"k": 3, "alpha": 5}, ["alpha", "[1, 4]"]),
        ({"k": 3, "k_start": 2}, ["k_start", "[3, 12]"]),
        ({"k": 3, "k_start": 20}, ["k_start", "[3, 12]"]),
        ({"k": 3, "k_anneal_steps": -1}, ["k_anneal_steps", ">= 0"]),
    ],
)
def test_bad_ksparse_options(options, words):
    with pytest.raises(VaelabError) as err:
        build_model("ksparse-ae", SHAPE, latent_dim=12, **options)
    for word in words:
        assert word in str(err.value), str(err.value)


# --- contractive autoencoder ---------------------------------------------------------------------------------------


def autograd_jacobian_norm(f, x):
    """‖∂f/∂x‖_F² per example with torch.autograd.functional.jacobian, one example at a time (the slow route)."""
    return torch.stack([jacobian(lambda v: f(v.unsqueeze(0)).squeeze(0), xi).pow(2).sum() for xi in x])


@pytest.mark.parametrize(
    ("shape", "options", "closed_form"),
    [
        (SHAPE, {}, True),  # the paper's one sigmoid layer
        (SHAPE, {"code_activation": "tanh"}, True),
        (SHAPE, {"code_activation": "linear"}, True),
        (SHAPE, {"hidden": (7,), "activation": "tanh"}, False),  # deeper: torch.func, jacrev (64 inputs > 5 units)
        ((4,), {"hidden": (7,), "activation": "softplus", "code_activation": "linear"}, False),  # jacfwd (4 < 5)
        (SHAPE, {"backbone": "conv", "channels": (2,), "activation": "elu"}, False),
    ],
)
def test_contraction_matches_autograd(shape, options, closed_form):
    torch.manual_seed(0)
    model = build_model("cae", shape, latent_dim=5, **options)
    assert model.closed_form == closed_form
    x = torch.randn(4, *shape)
    h, norms = model.code_and_contraction(x)
    torch.testing.assert_close(h, model.encode(x))
    torch.testing.assert_close(norms, autograd_jacobian_norm(model.encoder, x), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(contraction_exact(model.encoder, x, 5), norms, rtol=1e-4, atol=1e-6)


def test_sigmoid_closed_form_is_the_papers_formula_and_trains_like_the_exact_route():
    torch.manual_seed(0)
    model = build_model("cae", SHAPE, latent_dim=5, contraction=0.7)
    x = grey_batch()
    W, b = model.encoder.net[0].weight, model.encoder.net[0].bias
    h = torch.sigmoid(x.flatten(1) @ W.T + b)
    paper = torch.stack(
        [sum((h[n, j] * (1 - h[n, j])) ** 2 * sum(W[j, i] ** 2 for i in range(64)) for j in range(5)) for n in range(6)]
    )
    loss = model.loss(x)
    torch.testing.assert_close(loss.terms["contraction"], paper.mean())
    dec = model.decoder.net[0]
    torch.testing.assert_close(loss.total, bce(h @ dec.weight.T + dec.bias, x) + 0.7 * paper.mean())
    params = list(model.encoder.parameters())
    closed = torch.autograd.grad(model.code_and_contraction(x)[1].mean(), params)
    exact = torch.autograd.grad(contraction_exact(model.encoder, x, 5).mean(), params)
    for a, e in zip(closed, exact):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"code_activation": "relu"}, ["differentiable", "code_activation=relu", "sigmoid, tanh"]),
        ({"hidden": (8,), "activation": "relu"}, ["differentiable", "activation=relu"]),
        ({"hidden": (8,), "activation": "leaky_relu"}, ["activation=leaky_relu"]),
        ({"backbone": "conv", "channels": (2,), "activation": "relu"}, ["activation=relu"]),
        ({"hidden": (), "activation": "relu"}, ["activation=relu"]),  # the default one layer: refused as documented
        ({"contraction": -0.1}, ["contraction", ">= 0"]),
    ],
)
def test_bad_contractive_options(options, words):
    with pytest.raises(VaelabError) as err:
        build_model("cae", SHAPE, **options)
    for word in words:
        assert word in str(err.value), str(err.value)

"""TD-VAE and the sequence data sets: every equation against an independent route, rollouts, bad inputs, the CLI."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import kl_divergence

import vaelab
from cli_helpers import fails_with
from vaelab.cli import main
from vaelab.core.errors import VaelabError
from vaelab.data import DataConfig, load_dataset
from vaelab.data.sequences import (
    TEST_SEED,
    TEST_SHARE,
    bouncing_positions,
    flow,
    moving_digits,
    oscillator,
    render,
)
from vaelab.eval.sequences import evaluate_predictions, model_predictions, repeat_last_frame
from vaelab.models import build_model
from vaelab.models.tdvae import TDVAE, TDVAEConfig, plan_jumps, stack_sequences
from vaelab.probability.posteriors import MIN_SCALE

LOG_2PI = math.log(2 * math.pi)


def small_model(frames=10, frame=(1, 8, 8), **options) -> TDVAE:
    options = {"hidden": (32,), "embed_dim": 16, "belief_dim": 16, "latent_dim": 3, "state_hidden": (16,), **options}
    return build_model("tdvae", (frames, *frame), **options)


def normal_log_density(z, mu, sigma):
    """log N(z; mu, diag sigma^2) summed over the last dimension, written out."""
    return (-0.5 * ((z - mu) / sigma) ** 2 - torch.log(sigma) - 0.5 * LOG_2PI).sum(-1)


def head_params(net, inputs):
    """(mu, sigma) of a diagonal Gaussian head: the MLP's outputs split in half, sigma = softplus(raw) + MIN_SCALE."""
    mu, raw = net(inputs.reshape(-1, inputs.shape[-1])).view(*inputs.shape[:-1], -1).chunk(2, -1)
    return mu, F.softplus(raw) + MIN_SCALE


# -- data ---------------------------------------------------------------------------------------------------------


def test_bouncing_positions_match_a_step_by_step_bounce():
    rng = np.random.default_rng(0)
    span, frames = 7, 30
    start = rng.integers(0, span + 1, 200)
    velocity = rng.integers(-3, 4, 200)
    got = bouncing_positions(start, velocity, frames, span)
    for i in range(200):  # reflect at the walls, one step at a time
        p, v = int(start[i]), int(velocity[i])
        for t in range(frames):
            assert got[i, t] == p, (i, t)
            p += v
            if p > span:
                p, v = 2 * span - p, -v
            elif p < 0:
                p, v = -p, -v


def test_render_draws_each_digit_at_its_position():
    rng = np.random.default_rng(1)
    digits = rng.random((3, 2, 4, 5)).astype(np.float32)
    positions = rng.integers(0, 6, (3, 2, 2, 7))
    frames = render(digits, positions, 11)
    assert frames.shape == (3, 7, 1, 11, 11)
    for n in range(3):
        for t in range(7):
            canvas = np.zeros((11, 11), np.float32)
            for k in range(2):
                r, c = positions[n, k, :, t]
                canvas[r : r + 4, c : c + 5] = np.maximum(canvas[r : r + 4, c : c + 5], digits[n, k])
            np.testing.assert_array_equal(frames[n, t, 0], canvas)


def test_moving_digits_move_with_constant_velocity():
    images = np.zeros((1, 1, 3, 3), np.float32)
    images[0, 0, 1, 1] = 1.0  # a single lit pixel: its position is the digit's position + (1, 1)
    seqs = moving_digits(images, 50, 12, 10, 1, seed=0)
    where = seqs[:, :, 0].reshape(50, 12, -1).argmax(-1)
    rows, cols = where // 10 - 1, where % 10 - 1
    span = 10 - 3
    for track in (rows, cols):
        v0 = track[:, 1] - track[:, 0]
        assert (np.abs(track[:, 1:] - track[:, :-1]) == np.abs(v0)[:, None]).all()  # speed kept through bounces
        assert track.min() >= 0 and track.max() <= span
    assert ((rows[:, 1] != rows[:, 0]) | (cols[:, 1] != cols[:, 0])).all()  # every digit moves
    assert set(seqs.ravel().tolist()) <= {0.0, 1.0}


def test_moving_digits_data_set():
    config = DataConfig(name="moving-digits", frames=6, frame_size=12, digits=2, sequences=40)
    data = load_dataset(config, seed=0, binary_model=True)
    assert data.shape == (6, 1, 12, 12) and len(data.test) == 40 // TEST_SHARE
    assert len(data.train) + len(data.val) == 40
    assert not data.dynamic  # the frames are binary already: auto binarization leaves them
    assert set(data.train.unique().tolist()) <= {0.0, 1.0}
    other = load_dataset(config, seed=1, binary_model=True)
    assert torch.equal(data.test, other.test)  # the same held-out sequences whatever the run's seed


def test_oscillator_matches_its_closed_form():
    o = oscillator(64, 50, seed=3, observation_noise=0.0, process_noise=0.0)
    t = np.arange(50)
    phase = o.omega[:, None] * t + o.phase[:, None]
    np.testing.assert_allclose(o.states[..., 0], o.amplitude[:, None] * np.cos(phase), atol=1e-5)
    np.testing.assert_allclose(o.states[..., 1], -o.amplitude[:, None] * o.omega[:, None] * np.sin(phase), atol=1e-5)
    np.testing.assert_array_equal(o.observations[..., 0], o.states[..., 0])
    # R(w) is the exact flow: the matrix exponential of the generator [[0, 1], [-w^2, 0]]
    w = torch.tensor([0.2, 0.45, 0.6], dtype=torch.float64)
    generator = torch.zeros(3, 2, 2, dtype=torch.float64)
    generator[:, 0, 1], generator[:, 1, 0] = 1.0, -(w**2)
    np.testing.assert_allclose(flow(w.numpy()), torch.linalg.matrix_exp(generator).numpy(), atol=1e-12)


def test_oscillator_noise_has_the_stated_scales():
    o = oscillator(2000, 30, seed=4, observation_noise=0.1, process_noise=0.02)
    np.testing.assert_allclose((o.observations[..., 0] - o.states[..., 0]).std(), 0.1, rtol=0.03)
    s = o.states.astype(np.float64)
    predicted = np.einsum("nij,ntj->nti", flow(o.omega), s[:, :-1])
    np.testing.assert_allclose((s[:, 1:] - predicted).std(), 0.02, rtol=0.03)
    data = load_dataset(DataConfig(name="oscillator", frames=20, sequences=80), seed=0, binary_model=True)
    assert data.shape == (20, 1) and not data.dynamic  # not grey levels: auto never binarizes a signal
    truth = oscillator(80 // TEST_SHARE, 20, TEST_SEED)  # the test split's true states, as the README says
    np.testing.assert_array_equal(data.test.numpy(), truth.observations)


def test_sequence_options_are_checked():
    with pytest.raises(VaelabError, match=r"data set 'digits' has no option frames; it applies to: .*oscillator"):
        DataConfig(name="digits", frames=10)
    with pytest.raises(VaelabError, match="has no option digits"):
        DataConfig(name="oscillator", digits=2)
    with pytest.raises(VaelabError, match="sequences must be >= 0"):
        DataConfig(name="oscillator", sequences=-1)
    with pytest.raises(VaelabError, match="frame_size 8 leaves the 8x8 digits no room to move; use frame_size >= 9"):
        load_dataset(DataConfig(name="moving-digits", frame_size=8, sequences=8), seed=0)


@pytest.mark.skipif(not os.environ.get("VAELAB_DATA"), reason="set VAELAB_DATA to a folder with mnist/")
def test_moving_mnist_uses_mnist_digits():
    data = load_dataset(DataConfig(name="moving-mnist", frames=5, frame_size=34, digits=1, sequences=8), seed=0)
    assert data.shape == (5, 1, 34, 34)
    lit = data.test[:, 0, 0].nonzero()
    assert (lit[:, 1].max() - lit[:, 1].min()) > 8  # a 28x28 MNIST digit, not an 8x8 one


def test_moving_mnist_offline_falls_back_to_the_embedded_digits(monkeypatch):
    from vaelab.data.base import DATASETS
    from vaelab.data.sequences import moving_mnist

    def offline(data_dir):
        raise VaelabError("could not download train-images-idx3-ubyte.gz")

    monkeypatch.setitem(DATASETS._entries, "mnist", DATASETS._entries["mnist"].__class__("mnist", offline, "test"))
    with pytest.warns(UserWarning, match="embedded 8x8 digits: MNIST is unavailable"):
        arrays = moving_mnist(None, frames=4, frame_size=12, digits=1, sequences=8)
    assert arrays.train.shape == (8, 4, 1, 12, 12)
    with pytest.raises(VaelabError, match="could not download"):  # a folder the user named is not second-guessed
        moving_mnist(Path("somewhere"), frames=4, frame_size=12, digits=1, sequences=8)


def test_stack_sequences_refuses_mismatched_frames():
    batch = stack_sequences([np.zeros((5, 1, 4, 4)), torch.ones(5, 1, 4, 4)])
    assert batch.shape == (2, 5, 1, 4, 4)
    with pytest.raises(
        VaelabError, match=r"mismatched frame shapes in one batch: sequence 1 has frames of shape \(1, 4, 5\)"
    ):
        stack_sequences([np.zeros((5, 1, 4, 4)), np.zeros((5, 1, 4, 5))])
    with pytest.raises(VaelabError, match="sequence 1 has 4 frames and sequence 0 has 5"):
        stack_sequences([np.zeros((5, 2)), np.zeros((4, 2))])
    with pytest.raises(VaelabError, match="no sequences"):
        stack_sequences([])


# -- the loss, against its equation -------------------------------------------------------------------------------


@pytest.mark.parametrize("residual", [True, False])
def test_pair_terms_by_hand(residual):
    torch.manual_seed(0)
    model = small_model(max_jump=3, residual_transition=residual)
    x = torch.rand(5, 10, 1, 8, 8).bernoulli()
    b = model.beliefs(x)
    t1, t2 = torch.tensor([0, 2, 4, 1, 6]), torch.tensor([1, 5, 6, 3, 9])
    rows = torch.arange(5)
    delta = t2 - t1
    terms = model.pair_terms(x[rows, t2], b[rows, t1], b[rows, t2], delta)
    z1, z2 = terms.z_t1, terms.z_t2
    one_hot = torch.zeros(5, 3)
    one_hot[rows, delta - 1] = 1.0
    mu, sigma = head_params(model.belief.upper, b[rows, t2])  # p_B(z_t2|b_t2)
    torch.testing.assert_close(terms.log_p_b_t2, normal_log_density(z2, mu, sigma))
    mu, sigma = head_params(model.belief.upper, b[rows, t1])  # p_B(z_t1|b_t1)
    torch.testing.assert_close(terms.log_p_b_t1, normal_log_density(z1, mu, sigma))
    mu, sigma = head_params(model.smoothing.upper, torch.cat([z2, b[rows, t1], b[rows, t2], one_hot], 1))
    torch.testing.assert_close(terms.log_q_s, normal_log_density(z1, mu, sigma))
    mu, sigma = head_params(model.transition.upper, torch.cat([z1, one_hot], 1))  # p_T(z_t2|z_t1, delta)
    mu = mu + z1 if residual else mu  # residual: the mean is z_t1 plus the network's change
    torch.testing.assert_close(terms.log_p_t, normal_log_density(z2, mu, sigma))
    logits = model.decoder(z2).view(5, -1)  # Bernoulli p_D(x_t2|z_t2): sum of x log s(l) + (1 - x) log(1 - s(l))
    target = x[rows, t2].view(5, -1)
    by_hand = (target * F.logsigmoid(logits) + (1 - target) * F.logsigmoid(-logits)).sum(1)
    torch.testing.assert_close(terms.log_p_d, by_hand)
    elbo = by_hand + terms.log_p_b_t1 + terms.log_p_t - terms.log_p_b_t2 - terms.log_q_s
    torch.testing.assert_close(terms.elbo, elbo)


def test_two_layer_state_densities_by_hand():
    torch.manual_seed(1)
    model = small_model(layers=2, max_jump=2)
    b = torch.randn(6, 16)
    p = model.belief(b)
    z = p.rsample()
    assert z.shape == (6, 6)  # [z1, z2], 3 units each
    z1, z2 = z[:, :3], z[:, 3:]
    mu2, s2 = head_params(model.belief.upper, b)  # p_B(z2|b)
    mu1, s1 = head_params(model.belief.lower, torch.cat([b, z2], 1))  # p_B(z1|b, z2)
    torch.testing.assert_close(p.log_prob(z), normal_log_density(z2, mu2, s2) + normal_log_density(z1, mu1, s1))
    assert model.decoder(z).shape[0] == 6  # p_D sees the whole state
    # the residual transition, layer by layer: p_T(z2'|z, delta) p_T(z1'|z, delta, z2'), each mean its own z plus f
    code = torch.zeros(6, 2)
    code[:, 1] = 1.0  # delta = 2
    new = torch.randn(6, 6)
    context = torch.cat([z, code], 1)
    mu2, s2 = head_params(model.transition.upper, context)
    mu1, s1 = head_params(model.transition.lower, torch.cat([context, new[:, 3:]], 1))
    by_hand = normal_log_density(new[:, 3:], z2 + mu2, s2) + normal_log_density(new[:, :3], z1 + mu1, s1)
    torch.testing.assert_close(model.transition(context).log_prob(new), by_hand)


def loss_and_terms_by_hand(model, x, seed=2):
    """model.loss(x), and from the same draws the pair terms recomputed by hand, and the beliefs."""
    torch.manual_seed(seed)
    loss = model.loss(x)
    torch.manual_seed(seed)
    b = model.beliefs(x)
    t1, t2 = model.sample_pairs(*x.shape[:2])
    rows = torch.arange(len(x))[:, None]
    return loss, model.pair_terms(x[rows, t2], b[rows, t1], b[rows, t2], t2 - t1), b


def test_loss_terms_are_the_means_of_the_pair_terms():
    model = small_model(max_jump=3, pairs=5)
    loss, terms, _ = loss_and_terms_by_hand(model, torch.rand(4, 10, 1, 8, 8).bernoulli())
    torch.testing.assert_close(loss.terms["reconstruction"], -terms.log_p_d.mean())
    torch.testing.assert_close(loss.terms["kl_t1"], (terms.log_q_s - terms.log_p_b_t1).mean())
    torch.testing.assert_close(loss.terms["kl_t2"], (terms.log_p_b_t2 - terms.log_p_t).mean())
    torch.testing.assert_close(loss.terms["elbo"], terms.elbo.mean())
    torch.testing.assert_close(loss.total, -loss.terms["elbo"])


def test_one_step_term_is_the_frame_elbo_of_the_same_beliefs():
    model = small_model(max_jump=3, pairs=5, one_step=0.5)
    x = torch.rand(4, 10, 1, 8, 8).bernoulli()
    loss, terms, b = loss_and_terms_by_hand(model, x)
    pairs = terms.elbo.mean()
    one = torch.ones(4, 9, dtype=torch.long)
    steps = model.pair_terms(x[:, 1:], b[:, :-1], b[:, 1:], one).elbo.mean()  # l(t - 1, t), t = 1..9, by hand
    torch.testing.assert_close(loss.terms["elbo"], pairs)
    torch.testing.assert_close(loss.terms["one_step_elbo"], steps)
    torch.testing.assert_close(loss.total, -pairs - 0.5 * steps)


def test_semi_gradient_target_keeps_values_and_stops_the_later_belief():
    """target_gradient=false: the same l(t1, t2), but no gradient reaches p_B(z_t2|b_t2) through the jumpy pair
    (b_t2 still feeds q_S); with the default, the later belief is trained by the pair too."""
    model = small_model(max_jump=3)
    x_t2 = torch.rand(6, 1, 8, 8).bernoulli()
    delta = torch.randint(1, 4, (6,))
    b_t1, b_t2 = torch.randn(6, 16), torch.randn(6, 16)
    values = {}
    for target_gradient in (True, False):
        torch.manual_seed(5)
        terms = model.pair_terms(x_t2, b_t1, b_t2, delta, target_gradient)
        values[target_gradient] = terms.elbo.detach()
        model.zero_grad()
        (terms.log_p_d + terms.log_p_t - terms.log_p_b_t2).sum().backward()
        belief_grad = sum(p.grad.abs().sum() for p in model.belief.parameters() if p.grad is not None)
        assert (belief_grad > 0) == target_gradient
        assert terms.z_t2.requires_grad == target_gradient
    torch.testing.assert_close(values[True], values[False])


def test_semi_gradient_needs_the_one_step_term():
    with pytest.raises(VaelabError, match="target_gradient=false leaves the belief to the one-step term alone"):
        TDVAEConfig(target_gradient=False)
    with pytest.raises(VaelabError, match=r"one_step \(the weight of the one-step term\) must be >= 0"):
        TDVAEConfig(one_step=-1)
    model = small_model(one_step=1.0, target_gradient=False, layers=2)
    model.loss(torch.rand(3, 10, 1, 8, 8).bernoulli()).total.backward()
    for name, p in model.named_parameters():  # the belief is trained by the one-step term
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_single_sample_kl_t1_is_unbiased():
    """E over z_t1 ~ q_S of log q_S - log p_B(z_t1|b_t1) is the closed-form KL, given the same z_t2 draws."""
    torch.manual_seed(3)
    model = small_model(max_jump=2)
    n = 20000
    b_t1, b_t2 = torch.randn(1, 16).expand(n, 16), torch.randn(1, 16).expand(n, 16)
    x_t2 = torch.rand(1, 1, 8, 8).bernoulli().expand(n, 1, 8, 8)
    delta = torch.full((n,), 2)
    with torch.no_grad():
        terms = model.pair_terms(x_t2, b_t1, b_t2, delta)
        q_s = model.smoothing(torch.cat([terms.z_t2, b_t1, b_t2, model.jump_code(delta)], 1))
        closed_form = kl_divergence(q_s, model.belief(b_t1))
    estimate = terms.log_q_s - terms.log_p_b_t1
    difference = estimate - closed_form
    assert abs(difference.mean()) < 4 * difference.std() / math.sqrt(n)


def test_pairs_are_drawn_uniformly():
    torch.manual_seed(4)
    model = small_model(frames=8, max_jump=3, pairs=50)
    t1, t2 = model.sample_pairs(400, 8)
    delta = t2 - t1
    assert t1.min() >= 0 and t2.max() <= 7 and delta.min() >= 1 and delta.max() <= 3
    counts = torch.bincount(delta.flatten(), minlength=4)[1:].float()
    assert (counts / counts.sum() - 1 / 3).abs().max() < 0.01
    for d in (1, 2, 3):  # given delta, t1 is uniform on 0..T-1-delta
        starts = torch.bincount(t1[delta == d], minlength=8 - d).float()
        assert len(starts) == 8 - d and (starts / starts.sum() - 1 / (8 - d)).abs().max() < 0.02


def test_every_part_is_trained():
    model = small_model(layers=2, belief="gru")
    model.loss(torch.rand(3, 10, 1, 8, 8).bernoulli()).total.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# -- rollouts ------------------------------------------------------------------------------------------------------


def test_plan_jumps():
    assert plan_jumps(7, 3) == [3, 3, 1] and plan_jumps(3, 3) == [3] and plan_jumps(2, 4) == [2]
    for d in (1, 2, 5):
        for h in range(1, 15):
            jumps = plan_jumps(h, d)
            assert sum(jumps) == h and max(jumps) <= d and len(jumps) == math.ceil(h / d)


def test_rollout_shapes_and_times():
    model = small_model(max_jump=3)
    x = torch.rand(4, 6, 1, 8, 8).bernoulli()
    r = model.rollout(x, [1, 3, 2], samples=5)
    assert r.times == [1, 4, 6]
    assert r.states.shape == (5, 4, 3, 3) and r.frames.shape == (5, 4, 3, 1, 8, 8)
    assert ((r.frames >= 0) & (r.frames <= 1)).all()


def test_rollout_jumps_with_the_transition_of_each_jump():
    """imagine = z ~ p_B(z|b), then z ~ p_T(z|z, delta) jump after jump, each with its own one-hot delta."""
    model = small_model(max_jump=3)
    b = torch.randn(4, 16)
    torch.manual_seed(5)
    got = model.imagine(b, [2, 3], samples=7)
    torch.manual_seed(5)
    z = model.belief(b).sample((7,))
    landings = []
    for d in (2, 3):
        code = torch.zeros(7, 4, 3)
        code[..., d - 1] = 1.0
        mu, sigma = head_params(model.transition.upper, torch.cat([z, code], -1))
        z = z + mu + sigma * torch.randn_like(mu)  # the residual transition: mean z + f(z, delta)
        landings.append(z)
    torch.testing.assert_close(got, torch.stack(landings, 2))


def test_rollout_jumps_must_be_in_range():
    model = small_model(max_jump=3)
    x = torch.rand(2, 4, 1, 8, 8)
    for jumps in ([4], [0], []):
        with pytest.raises(VaelabError, match=r"jumps must be a non-empty list of frame counts in 1..max_jump=3"):
            model.rollout(x, jumps)


# -- evaluation -----------------------------------------------------------------------------------------------------


def test_prediction_errors_by_hand():
    torch.manual_seed(6)
    model = small_model(frames=8, frame=(2,), likelihood="gaussian", sigma=0.5, max_jump=2)
    x = torch.randn(3, 8, 2)
    torch.manual_seed(7)
    got = model_predictions(model, x, context=5, horizon=3, samples=4)
    torch.manual_seed(7)
    b = model.beliefs(x[:, :5])[:, -1]
    for h, jumps in ((1, [1]), (2, [2]), (3, [2, 1])):
        mean = model.decoder(model.imagine(b, jumps, 4)[:, :, -1].reshape(12, -1)).view(4, 3, 2).double()
        target = x[:, 4 + h].double()
        mse = ((mean.mean(0) - target) ** 2).mean(-1)
        log_p = (-0.5 * ((target - mean) / 0.5) ** 2 - math.log(0.5) - 0.5 * LOG_2PI).sum(-1)  # (S, B)
        nll = -torch.log(torch.exp(log_p).mean(0))
        torch.testing.assert_close(got["mse"][:, h - 1].double(), mse, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got["nll"][:, h - 1].double(), nll, rtol=1e-5, atol=1e-5)
    last = repeat_last_frame(x, 5, 3)["mse"]
    torch.testing.assert_close(last[:, 2], ((x[:, 4] - x[:, 7]) ** 2).mean(-1))


def test_prediction_window_must_fit():
    model = small_model(frames=8, max_jump=2)
    x = torch.rand(2, 8, 1, 8, 8)
    with pytest.raises(VaelabError, match="context 6 \\+ horizon 3 frames must fit the sequences' 8 frames"):
        model_predictions(model, x, context=6, horizon=3, samples=2)
    with pytest.raises(VaelabError, match="samples must be >= 1"):
        model_predictions(model, x, context=2, horizon=3, samples=0)


# -- bad input ------------------------------------------------------------------------------------------------------


def test_sequences_shorter_than_the_maximum_jump():
    with pytest.raises(VaelabError, match=r"sequences of 4 frames are shorter than the maximum jump max_jump=4"):
        small_model(frames=4, max_jump=4)
    model = small_model(frames=10, max_jump=4)
    with pytest.raises(VaelabError, match="a pair \\(t1, t1 \\+ 4\\) needs at least 5 frames"):
        model.loss(torch.rand(2, 3, 1, 8, 8))


def test_mismatched_frame_shapes_in_a_batch():
    model = small_model(frames=10)
    with pytest.raises(VaelabError, match="mismatched frame shapes in one batch"):
        model.loss([torch.rand(10, 1, 8, 8), torch.rand(10, 1, 8, 7)])
    with pytest.raises(VaelabError, match=r"for this model's frames of shape \(1, 8, 8\), got a tensor of shape"):
        model.loss(torch.rand(2, 10, 1, 16, 16))
    loss = model.loss([torch.rand(10, 1, 8, 8).bernoulli(), torch.rand(10, 1, 8, 8).bernoulli()])  # a list is fine
    assert torch.isfinite(loss.total)


def test_bad_options():
    with pytest.raises(VaelabError, match=r"max_jump \(D; jumps are drawn from 1..D\) must be >= 1, got 0"):
        TDVAEConfig(max_jump=0)
    with pytest.raises(VaelabError, match="layers must be 1 or 2"):
        TDVAEConfig(layers=3)
    with pytest.raises(VaelabError, match="unknown belief network 'rnn'; choose from: gru, lstm"):
        TDVAEConfig(belief="rnn")
    with pytest.raises(VaelabError, match="tdvae models sequences"):
        build_model("tdvae", (64,))


def test_cli_bad_inputs(capsys, tmp_path):
    out = str(tmp_path / "r")
    fails_with(capsys, "max_jump (D; jumps are drawn from 1..D) must be >= 1", "train", "tdvae", "--set", "max_jump=0")
    fails_with(
        capsys,
        "sequences of 3 frames are shorter than the maximum jump max_jump=4",
        *("train", "tdvae", "--data", "moving-digits", "--set", "frames=3", "--set", "sequences=20", "--out", out),
    )
    fails_with(
        capsys, "has no option digits", "train", "tdvae", "--data", "oscillator", "--set", "digits=2", "--out", out
    )
    fails_with(
        capsys,
        "choose --set likelihood=gaussian",
        *("train", "tdvae", "--data", "oscillator", "--set", "sequences=40", "--set", "likelihood=bernoulli"),
        *("--out", str(tmp_path / "b")),
    )
    fails_with(capsys, "tdvae models sequences", "train", "tdvae", "--data", "digits", "--out", str(tmp_path / "d"))


# -- a run, as a user meets it --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tdvae_runs(tmp_path_factory):
    """A TD-VAE trained briefly on small moving digits, a copy of it as a baseline run, and a VAE run."""
    root = tmp_path_factory.mktemp("tdvae")
    options = dict(epochs=2, frames=8, frame_size=12, sequences=120, batch_size=20, hidden=(32,), embed_dim=16)
    jumpy = vaelab.train("tdvae", "moving-digits", root / "jumpy", max_jump=3, belief_dim=16, **options)
    shutil.copytree(jumpy.path, root / "step")
    vae = vaelab.train("vae", "digits", root / "vae", epochs=1, hidden=(16,), latent_dim=2)
    return jumpy, vaelab.load(root / "step"), vae


def test_training_writes_rollout_figures(tdvae_runs):
    figures = tdvae_runs[0].path / "figures"
    for name in ("rollout.png", "rollout.gif", "learning_curve.png"):
        assert (figures / name).stat().st_size > 0, name
    from PIL import Image

    with Image.open(figures / "rollout.gif") as gif:
        assert gif.n_frames == 8  # the whole window: observed, then imagined


def test_eval_and_predict_commands(capsys, tdvae_runs):
    jumpy, step, _ = tdvae_runs
    assert main(["eval", str(jumpy.path), "--device", "cpu"]) == 0
    result = json.loads((jumpy.path / "eval.json").read_text())
    for key in ("loss", "reconstruction", "kl_t1", "kl_t2", "elbo", "elbo_per_frame", "mse"):
        assert math.isfinite(result[key]), key
    capsys.readouterr()
    code = main(["predict", str(jumpy.path), "--baseline", str(step.path), "--horizon", "4", "--samples", "3"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "repeat last frame" in out and "ELBO per frame" in out
    pred = json.loads((jumpy.path / "prediction-h4-s3.json").read_text())  # H=4 > max_jump=3, S=3: not the defaults
    assert pred["command"] == f"vaelab predict {jumpy.path} --horizon 4 --samples 3 --baseline {step.path}"
    assert pred["horizons"] == [1, 2, 3, 4] and pred["context"] == 4 and pred["num_sequences"] == 30
    assert set(pred["results"]) == {"model", "step", "repeat last frame"}
    for name in ("model", "step"):
        assert len(pred["results"][name]["mse"]) == 4 and len(pred["results"][name]["nll"]) == 4
    data = jumpy.dataset()  # the repeat-last-frame row is the plain squared error of x_3 against x_{3+h}
    expected = ((data.test[:, 3:4] - data.test[:, 4:8]) ** 2).flatten(2).mean(2).mean(0)
    np.testing.assert_allclose(pred["results"]["repeat last frame"]["mse"], expected.numpy(), rtol=1e-5)


def test_predict_bad_inputs(capsys, tdvae_runs):
    jumpy, _, vae_run = tdvae_runs
    fails_with(capsys, "must fit the sequences' 8 frames", "predict", str(jumpy.path), "--horizon", "9")
    fails_with(capsys, "jumpy prediction needs a tdvae run", "predict", str(vae_run.path))
    fails_with(capsys, "has no prior over whole sequences", "sample", str(jumpy.path))


def test_evaluate_predictions_refuses_other_models(tdvae_runs):
    with pytest.raises(VaelabError, match="jumpy prediction needs a sequence model"):
        evaluate_predictions({"vae": tdvae_runs[2].model}, tdvae_runs[0].dataset(), horizon=2)


def test_tdvae_learns_constant_velocity():
    """250 Adam steps on ramps x_t = a + 0.2 b t: predictions beat repeating the last value at every horizon,
    which needs the velocity (a model without it scores like the baseline, predicting 0 scores ~0.3)."""
    torch.manual_seed(0)

    def ramps(n):
        a, b = torch.rand(n, 1, 1) * 2 - 1, torch.rand(n, 1, 1) * 2 - 1
        return a + 0.2 * b * torch.arange(10.0)[:, None]

    model = small_model(frames=10, frame=(1,), likelihood="gaussian", sigma=0.05, belief_dim=32, latent_dim=4, pairs=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(250):
        loss = model.loss(ramps(32))
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
    x = ramps(500)
    tdvae = model_predictions(model, x, context=7, horizon=3, samples=8)["mse"].mean(0)
    last = repeat_last_frame(x, 7, 3)["mse"].mean(0)
    assert (tdvae < 0.8 * last).all(), (tdvae, last)

"""The vector quantizer on its own: lookup, straight-through gradient, losses, EMA, codebook health, DDP."""

from __future__ import annotations

import math
import socket

import pytest
import torch
import torch.multiprocessing as mp

from vaelab.core.errors import VaelabError
from vaelab.nn.quantizer import QuantizerOutput, VectorQuantizer, perplexity, squared_distances


def blobs(n: int, centers: torch.Tensor, spread: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(centers), (n,), generator=g)
    return centers[idx] + spread * torch.randn(n, centers.shape[1], generator=g)


def test_nearest_neighbour_matches_brute_force_cdist_for_both_layouts():
    torch.manual_seed(0)
    q = VectorQuantizer(32, 6, kmeans_init=False, restart_after=None).eval()
    q.codebook.data.normal_()
    z = torch.randn(3, 6, 5, 7)  # (B, D, H, W)
    out = q(z)
    assert isinstance(out, QuantizerOutput)
    flat = z.movedim(1, -1).reshape(-1, 6)
    expected = torch.cdist(flat, q.codebook.detach()).argmin(1).view(3, 5, 7)
    assert out.codes.shape == (3, 5, 7) and out.codes.dtype == torch.int64
    assert torch.equal(out.codes, expected)
    assert out.quantized.shape == z.shape
    torch.testing.assert_close(out.quantized, q.codebook.detach()[expected].movedim(-1, 1))
    assert torch.equal(q.encode(z), expected)
    torch.testing.assert_close(q.lookup(expected), out.quantized)

    z2 = torch.randn(2, 3, 4, 6)  # any other rank: (..., D), code dimension last (a 4-D input is channels first)
    z3 = z2.reshape(2, 12, 6)
    out3 = q(z3)
    assert out3.codes.shape == (2, 12)
    assert torch.equal(out3.codes.flatten(), torch.cdist(z3.reshape(-1, 6), q.codebook.detach()).argmin(1))
    torch.testing.assert_close(q.lookup(out3.codes, channels_first=False), out3.quantized)
    d = squared_distances(z3.reshape(-1, 6), q.codebook.detach())
    torch.testing.assert_close(d, torch.cdist(z3.reshape(-1, 6), q.codebook.detach()).pow(2), rtol=1e-4, atol=1e-4)


def test_straight_through_gradient_is_the_identity():
    torch.manual_seed(1)
    for ema in (False, True):
        q = VectorQuantizer(8, 4, ema=ema, kmeans_init=False, restart_after=None)
        z = torch.randn(2, 4, 3, 3, requires_grad=True)
        g = torch.randn(2, 4, 3, 3)
        q(z).quantized.backward(g)
        torch.testing.assert_close(z.grad, g, rtol=0, atol=0)


def test_loss_values_and_where_their_gradients_go():
    torch.manual_seed(2)
    q = VectorQuantizer(5, 3, beta=0.4, kmeans_init=False, restart_after=None)
    q.codebook.data.normal_()
    z = torch.randn(4, 7, 3, requires_grad=True)  # batch of 4, 7 vectors each
    out = q(z)
    e = q.codebook.detach()[out.codes]
    sq = (z.detach() - e).pow(2).sum() / 4  # summed over a data point, averaged over the batch
    assert set(out.losses) == {"codebook", "commitment"}
    torch.testing.assert_close(out.losses["codebook"], sq)
    torch.testing.assert_close(out.losses["commitment"], 0.4 * sq)
    torch.testing.assert_close(out.loss, 1.4 * sq)
    # codebook loss moves only the codebook, commitment loss only the encoder output
    out.losses["codebook"].backward(retain_graph=True)
    assert z.grad is None and q.codebook.grad is not None
    expected = torch.zeros_like(q.codebook)
    expected.index_add_(0, out.codes.flatten(), 2 * (e - z.detach()).reshape(-1, 3) / 4)
    torch.testing.assert_close(q.codebook.grad, expected)
    q.codebook.grad = None
    out.losses["commitment"].backward()
    assert q.codebook.grad is None
    torch.testing.assert_close(z.grad, 0.4 * 2 * (z.detach() - e) / 4)

    qe = VectorQuantizer(5, 3, ema=True, kmeans_init=False, restart_after=None)
    assert set(qe(z.detach()).losses) == {"commitment"}
    assert not qe.codebook.requires_grad


def test_ema_update_matches_a_hand_written_step():
    torch.manual_seed(3)
    K, D, decay, eps = 3, 2, 0.9, 1e-5
    q = VectorQuantizer(K, D, ema=True, decay=decay, eps=eps, kmeans_init=False, restart_after=None)
    C = torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])  # code 2 stays unused
    q.codebook.data.copy_(C)
    q.ema_sum.copy_(C)
    q.ema_count.fill_(1.0)
    z = torch.tensor([[0.1, -0.1], [0.2, 0.0], [0.9, 1.2], [1.1, 0.8], [1.0, 1.0], [-0.1, 0.1]])
    codes = q(z).codes
    assert codes.tolist() == [0, 0, 1, 1, 1, 0]
    n = torch.tensor([3.0, 3.0, 0.0])
    s = torch.stack([z[[0, 1, 5]].sum(0), z[[2, 3, 4]].sum(0), torch.zeros(2)])
    N = decay * 1.0 + (1 - decay) * n
    m = decay * C + (1 - decay) * s
    total = N.sum()
    smoothed = (N + eps) / (total + K * eps) * total
    torch.testing.assert_close(q.ema_count, N)
    torch.testing.assert_close(q.ema_sum, m)
    torch.testing.assert_close(q.codebook.detach(), m / smoothed[:, None])
    # evaluation mode leaves the codebook alone
    before = q.codebook.detach().clone()
    q.eval()
    q(z)
    assert torch.equal(q.codebook.detach(), before)


def test_kmeans_initialisation_lowers_the_quantisation_error():
    torch.manual_seed(4)
    centers = 6.0 * torch.randn(8, 4) + 10.0
    x = blobs(2000, centers, 0.3, seed=4)

    def error(q: VectorQuantizer) -> float:
        q.eval()
        return float((q(x).quantized - x).pow(2).sum(1).mean())

    q = VectorQuantizer(8, 4, kmeans_init=True, restart_after=None)
    assert not bool(q.initialized)
    q.train()(x)
    assert bool(q.initialized)
    kmeans = error(q)
    default = error(VectorQuantizer(8, 4, kmeans_init=False, restart_after=None))
    rows = []
    for seed in range(5):  # codes drawn at random from the data
        r = VectorQuantizer(8, 4, kmeans_init=False, restart_after=None)
        r.codebook.data.copy_(x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:8]])
        rows.append(error(r))
    assert kmeans < 0.01 * default
    assert kmeans < sum(rows) / len(rows)
    assert kmeans < 4 * 0.3**2 * 2  # close to the within-blob variance (4 dims x 0.09)
    # the EMA statistics start consistent with the k-means codebook
    qe = VectorQuantizer(8, 4, ema=True, restart_after=None)
    qe.train()(x)
    assert error(qe) < 4 * 0.3**2 * 2


@pytest.mark.parametrize("ema", [False, True])
def test_dead_code_restart_raises_usage_on_a_collapsed_codebook(ema):
    centers = 5.0 * torch.randn(16, 4, generator=torch.Generator().manual_seed(5))
    x = blobs(512, centers, 0.2, seed=5)

    def run(restart_after):
        torch.manual_seed(5)
        q = VectorQuantizer(16, 4, ema=ema, kmeans_init=False, restart_after=restart_after)
        q.codebook.data.fill_(100.0)  # every code far away ...
        q.codebook.data[0] = x.mean(0)  # ... but one: every vector picks code 0
        q.ema_sum.copy_(q.codebook.detach())
        for _ in range(4):
            q.train()(x)
        q.reset_usage()
        q(x)
        return q

    collapsed, restarted = run(None), run(2)
    assert collapsed.codes_in_use() == 1
    assert math.isclose(float(collapsed.codebook_perplexity()), 1.0, rel_tol=1e-5)
    assert restarted.codes_in_use() >= 10
    assert float(restarted.codebook_perplexity()) > 5.0
    assert int(restarted.usage_histogram().sum()) == 512


def test_perplexity_formula():
    assert math.isclose(float(perplexity(torch.tensor([3.0, 3.0, 3.0, 3.0]))), 4.0, rel_tol=1e-6)
    assert math.isclose(float(perplexity(torch.tensor([7.0, 0.0, 0.0]))), 1.0, rel_tol=1e-6)
    counts = torch.tensor([1.0, 2.0, 3.0, 0.0, 4.0])
    p = counts[counts > 0] / counts.sum()
    assert math.isclose(float(perplexity(counts)), math.exp(-float((p * p.log()).sum())), rel_tol=1e-6)
    assert float(perplexity(torch.zeros(4))) == 1.0
    # the forward pass reports the perplexity of its batch
    q = VectorQuantizer(4, 1, kmeans_init=False, restart_after=None).eval()
    q.codebook.data.copy_(torch.tensor([[0.0], [10.0], [20.0], [30.0]]))
    out = q(torch.tensor([[0.0], [0.1], [10.0], [20.0], [30.0], [29.0]]))
    assert out.codes.tolist() == [0, 0, 1, 2, 3, 3]
    assert math.isclose(float(out.perplexity), float(perplexity(torch.tensor([2.0, 1.0, 1.0, 2.0]))), rel_tol=1e-6)


def test_bf16_autocast_gives_the_same_codes_as_fp32():
    torch.manual_seed(6)
    q = VectorQuantizer(64, 16, kmeans_init=False, restart_after=None).eval()
    q.codebook.data.copy_(10.0 * torch.randn(64, 16) + 100.0)  # separated codes, far from the origin
    idx = torch.randint(64, (4, 8, 8))
    z = q.codebook.detach()[idx].movedim(-1, 1) + 0.5 * torch.randn(4, 16, 8, 8)
    reference = q(z).codes
    assert torch.equal(reference, idx)
    encoder = torch.nn.Conv2d(16, 16, 1)
    with torch.no_grad():
        encoder.weight.copy_(torch.eye(16)[:, :, None, None])
        encoder.bias.zero_()
    q.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = encoder(z)  # bf16 under autocast, as an encoder's output would be
        assert h.dtype == torch.bfloat16
        assert squared_distances(h.movedim(1, -1).reshape(-1, 16), q.codebook).dtype == torch.float32
        out = q(h)
    assert torch.equal(out.codes, reference)
    assert out.quantized.dtype == torch.bfloat16
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in out.losses.values())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CENTERS = 3.0 * torch.randn(12, 4, generator=torch.Generator().manual_seed(7))


def _data(rank: int, step: int) -> torch.Tensor:
    shift = 2.0 * rank  # different data per rank
    return blobs(96, CENTERS, 0.5, seed=100 * rank + step) + shift


def _make(kmeans: bool) -> VectorQuantizer:
    torch.manual_seed(11)
    return VectorQuantizer(12, 4, ema=True, decay=0.8, kmeans_init=kmeans, restart_after=2 if kmeans else None)


def _worker(rank: int, world: int, port: int, path: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.manual_seed(1000 + rank)  # different random streams per rank: restarts must still agree
        plain, health, collapsed = _make(False).train(), _make(True).train(), _make(False).train()
        collapsed.restart_after = 1
        collapsed.codebook.data.fill_(100.0)  # every vector picks code 0: the others restart after one step
        collapsed.codebook.data[0] = 0.0
        collapsed.ema_sum.copy_(collapsed.codebook.detach())
        for step in range(4):
            x = _data(rank, step)
            plain(x)
            health(x[: 40 if rank == 0 else 96])  # unequal batches, k-means initialisation
            collapsed(x)  # dead-code restarts, drawn from different random streams per rank
        states = {"plain": plain.state_dict(), "health": health.state_dict(), "collapsed": collapsed.state_dict()}
        torch.save(states, f"{path}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_keep_identical_ema_codebooks_equal_to_one_process(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert int((r0["collapsed"]["usage"] > 0).sum()) > 6  # the restarts happened, and the same on both ranks
    for name in ("plain", "health", "collapsed"):
        for key in ("codebook", "ema_count", "ema_sum", "usage", "unused_steps"):
            assert torch.equal(r0[name][key], r1[name][key]), (name, key)
    assert not torch.equal(r0["plain"]["codebook"], _make(False).codebook.detach())  # it did move
    # one process that sees both ranks' batches at once ends with the same codebook
    single = _make(False).train()
    for step in range(4):
        single(torch.cat([_data(0, step), _data(1, step)]))
    torch.testing.assert_close(r0["plain"]["codebook"], single.codebook.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(r0["plain"]["ema_count"], single.ema_count, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(r0["plain"]["usage"], single.usage)


def test_state_dict_round_trip_keeps_the_codebook_and_its_health():
    q = VectorQuantizer(8, 3, ema=True)
    q.train()(torch.randn(50, 3))
    r = VectorQuantizer(8, 3, ema=True)
    r.load_state_dict(q.state_dict())
    assert bool(r.initialized)
    x = torch.randn(20, 3)
    assert torch.equal(q.eval()(x).codes, r.eval()(x).codes)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(num_codes=1, code_dim=4), "at least 2 codes"),
        (dict(num_codes=0, code_dim=4), "at least 2 codes"),
        (dict(num_codes=8, code_dim=0), "code_dim"),
        (dict(num_codes=8, code_dim=4, beta=-0.1), "beta"),
        (dict(num_codes=8, code_dim=4, beta=float("nan")), "beta"),
        (dict(num_codes=8, code_dim=4, decay=0.0), "decay"),
        (dict(num_codes=8, code_dim=4, decay=1.0), "decay"),
        (dict(num_codes=8, code_dim=4, decay=1.5), "decay"),
        (dict(num_codes=8, code_dim=4, eps=0.0), "eps"),
        (dict(num_codes=8, code_dim=4, restart_after=0), "restart_after"),
        (dict(num_codes=8, code_dim=4, kmeans_iters=0), "kmeans_iters"),
    ],
)
def test_bad_settings_are_clear_errors(kwargs, match):
    with pytest.raises(VaelabError, match=match):
        VectorQuantizer(**kwargs)


def test_bad_inputs_are_clear_errors():
    q = VectorQuantizer(8, 4)
    with pytest.raises(VaelabError, match=r"channel dimension .* is 3, but .* code_dim is 4"):
        q(torch.randn(2, 3, 5, 5))
    with pytest.raises(VaelabError, match=r"last dimension is 5, but .* code_dim is 4"):
        q(torch.randn(2, 7, 5))
    with pytest.raises(VaelabError, match="floating-point"):
        q(torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(VaelabError, match="shape"):
        q(torch.randn(4))
    with pytest.raises(VaelabError, match="empty"):
        q(torch.randn(0, 4))
    with pytest.raises(VaelabError, match=r"codes must lie in \[0, 8\)"):
        q.lookup(torch.tensor([0, 8]))
    with pytest.raises(VaelabError, match="integer"):
        q.lookup(torch.tensor([0.0]))

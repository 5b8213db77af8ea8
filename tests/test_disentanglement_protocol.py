"""The disentanglement_lib protocol rule by rule, on hand-made tables whose answer is known: FactorVAE pruning
(std >= 0.05, ddof 1) and normalisation, distinct train/test points, SAP's class-balanced linear SVM, MIG's 20
equal-width bins, DCI's gradient-boosted-tree importances, BetaVAE's logistic regression, the ``*_from_codes``
entry points."""

from __future__ import annotations

import numpy as np
import pytest

from vaelab.core.errors import VaelabError
from vaelab.data.dsprites import DSprites
from vaelab.data.factors import FactorValues
from vaelab.eval import disentanglement as dis


def grid(*sizes: int) -> np.ndarray:
    """Every point of a factor grid, factor indices (N, K)."""
    return np.stack(np.unravel_index(np.arange(int(np.prod(sizes))), sizes), axis=-1)


def test_factorvae_prunes_units_whose_std_with_ddof_1_is_below_0_05():
    # two points +-a, repeated: std (ddof 0) = a, std (ddof 1) = a sqrt(4 / 3)
    codes = np.c_[[0.045, -0.045] * 2, [0.04, -0.04] * 2, [0.3, -0.3, 0.1, -0.1]]
    variance, active = dis.active_units(codes)
    assert np.allclose(variance, codes.var(axis=0, ddof=1))
    assert active.tolist() == [True, False, True]  # 0.045 * 1.155 = 0.052 kept; 0.046 pruned (ddof 0 would prune both)


def test_factorvae_keeps_a_small_unit_the_old_variance_rule_dropped():
    """Unit 0 is factor 0 times 0.15 (variance 0.028, std 0.17): kept by std >= 0.05, dropped by variance > 0.05."""
    factors = grid(4, 5)
    noise = np.random.default_rng(0).normal(size=len(factors)) * 0.01  # std 0.01: pruned
    codes = np.c_[0.15 * factors[:, 0], factors[:, 1], noise]
    sizes = dict(batch_size=8, num_train=200, num_eval=200, num_variance_estimate=500)
    score = dis.factorvae_from_codes(codes, factors, seed=0, **sizes)
    assert score["num_active_dims"] == 2 and score["eval_accuracy"] == 1.0
    old = dis.factorvae_from_codes(codes, factors, seed=0, prune_threshold=0.05**0.5, **sizes)
    assert old["num_active_dims"] == 1 and old["eval_accuracy"] < 0.7  # factor 0 has no unit left to vote for it
    # normalised by the global std: scaling a unit changes nothing
    scaled = dis.factorvae_from_codes(codes * [1000.0, 0.5, 1.0], factors, seed=0, **sizes)
    assert scaled["eval_accuracy"] == score["eval_accuracy"]


def test_dci_and_sap_test_points_are_distinct_from_training_points():
    source = FactorValues((3, 4, 6, 8, 8))  # 4,608 grid points
    seen = []

    def recording(x):
        seen.append(x)
        return x

    dis.sap_score(source, recording, num_train=3000, num_test=1608)  # the whole grid, each point once
    points = np.concatenate(seen)
    assert len(points) == len(source) and len(np.unique(points, axis=0)) == len(source)
    with pytest.raises(VaelabError, match=r"needs 4609 distinct grid points .* the grid has 4608"):
        dis.dci_score(source, recording, num_train=3000, num_test=1609)
    seen.clear()
    dis.sap_score(source, recording, num_train=3000, num_test=3000, distinct=False)  # the reference's draw
    assert len(np.unique(np.concatenate(seen), axis=0)) < 6000
    with pytest.raises(VaelabError, match="the grid has 23040"):
        dis.dci_score(DSprites.small(), recording, num_train=20_000, num_test=5_000)


def test_sap_scores_discrete_factors_by_a_class_balanced_linear_svm():
    """95/5 training classes that overlap a little: an unweighted SVM with C = 0.01 names the majority everywhere
    (0.5 on balanced test points), the class-balanced one names both (1.0). A constant unit scores 0.5."""
    y = np.r_[np.zeros(950, int), np.ones(50, int)]
    z = y + np.tile(np.linspace(-0.4, 0.4, 10), 100)
    y_test = np.r_[np.zeros(50, int), np.ones(50, int)]
    codes, codes_test = np.c_[z, np.zeros(1000)], np.c_[y_test.astype(float), np.zeros(100)]
    assert dis.sap_matrix(codes, y[:, None], codes_test, y_test[:, None]).ravel().tolist() == [1.0, 0.5]
    assert dis.sap_from_codes(codes, y[:, None], codes_test, y_test[:, None]) == {"sap": 0.5}
    # continuous_factors: the squared correlation on the training points, 0 for the constant unit
    r2 = dis.sap_matrix(codes, y[:, None], codes_test, y_test[:, None], continuous_factors=True).ravel()
    assert r2[0] == pytest.approx(np.corrcoef(z, y)[0, 1] ** 2) and r2[1] == 0.0


def test_mig_uses_20_equal_width_bins():
    """A unit equal to a uniform 40-valued factor: 20 equal-width bins hold two values each, so
    I(z; v) = ln 20 and MIG = ln 20 / ln 40 (a constant second unit carries nothing)."""
    v = np.repeat(np.arange(40), 10)
    codes = np.c_[v * 0.37 - 2.0, np.zeros(len(v))]
    bins = dis.discretize(codes)
    assert bins[:, 0].min() == 0 and bins[:, 0].max() == 19 and (np.bincount(bins[:, 0]) == 20).all()
    assert dis.mig_from_codes(codes, v[:, None])["mig"] == pytest.approx(np.log(20) / np.log(40), abs=1e-12)
    assert dis.mig_from_codes(codes, v[:, None], bins=10)["mig"] == pytest.approx(np.log(10) / np.log(40), abs=1e-12)


def test_dci_importances_come_from_default_gradient_boosted_trees():
    from sklearn.ensemble import GradientBoostingClassifier

    rng = np.random.default_rng(0)
    factors = rng.integers(0, 4, size=(400, 2))
    codes = np.c_[factors[:, 0] + 0.1 * rng.normal(size=400), factors[:, 1] * 2.0, rng.normal(size=400)]
    importance, _, _ = dis.importance_matrix(codes, factors, codes, factors, seed=0)
    for k in range(2):
        reference = GradientBoostingClassifier(random_state=0).fit(codes, factors[:, k])
        assert np.allclose(importance[:, k], reference.feature_importances_)
    assert importance[2].max() < 0.05 and importance[0, 0] > 0.9 and importance[1, 1] > 0.9
    score = dis.dci_from_codes(codes, factors, codes, factors)
    assert score["disentanglement"] > 0.9 and score["informativeness_test"] == 1.0


def test_dci_from_known_importance_matrices():
    assert dis.dci_from_importance(np.eye(3)) == pytest.approx((1.0, 1.0))
    assert dis.dci_from_importance(np.ones((3, 3))) == pytest.approx((0.0, 0.0), abs=1e-9)
    # two codes for one factor: each code names one factor (D = 1), the factor is spread over two codes (C = 0)
    assert dis.dci_from_importance(np.array([[1.0, 0.0], [1.0, 0.0]])) == pytest.approx((1.0, 0.0), abs=1e-9)
    assert dis.dci_from_importance(np.zeros((2, 2))) == pytest.approx((0.0, 0.0), abs=1e-9)


def test_betavae_score_from_codes_of_the_whole_grid():
    factors = grid(3, 4, 5)
    perfect = dis.betavae_from_codes(factors.astype(float), factors, seed=0, batch_size=16, num_train=300, num_eval=300)
    assert perfect["eval_accuracy"] == 1.0
    mixed = factors @ np.ones((3, 3))  # every unit the sum of the factors: the fixed one cannot be named
    assert dis.betavae_from_codes(mixed, factors, batch_size=16, num_train=300, num_eval=300)["eval_accuracy"] < 0.7
    with pytest.raises(VaelabError, match="one code per grid point"):
        dis.betavae_from_codes(factors[:-1].astype(float), factors[:-1])
    with pytest.raises(VaelabError, match=r"\(N, D\) and factors \(N, K\)"):
        dis.mig_from_codes(np.zeros((5, 2)), np.zeros((4, 1)))

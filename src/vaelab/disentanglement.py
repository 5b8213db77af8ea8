"""Disentanglement metrics: pure functions of a factor data set, an encoder and a seed; each returns floats.

``source`` is a factor data set (``vaelab.data.factors.FactorDataset``: factor_names, factor_sizes, categorical,
sample_factors, sample_fixed, render); ``encode(images) -> codes (N, D)`` (NumPy or torch) is the representation,
typically the posterior means. ``factors`` restricts a metric to some factors by name (default: every factor with
more than one value).

betavae_score      Higgins et al. 2017: a point is the mean |z1 - z2| over pairs that share one random factor k;
                   a logistic regression predicts k. Chance is 1 / K.
factorvae_score    Kim & Mnih 2018: codes divided by their std over the data; in batches with factor k fixed, the
                   dimension of least variance votes for k; a majority-vote classifier dim -> factor. Chance 1 / K.
mig                Chen et al. 2018: codes discretised into bins; I(z_d; v_k) / H(v_k), gap between the top two d.
dci                Eastwood & Williams 2018: importance matrix R (D, K) from tree ensembles predicting each factor;
                   disentanglement = sum_d rho_d (1 - H_K(P_d.)), completeness = sum_k rho_k (1 - H_D(P_.k)),
                   informativeness = mean test accuracy.
sap                Kumar et al. 2018: score matrix S (D, K): R^2 of a linear fit of v_k on z_d (ordinal factors) or
                   the test accuracy of thresholds on z_d (a depth-limited tree, categorical factors); mean over k
                   of the gap between the top two d.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from vaelab.errors import VaelabError

Encoder = Callable[[np.ndarray], Any]
REQUIRED = ("factor_names", "factor_sizes", "sample_factors", "sample_fixed", "render")


# -- shared helpers ----------------------------------------------------------------------------------------------


def check_source(source: object) -> None:
    """VaelabError unless ``source`` is a data set with ground-truth factors."""
    missing = [name for name in REQUIRED if not hasattr(source, name)]
    if missing or not getattr(source, "factor_sizes", None):
        raise VaelabError(
            f"{type(source).__name__} has no ground-truth factors; disentanglement metrics need a data set with "
            "factors such as dsprites (missing: " + ", ".join(missing or ["factor_sizes"]) + ")"
        )


def select_factors(source: Any, factors: Sequence[str] | None = None) -> list[int]:
    """Positions of the named factors (default: every factor with more than one value); VaelabError if unknown."""
    check_source(source)
    names = list(source.factor_names)
    if factors is None:
        chosen = [k for k, size in enumerate(source.factor_sizes) if size > 1]
    else:
        if isinstance(factors, str):
            factors = [factors]
        unknown = [f for f in factors if f not in names]
        if unknown:
            raise VaelabError(f"unknown factor {unknown[0]!r}; this data set has: {', '.join(names)}")
        chosen = [names.index(f) for f in factors]
        single = [names[k] for k in chosen if source.factor_sizes[k] < 2]
        if single:
            raise VaelabError(f"factor {single[0]!r} takes a single value; no metric can be measured on it")
    if not chosen:
        raise VaelabError("no factor with more than one value to measure")
    return chosen


def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def encode_factors(source: Any, encode: Encoder, factors: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Codes (N, D) float64 of the images at factor indices (N, K), rendered and encoded batch_size at a time."""
    codes = []
    for start in range(0, len(factors), batch_size):
        z = encode(source.render(factors[start : start + batch_size]))
        if hasattr(z, "detach"):
            z = z.detach().cpu().numpy()
        z = np.asarray(z, dtype=np.float64)
        if z.ndim != 2 or len(z) != len(factors[start : start + batch_size]):
            raise VaelabError(f"encode must return codes of shape (N, D) for N images, got {z.shape}")
        codes.append(z)
    codes = np.concatenate(codes)
    if not np.isfinite(codes).all():
        raise VaelabError("encode returned non-finite codes")
    return codes


def _sample_codes(source, encode, n: int, rng, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    if n < 2:
        raise VaelabError(f"need at least 2 samples, got {n}")
    factors = source.sample_factors(n, rng)
    return encode_factors(source, encode, factors, batch_size), factors


def _entropy(p: np.ndarray, base: int, axis: int) -> np.ndarray:
    """Entropy in log-base ``base`` of distributions along ``axis`` (so 1 for uniform over base outcomes)."""
    p = np.clip(p, 1e-12, None)
    return -(p * np.log(p)).sum(axis=axis) / np.log(base) if base > 1 else np.zeros(p.shape[1 - axis])


# -- BetaVAE score -----------------------------------------------------------------------------------------------


def betavae_score(
    source: Any,
    encode: Encoder,
    seed: int | np.random.Generator = 0,
    batch_size: int = 64,
    num_train: int = 10_000,
    num_eval: int = 5_000,
    factors: Sequence[str] | None = None,
) -> dict[str, float]:
    """Higgins et al. 2017: accuracy of a linear classifier naming the fixed factor from mean |z1 - z2|."""
    from sklearn.linear_model import LogisticRegression

    chosen = select_factors(source, factors)
    rng = _rng(seed)

    def points(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, len(chosen), n)
        feats = []
        for label in labels:
            k = chosen[label]
            f1 = source.sample_factors(batch_size, rng)
            f2 = source.sample_factors(batch_size, rng)
            f2[:, k] = f1[:, k]
            z = encode_factors(source, encode, np.concatenate([f1, f2]))
            feats.append(np.abs(z[:batch_size] - z[batch_size:]).mean(axis=0))
        return np.stack(feats), labels

    x_train, y_train = points(num_train)
    x_eval, y_eval = points(num_eval)
    if len(np.unique(y_train)) < 2:
        accuracy = float(np.mean(y_eval == y_train[0]))
        return {"train_accuracy": float(np.mean(y_train == y_train[0])), "eval_accuracy": accuracy}
    model = LogisticRegression(max_iter=2000).fit(x_train, y_train)
    return {
        "train_accuracy": float(model.score(x_train, y_train)),
        "eval_accuracy": float(model.score(x_eval, y_eval)),
    }


# -- FactorVAE score ---------------------------------------------------------------------------------------------


def factorvae_score(
    source: Any,
    encode: Encoder,
    seed: int | np.random.Generator = 0,
    batch_size: int = 64,
    num_train: int = 10_000,
    num_eval: int = 5_000,
    num_variance_estimate: int = 10_000,
    prune_variance: float = 0.05,
    factors: Sequence[str] | None = None,
) -> dict[str, float]:
    """Kim & Mnih 2018: majority-vote accuracy of "the dim of least normalised variance names the fixed factor"."""
    chosen = select_factors(source, factors)
    rng = _rng(seed)
    codes, _ = _sample_codes(source, encode, num_variance_estimate, rng, 1024)
    variance = codes.var(axis=0)
    active = variance > prune_variance  # collapsed units would always have the least variance
    std = np.sqrt(np.where(active, variance, 1.0))
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0.0}
    dims = np.flatnonzero(active)

    def votes(n: int) -> np.ndarray:
        table = np.zeros((codes.shape[1], len(chosen)), dtype=np.int64)
        for _ in range(n):
            label = rng.integers(0, len(chosen))
            z = encode_factors(source, encode, source.sample_fixed(chosen[label], batch_size, rng)) / std
            table[dims[np.argmin(z[:, dims].var(axis=0))], label] += 1
        return table

    train, test = votes(num_train), votes(num_eval)
    classifier = train.argmax(axis=1)  # dim -> factor
    rows = np.arange(len(classifier))
    return {
        "train_accuracy": float(train[rows, classifier].sum() / train.sum()),
        "eval_accuracy": float(test[rows, classifier].sum() / test.sum()),
        "num_active_dims": float(active.sum()),
    }


# -- MIG ---------------------------------------------------------------------------------------------------------


def discretize(codes: np.ndarray, bins: int = 20) -> np.ndarray:
    """Each column of codes (N, D) into ``bins`` equal-width bins over its range: ints (N, D)."""
    out = np.zeros(codes.shape, dtype=np.int64)
    for d in range(codes.shape[1]):
        edges = np.histogram_bin_edges(codes[:, d], bins)
        out[:, d] = np.digitize(codes[:, d], edges[1:-1])
    return out


def mutual_information(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """I(code_d; factor_k) in nats for discrete codes (N, D) and factors (N, K): (D, K)."""
    from sklearn.metrics import mutual_info_score

    return np.array(
        [
            [mutual_info_score(factors[:, k], codes[:, d]) for k in range(factors.shape[1])]
            for d in range(codes.shape[1])
        ]
    )


def mig(
    source: Any,
    encode: Encoder,
    seed: int | np.random.Generator = 0,
    num_samples: int = 10_000,
    bins: int = 20,
    factors: Sequence[str] | None = None,
) -> dict[str, float]:
    """Chen et al. 2018: mean over factors of (I top1 - I top2) / H(v_k); also per factor as ``mig/<name>``."""
    from sklearn.metrics import mutual_info_score

    chosen = select_factors(source, factors)
    codes, truth = _sample_codes(source, encode, num_samples, _rng(seed), 1024)
    truth = truth[:, chosen]
    info = mutual_information(discretize(codes, bins), truth)
    entropy = np.array([mutual_info_score(truth[:, k], truth[:, k]) for k in range(truth.shape[1])])
    top = np.sort(info, axis=0)[::-1]
    second = top[1] if len(top) > 1 else np.zeros(top.shape[1])
    gaps = (top[0] - second) / np.maximum(entropy, 1e-12)
    result = {"mig": float(gaps.mean())}
    result.update({f"mig/{source.factor_names[k]}": float(g) for k, g in zip(chosen, gaps)})
    return result


# -- DCI ---------------------------------------------------------------------------------------------------------


def importance_matrix(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    model: str = "forest",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Importances (D, K) of codes for each factor, and train/test accuracies (K,), from one classifier per factor.

    model: "forest" (random forest, fast) or "gbt" (gradient-boosted trees, as in disentanglement_lib).
    """
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier

    if model not in ("forest", "gbt"):
        raise VaelabError(f"unknown DCI model {model!r}; use 'forest' or 'gbt'")
    importance = np.zeros((x_train.shape[1], y_train.shape[1]))
    train_acc, test_acc = np.zeros(y_train.shape[1]), np.zeros(y_train.shape[1])
    for k in range(y_train.shape[1]):
        if model == "forest":
            clf = RandomForestClassifier(
                n_estimators=30, min_samples_leaf=2, max_features=None, random_state=seed, n_jobs=1
            )
        else:
            clf = GradientBoostingClassifier(n_estimators=30, random_state=seed)
        clf.fit(x_train, y_train[:, k])
        importance[:, k] = np.abs(clf.feature_importances_)
        train_acc[k] = clf.score(x_train, y_train[:, k])
        test_acc[k] = clf.score(x_test, y_test[:, k])
    return importance, train_acc, test_acc


def dci_from_importance(importance: np.ndarray) -> tuple[float, float]:
    """(disentanglement, completeness) of an importance matrix (D codes, K factors)."""
    total = importance.sum()
    if total <= 0:
        return 0.0, 0.0
    d, k = importance.shape
    per_code = 1.0 - _entropy(importance / np.maximum(importance.sum(axis=1, keepdims=True), 1e-12), k, axis=1)
    per_factor = 1.0 - _entropy(importance / np.maximum(importance.sum(axis=0, keepdims=True), 1e-12), d, axis=0)
    disentanglement = float((per_code * importance.sum(axis=1) / total).sum())
    completeness = float((per_factor * importance.sum(axis=0) / total).sum())
    return disentanglement, completeness


def dci(
    source: Any,
    encode: Encoder,
    seed: int | np.random.Generator = 0,
    num_train: int = 10_000,
    num_test: int = 5_000,
    model: str = "forest",
    factors: Sequence[str] | None = None,
) -> dict[str, float]:
    """Eastwood & Williams 2018: disentanglement, completeness and informativeness (train and test accuracy)."""
    chosen = select_factors(source, factors)
    rng = _rng(seed)
    x_train, y_train = _sample_codes(source, encode, num_train, rng, 1024)
    x_test, y_test = _sample_codes(source, encode, num_test, rng, 1024)
    importance, train_acc, test_acc = importance_matrix(
        x_train, y_train[:, chosen], x_test, y_test[:, chosen], model, seed=int(rng.integers(2**31))
    )
    disentanglement, completeness = dci_from_importance(importance)
    return {
        "disentanglement": disentanglement,
        "completeness": completeness,
        "informativeness_train": float(train_acc.mean()),
        "informativeness_test": float(test_acc.mean()),
    }


# -- SAP ---------------------------------------------------------------------------------------------------------


def sap_matrix(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    categorical: Sequence[bool],
) -> np.ndarray:
    """Scores (D, K): R^2 of z_d -> v_k (ordinal, on the test set) or threshold accuracy (categorical)."""
    from sklearn.tree import DecisionTreeClassifier

    scores = np.zeros((x_train.shape[1], y_train.shape[1]))
    for k in range(y_train.shape[1]):
        for d in range(x_train.shape[1]):
            if categorical[k]:
                depth = max(1, int(np.ceil(np.log2(len(np.unique(y_train[:, k]))))))
                tree = DecisionTreeClassifier(max_depth=depth, random_state=0).fit(x_train[:, d : d + 1], y_train[:, k])
                scores[d, k] = tree.score(x_test[:, d : d + 1], y_test[:, k])
            else:
                z, v = x_test[:, d], y_test[:, k].astype(np.float64)
                if z.std() > 0 and v.std() > 0:
                    scores[d, k] = np.corrcoef(z, v)[0, 1] ** 2
    return scores


def sap(
    source: Any,
    encode: Encoder,
    seed: int | np.random.Generator = 0,
    num_train: int = 10_000,
    num_test: int = 5_000,
    factors: Sequence[str] | None = None,
) -> dict[str, float]:
    """Kumar et al. 2018: mean over factors of the gap between the two best single-code scores."""
    chosen = select_factors(source, factors)
    rng = _rng(seed)
    x_train, y_train = _sample_codes(source, encode, num_train, rng, 1024)
    x_test, y_test = _sample_codes(source, encode, num_test, rng, 1024)
    categorical = getattr(source, "categorical", None) or (False,) * len(source.factor_sizes)
    scores = sap_matrix(x_train, y_train[:, chosen], x_test, y_test[:, chosen], [categorical[k] for k in chosen])
    top = np.sort(scores, axis=0)[::-1]
    second = top[1] if len(top) > 1 else np.zeros(top.shape[1])
    return {"sap": float((top[0] - second).mean())}


# -- all of them -------------------------------------------------------------------------------------------------

METRICS: dict[str, Callable[..., dict[str, float]]] = {
    "betavae": betavae_score,
    "factorvae": factorvae_score,
    "mig": mig,
    "dci": dci,
    "sap": sap,
}


def all_metrics(
    source: Any,
    encode: Encoder,
    seed: int = 0,
    metrics: Sequence[str] | None = None,
    factors: Sequence[str] | None = None,
    **sizes: dict[str, Any],
) -> dict[str, float]:
    """The chosen metrics (default all) with a fixed seed, flattened as ``<metric>/<key>``; ``sizes`` maps a metric
    to its keyword arguments (sample sizes). Each metric starts from the same seed, so one's result does not depend
    on which others ran."""
    check_source(source)
    chosen = list(METRICS) if metrics is None else list(metrics)
    unknown = sorted((set(sizes) | set(chosen)) - set(METRICS))
    if unknown:
        raise VaelabError(f"unknown metric {unknown[0]!r}; the metrics are: {', '.join(METRICS)}")
    select_factors(source, factors)  # an unknown factor fails before any metric runs
    out: dict[str, float] = {}
    for name in [m for m in METRICS if m in chosen]:
        for key, value in METRICS[name](source, encode, seed=seed, factors=factors, **sizes.get(name, {})).items():
            out[key if key.startswith(name) else f"{name}/{key}"] = value
    return out


# -- a trained run -----------------------------------------------------------------------------------------------

#: sample sizes of ``vaelab disentanglement --quick``: about a tenth of the defaults (for tests and first looks)
QUICK_SIZES: dict[str, dict[str, int]] = {
    "betavae": {"num_train": 1000, "num_eval": 500},
    "factorvae": {"num_train": 1000, "num_eval": 500, "num_variance_estimate": 2000},
    "mig": {"num_samples": 2000},
    "dci": {"num_train": 2000, "num_test": 1000},
    "sap": {"num_train": 2000, "num_test": 1000},
}


def run_disentanglement(
    run: Any,
    seed: int = 0,
    metrics: Sequence[str] | None = None,
    factors: Sequence[str] | None = None,
    device: str = "cpu",
    data_dir: str | None = None,
    quick: bool = False,
) -> dict[str, Any]:
    """The metrics of a loaded run (``vaelab.run.Run``) on the factor source of its data set, codes = the model's
    deterministic code (a VAE's posterior mean). Merged into RUN/eval.json under ``disentanglement``, other keys
    kept; returns that entry: {"seed", "factors", "metrics", "scores": {...}}."""
    import json

    import torch

    from vaelab.data import resolve_data_dir
    from vaelab.data.factors import factor_source

    source = factor_source(run.config.data.name, resolve_data_dir(data_dir or run.config.data.data_dir))
    chosen = select_factors(source, factors)
    shape = tuple(run.config.data_shape or ())
    rendered = tuple(source.render(source.sample_factors(1, np.random.default_rng(0))).shape[1:])
    if rendered != shape:
        raise VaelabError(f"the factor source draws images of shape {rendered}, the run was trained on {shape}")
    model = run.model.to(device).eval()

    @torch.no_grad()
    def encode(images: np.ndarray) -> np.ndarray:  # in chunks of 256: larger batches run slower on a CPU
        x = torch.from_numpy(images).to(device)
        return torch.cat([model.code(x[i : i + 256]).float() for i in range(0, len(x), 256)]).cpu().numpy()

    sizes = QUICK_SIZES if quick else {}
    names = list(METRICS) if metrics is None else list(metrics)
    scores = all_metrics(
        source, encode, seed, metrics=names, factors=factors, **{m: sizes[m] for m in names if m in sizes}
    )
    entry = {
        "seed": seed,
        "factors": [source.factor_names[k] for k in chosen],
        "metrics": [m for m in METRICS if m in names],
        "quick": quick,
        "scores": scores,
    }
    path = run.path / "eval.json"
    previous: dict[str, Any] = {}
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise VaelabError(f"{path} is not valid JSON; delete it or run vaelab eval again") from None
    previous.pop("model", None), previous.pop("data", None)
    run.write_report("eval.json", {**previous, "disentanglement": entry})
    return entry

"""fairseq_switch/lab/probe_selection.py: correlation statistics against scipy, the three point selectors
(determinism, budget, recovery of planted clusters), and the budget split across tasks."""

import numpy as np
import pytest
import scipy.stats
from sklearn.metrics import adjusted_rand_score

from fairseq_switch.lab import probe_selection as ps

SELECTORS = {
    "random": lambda T, b, seed: ps.select_random(T.shape[0], b, seed),
    "correlation": ps.select_by_correlation,
    "polyfit": ps.select_by_polyfit,
}


# ----------------------------------------------------------------------------- fixtures


def planted(n_per=30, n_ckpt=20, noise=0.02, seed=0):
    """(T, labels): 4 clusters of distinct curve shapes (rising, falling, a bump, a dip) with a small
    per-point offset and noise, points shuffled so clusters are not contiguous."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 1.0, n_ckpt)
    bump = 4 * x * (1 - x)
    shapes = [0.3 + 0.5 * x, 0.8 - 0.5 * x, 0.4 + 0.4 * bump, 0.7 - 0.4 * bump]
    rows, labels = [], []
    for c, shape in enumerate(shapes):
        for _ in range(n_per):
            rows.append(shape + rng.uniform(-0.03, 0.03) + rng.normal(0.0, noise, n_ckpt))
            labels.append(c)
    perm = rng.permutation(len(rows))
    return np.asarray(rows)[perm], np.asarray(labels)[perm]


# ----------------------------------------------------------------------------- correlation statistics


@pytest.mark.parametrize("n", [3, 4, 7, 30, 500])
def test_pearson_matches_scipy(n):
    rng = np.random.default_rng(n)
    for _ in range(10):
        x = rng.normal(size=n) * rng.uniform(0.1, 100)
        y = rng.uniform(-2, 2) * x + rng.normal(size=n)
        r, p = ps.pearson(x, y)
        ref = scipy.stats.pearsonr(x, y)
        assert abs(r - ref.statistic) < 1e-10
        assert abs(p - ref.pvalue) < 1e-10


@pytest.mark.parametrize("n", [3, 5, 8, 40, 500])
def test_spearman_matches_scipy_with_ties(n):
    rng = np.random.default_rng(100 + n)
    checked = 0
    for _ in range(20):
        x = rng.integers(0, max(2, n // 3), n).astype(float)  # many ties
        y = x + rng.integers(-2, 3, n)
        if np.all(x == x[0]) or np.all(y == y[0]):
            continue
        r, p = ps.spearman(x, y)
        ref = scipy.stats.spearmanr(x, y)
        if abs(abs(ref.statistic) - 1) < 1e-12:
            continue  # perfect rank agreement: see test_perfect_correlation_is_exact
        assert abs(r - ref.statistic) < 1e-10
        assert abs(p - ref.pvalue) < 1e-10
        checked += 1
    assert checked >= 10
    # continuous data (no ties) too
    x, y = rng.normal(size=n), rng.normal(size=n)
    r, p = ps.spearman(x, y)
    ref = scipy.stats.spearmanr(x, y)
    assert abs(r - ref.statistic) < 1e-10 and abs(p - ref.pvalue) < 1e-10


def test_average_ranks_match_scipy():
    a = np.array([3.0, 1.0, 3.0, 2.0, 3.0, 1.0, 7.0])
    np.testing.assert_array_equal(ps._average_ranks(a), scipy.stats.rankdata(a))


def test_perfect_correlation_is_exact():
    # r rounds to 0.9999999999999998 here; with 1 degree of freedom that alone would give p ~ 1e-8
    assert ps.pearson([0, 1, 2], [1, 3, 5]) == (1.0, 0.0)
    assert ps.spearman([1, 2, 3], [10, 20, 30]) == (1.0, 0.0)
    assert ps.spearman([1, 2, 3, 4], [9, 4, 1, 0]) == (-1.0, 0.0)


@pytest.mark.parametrize("fn", [ps.pearson, ps.spearman])
def test_correlation_errors(fn):
    with pytest.raises(ValueError, match="at least 3"):
        fn([1, 2], [2, 1])
    with pytest.raises(ValueError, match="differ in length"):
        fn([1, 2, 3], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="x is constant"):
        fn([2, 2, 2, 2], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="y is constant"):
        fn([1, 2, 3, 4], [5, 5, 5, 5])
    with pytest.raises(ValueError, match="NaN"):
        fn([1, 2, np.nan], [1, 2, 3])
    with pytest.raises(ValueError, match="1-D"):
        fn([[1, 2, 3]], [[1, 2, 3]])


def test_top1_agreement():
    assert ps.top1_agreement([0.1, 0.9, 0.5], [60, 80, 70])
    assert not ps.top1_agreement([0.1, 0.9, 0.5], [60, 70, 80])
    # tied probe scores: Algorithm 1 keeps the first (replaces only on a strictly better score)
    assert ps.top1_agreement([0.9, 0.9, 0.5], [80, 70, 60])
    assert not ps.top1_agreement([0.9, 0.9, 0.5], [70, 80, 60])
    # tied best true quality: either pick is right
    assert ps.top1_agreement([0.1, 0.9, 0.5], [80, 80, 60])
    with pytest.raises(ValueError, match="differ in length"):
        ps.top1_agreement([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="empty"):
        ps.top1_agreement([], [])


def test_ranking_spearman():
    assert ps.ranking_spearman([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert ps.ranking_spearman([4, 3, 2, 1], [10, 20, 30, 40]) == -1.0
    assert ps.ranking_spearman([0.2, 0.1], [70, 80]) == -1.0  # two candidates are enough
    x, y = [0.3, 0.1, 0.2, 0.2, 0.9], [5, 1, 4, 2, 3]
    assert ps.ranking_spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y).statistic, abs=1e-12)
    with pytest.raises(ValueError, match="constant"):
        ps.ranking_spearman([1, 1, 1], [1, 2, 3])
    with pytest.raises(ValueError, match="at least 2"):
        ps.ranking_spearman([1], [1])


# ----------------------------------------------------------------------------- selection


@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_selection_deterministic_and_within_budget(name):
    select = SELECTORS[name]
    T, _ = planted(n_per=10, n_ckpt=8, noise=0.1, seed=3)
    n = T.shape[0]
    for budget in (1, 3, 7, n - 1, n, n + 5):
        a = select(T, budget, 11)
        b = select(T, budget, 11)
        np.testing.assert_array_equal(a, b)
        assert a.dtype.kind == "i"
        assert a.size == min(budget, n)
        assert np.unique(a).size == a.size
        assert np.all(np.diff(a) > 0)  # sorted
        assert a.min() >= 0 and a.max() < n
    for bad in (0, -1):
        with pytest.raises(ValueError, match="positive"):
            select(T, bad, 0)
    with pytest.raises(ValueError, match="integer"):
        select(T, 2.5, 0)


def test_random_selection_depends_on_seed():
    draws = {tuple(ps.select_random(100, 5, seed)) for seed in range(5)}
    assert len(draws) > 1


@pytest.mark.parametrize("method", ["correlation", "polyfit"])
def test_planted_clusters_recovered(method):
    T, truth = planted()
    if method == "correlation":
        labels = ps.cluster_by_correlation(T, 4)
        chosen = ps.select_by_correlation(T, 4, seed=0)
    else:
        labels, centroids, coefs = ps.cluster_by_polyfit(T, 4, seed=0)
        assert coefs.shape == (T.shape[0], 3) and centroids.shape == (4, 3)
        chosen = ps.select_by_polyfit(T, 4, seed=0)
    assert adjusted_rand_score(truth, labels) == 1.0
    assert sorted(truth[chosen]) == [0, 1, 2, 3]  # one point from each planted cluster
    # and each representative is in the cluster it represents
    assert sorted(labels[chosen]) == [0, 1, 2, 3]


def test_medoid_is_most_correlated_member():
    T, _ = planted(n_per=15, seed=5)
    C = ps.trajectory_correlations(T)
    labels = ps.cluster_by_correlation(T, 4)
    for i in ps.select_by_correlation(T, 4):
        members = np.flatnonzero(labels == labels[i])
        assert i == members[np.argmax(C[np.ix_(members, members)].sum(axis=1))]


def test_trajectory_correlations_constant_rows():
    T = np.array([[0.1, 0.5, 0.9], [0.2, 0.4, 0.8], [1.0, 1.0, 1.0], [0.3, 0.3, 0.3]])
    C = ps.trajectory_correlations(T)
    assert np.all(np.isfinite(C))
    np.testing.assert_allclose(C, C.T)
    np.testing.assert_array_equal(np.diag(C), 1.0)
    assert C[2, 3] == 1.0 and C[0, 2] == 0.0
    assert C[0, 1] == pytest.approx(scipy.stats.pearsonr(T[0], T[1]).statistic, abs=1e-12)
    assert ps.select_by_correlation(T, 2).tolist() in ([0, 2], [0, 3], [1, 2], [1, 3])


def test_polyfit_handles_fewer_distinct_points_than_budget():
    T = np.vstack([np.tile([0.1, 0.2, 0.3, 0.4], (6, 1)), np.tile([0.9, 0.5, 0.5, 0.9], (4, 1))])
    chosen = ps.select_by_polyfit(T, 5, seed=0)
    assert chosen.size == 5 and np.unique(chosen).size == 5


def test_polyfit_coefficients():
    x = np.linspace(-1, 1, 6)
    T = np.stack([0.5 + 0.2 * x - 0.1 * x ** 2, 0.3 - 0.4 * x])
    np.testing.assert_allclose(ps.polyfit_coefficients(T, 2), [[0.5, 0.2, -0.1], [0.3, -0.4, 0.0]], atol=1e-12)
    # uneven checkpoint steps are normalised to [-1, 1] by their own positions
    steps = np.array([0, 100, 300, 700, 1500, 3100])
    u = 2 * steps / 3100 - 1
    np.testing.assert_allclose(ps.polyfit_coefficients(0.5 + 0.2 * u[None], 1, steps), [[0.5, 0.2]], atol=1e-12)
    with pytest.raises(ValueError, match="needs at least 4 checkpoints"):
        ps.polyfit_coefficients(T[:, :3], 3)
    with pytest.raises(ValueError, match="2-D"):
        ps.select_by_polyfit(T[0], 1)


def test_polyfit_per_run_segments():
    """Two runs side by side: each is fitted on its own steps and the coefficients are concatenated."""
    x = np.linspace(-1, 1, 4)
    a = np.stack([0.5 + 0.2 * x - 0.1 * x ** 2, 0.3 - 0.4 * x])
    b = np.stack([0.1 + 0.3 * x, 0.9 - 0.2 * x ** 2])
    got = ps.polyfit_coefficients(np.hstack([a, b]), 2, segments=[4, 4])
    np.testing.assert_allclose(got, np.hstack([ps.polyfit_coefficients(a, 2), ps.polyfit_coefficients(b, 2)]),
                               atol=1e-12)
    steps = [125, 250, 500, 1000, 10, 20, 30, 40]  # each run's own steps, normalised within the run
    u = (np.array(steps[:4]) - 125) / 875 * 2 - 1
    lin = np.hstack([0.5 + 0.2 * u[None], 0.5 + 0.2 * np.linspace(-1, 1, 4)[None]])
    np.testing.assert_allclose(ps.polyfit_coefficients(lin, 1, steps, [4, 4]), [[0.5, 0.2, 0.5, 0.2]], atol=1e-12)
    with pytest.raises(ValueError, match="must be positive and sum to the 8 checkpoints"):
        ps.polyfit_coefficients(np.hstack([a, b]), 1, segments=[4, 3])
    with pytest.raises(ValueError, match="needs at least 3 checkpoints per run, got 2"):
        ps.polyfit_coefficients(np.hstack([a, b]), 2, segments=[6, 2])
    assert ps.select_by_polyfit(np.hstack([a, b]), 1, segments=[4, 4]).size == 1


# ----------------------------------------------------------------------------- budget across tasks


def _tasks(n=40, n_ckpt=12, seed=0):
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, n_ckpt)
    rising = 0.3 + 0.5 * x
    bump = 0.4 + 0.4 * 4 * x * (1 - x)  # symmetric: uncorrelated with a straight line on this grid

    def task(shape):
        return shape + rng.normal(0, 0.05, (n, n_ckpt))

    return {"sst2": task(rising), "imdb": task(rising), "news": task(bump)}


def test_split_budget_sums_and_floors():
    tasks = _tasks()
    total_points = sum(v.shape[0] for v in tasks.values())
    for relatedness in (True, False):
        for total in (3, 4, 5, 10, 17, 50, total_points):
            parts = ps.split_budget(tasks, total, relatedness=relatedness)
            assert list(parts) == list(tasks)
            assert sum(parts.values()) == total
            assert all(1 <= parts[t] <= tasks[t].shape[0] for t in tasks)


def test_split_budget_duplicate_task_gets_less():
    tasks = _tasks()
    R = ps.task_relatedness(tasks)
    assert R[0, 1] > 0.95 and abs(R[0, 2]) < 0.2
    for total in (6, 10, 30):
        parts = ps.split_budget(tasks, total)
        assert parts["news"] > parts["imdb"] and parts["news"] > parts["sst2"]


def test_split_budget_by_size_and_caps():
    rng = np.random.default_rng(0)
    tasks = {"a": rng.random((10, 5)), "b": rng.random((30, 5)), "c": rng.random((60, 5))}
    assert ps.split_budget(tasks, 10, relatedness=False) == {"a": 1, "b": 3, "c": 6}
    assert ps.split_budget(tasks, 100, relatedness=False) == {"a": 10, "b": 30, "c": 60}
    # a tiny task cannot take more points than it has: the rest goes to the others
    tasks = {"tiny": rng.random((2, 5)), "x": rng.random((50, 5)) + np.linspace(0, 1, 5),
             "y": rng.random((50, 5)) - np.linspace(0, 1, 5) ** 2}
    parts = ps.split_budget(tasks, 40)
    assert parts["tiny"] <= 2 and sum(parts.values()) == 40


def test_split_budget_errors():
    tasks = _tasks(n=3)
    with pytest.raises(ValueError, match="each of 3 tasks"):
        ps.split_budget(tasks, 2)
    with pytest.raises(ValueError, match="exceeds"):
        ps.split_budget(tasks, 10)
    with pytest.raises(ValueError, match="positive"):
        ps.split_budget(tasks, 0)
    with pytest.raises(ValueError, match="no tasks"):
        ps.split_budget({}, 3)
    with pytest.raises(ValueError, match="same checkpoints"):
        ps.split_budget({"a": np.ones((3, 4)), "b": np.ones((3, 5))}, 3)
    assert ps.split_budget({"only": np.random.default_rng(0).random((5, 4))}, 4) == {"only": 4}


@pytest.mark.parametrize("method", ["correlation", "polyfit"])
def test_selection_weights_are_cluster_sizes(method):
    """Planted clusters of sizes 5, 10, 20, 45: one point per cluster, weighted by its cluster's size."""
    T, labels = planted(n_per=45, seed=3)
    keep = np.concatenate([np.flatnonzero(labels == c)[:m] for c, m in enumerate([5, 10, 20, 45])])
    T, labels = T[keep], labels[keep]
    idx, w = SELECTORS[method](T, 4, 0, with_weights=True) if method == "correlation" else \
        ps.select_by_polyfit(T, 4, 0, with_weights=True)
    assert np.array_equal(idx, SELECTORS[method](T, 4, 0))  # same points as without weights
    assert w.sum() == len(T) and sorted(labels[idx]) == [0, 1, 2, 3]
    assert dict(zip(labels[idx].tolist(), w.tolist())) == {0: 5, 1: 10, 2: 20, 3: 45}
    # the weighted mean of the selected trajectories tracks the pool's mean better than the plain mean
    err_w = np.abs(np.average(T[idx], axis=0, weights=w) - T.mean(axis=0)).max()
    err_plain = np.abs(T[idx].mean(axis=0) - T.mean(axis=0)).max()
    assert err_w < err_plain

"""Model-free math for predicting downstream quality during pretraining (Fedus et al. 2021, Appendix E).

The probe zero-shot scores a small set of downstream examples at each pretraining checkpoint and
checks that the score tracks fine-tuned quality (the Switch Transformer paper's Appendix E relates
upstream perplexity to SuperGLUE/TriviaQA; the probe-selection paper proposes the zero-shot probe).
The probe-selection paper's Algorithm 1 ("Benchmark Performance Prediction via Zero-Shotting
Selected Points") has three steps this module supplies the math for:

    C      <- CORRELATE(D_benchmark)         inter-task and inter-point correlations
    D_test <- SELECT(D_benchmark, B, C)      at most B points, chosen for low redundancy
    M_best <- the model with the best zero-shot score ZS on D_test

* Correlation statistics (`pearson`, `spearman`, with two-sided p-values) to report how well the
  zero-shot score tracks fine-tuned quality (the probe-selection paper's §3.2, "Objective 1"), and `top1_agreement`
  / `ranking_spearman` to score the final step (does the probe pick / rank the models right).
* CORRELATE + SELECT within a task (§3.4, "Objective 3"): a point's "trajectory" is the model's
  confidence in its correct answer at each checkpoint (its training dynamics). Points whose
  trajectories move together are redundant, so we cluster them and keep one representative per
  cluster. `select_by_correlation` is the paper's O(n^2) pairwise-correlation approach,
  `select_by_polyfit` its O(n) approach (fit a polynomial per point, cluster the coefficients),
  `select_random` the baseline both must beat.
* Splitting B across tasks (§3.3, "Objective 2"): `split_budget` gives more points to tasks whose
  mean trajectory is less correlated with the other tasks' (their scores carry information the
  other tasks' points do not).

Only numpy is imported at load time (scipy for the t distribution, scikit-learn for clustering are
imported when used), so reports import it without torch or fairseq.
"""

import warnings
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "pearson", "spearman", "top1_agreement", "ranking_spearman",
    "trajectory_correlations", "cluster_by_correlation", "polyfit_coefficients", "cluster_by_polyfit",
    "select_random", "select_by_correlation", "select_by_polyfit",
    "task_relatedness", "split_budget",
]


# ----------------------------------------------------------------------------- input checks


def _vector(x: ArrayLike, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return a


def _pair(x: ArrayLike, y: ArrayLike, min_n: int) -> Tuple[np.ndarray, np.ndarray]:
    """Two equal-length finite vectors with at least `min_n` points, neither constant.

    A correlation of a constant series is undefined (0/0): scipy warns and returns NaN, which would
    silently turn a broken probe (say, one that scores every checkpoint the same) into a blank row
    of the report, so we refuse it instead."""
    a, b = _vector(x, "x"), _vector(y, "y")
    if a.shape != b.shape:
        raise ValueError(f"x and y differ in length ({a.size} vs {b.size})")
    if a.size < min_n:
        raise ValueError(f"need at least {min_n} points for a correlation, got {a.size}")
    for name, v in (("x", a), ("y", b)):
        if np.all(v == v[0]):
            raise ValueError(f"{name} is constant: its correlation is undefined")
    return a, b


def _trajectories(T: ArrayLike, min_checkpoints: int = 2) -> np.ndarray:
    a = np.asarray(T, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"trajectories must be 2-D [n_points, n_checkpoints], got shape {a.shape}")
    if a.shape[0] < 1:
        raise ValueError("trajectories hold no points")
    if a.shape[1] < min_checkpoints:
        raise ValueError(f"need at least {min_checkpoints} checkpoints per trajectory, got {a.shape[1]}")
    if not np.all(np.isfinite(a)):
        raise ValueError("trajectories hold NaN or infinite values")
    return a


def _budget(budget: object, what: str = "budget") -> int:
    if isinstance(budget, (bool, np.bool_)) or not isinstance(budget, (int, np.integer)):
        raise ValueError(f"{what} must be an integer, got {budget!r}")
    if budget <= 0:
        raise ValueError(f"{what} must be positive, got {budget}")
    return int(budget)


# ----------------------------------------------------------------------------- correlation statistics


def _pearson_r(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's r of two checked vectors: centred, scaled to unit norm first (as scipy does) so the
    dot product cannot overflow and |r| <= 1 up to rounding, which we clip away.

    An r within a few ulps of +-1 is snapped to +-1: it is a perfect (anti)correlation rounded, and
    with 3 points (1 degree of freedom) that rounding alone would turn p = 0 into p ~ 1e-8."""
    da, db = a - a.mean(), b - b.mean()
    r = float(np.clip(np.dot(da / np.linalg.norm(da), db / np.linalg.norm(db)), -1.0, 1.0))
    if 1.0 - abs(r) <= 4 * np.finfo(np.float64).eps:
        r = float(np.sign(r))
    return r


def _t_test_p(r: float, n: int) -> float:
    """Two-sided p-value of H0 "no correlation": t = r sqrt((n-2)/(1-r^2)) follows Student's t with
    n-2 degrees of freedom (exact for Pearson under bivariate normality; the usual large-sample
    approximation for Spearman, and what scipy.stats.spearmanr uses)."""
    from scipy.special import stdtr  # the t distribution's CDF

    df = n - 2
    denom = (1.0 - r) * (1.0 + r)
    if denom <= 0.0:  # |r| == 1: t is infinite
        return 0.0
    t = abs(r) * np.sqrt(df / denom)
    return float(min(1.0, 2.0 * stdtr(df, -t)))


def pearson(x: Sequence[float], y: Sequence[float]) -> Tuple[float, float]:
    """(r, two-sided p-value) of the linear correlation of x and y.

    Used to report how well a zero-shot score tracks fine-tuned quality across checkpoints (the probe-selection
    paper's §3.2, Objective 1), with p-values to tell a correlation from noise. Raises ValueError for fewer than
    3 points (no degrees of freedom left for the test), mismatched lengths or a constant input."""
    a, b = _pair(x, y, 3)
    r = _pearson_r(a, b)
    return r, _t_test_p(r, a.size)


def _average_ranks(a: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the average of the ranks they span (scipy's rankdata 'average')."""
    order = np.argsort(a, kind="mergesort")
    s = a[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # first sorted position of each tie group
    bounds = np.r_[starts, a.size]
    mean_rank = 0.5 * (bounds[:-1] + 1 + bounds[1:])  # group covers ranks start+1 .. next_start
    group = np.cumsum(np.r_[True, s[1:] != s[:-1]]) - 1
    ranks = np.empty(a.size, dtype=np.float64)
    ranks[order] = mean_rank[group]
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> Tuple[float, float]:
    """(rho, two-sided p-value): Pearson's r of the average-tie ranks, p from the t distribution.

    Rank correlation is what matters when the probe is used to *order* checkpoints or models (the
    last step of Algorithm 1 only compares ZS values); it ignores a monotone but nonlinear link such as
    the saturating power law of the probe-selection paper's related work. Same errors as `pearson`."""
    a, b = _pair(x, y, 3)
    r = _pearson_r(_average_ranks(a), _average_ranks(b))
    return r, _t_test_p(r, a.size)


def top1_agreement(pred: Sequence[float], true: Sequence[float]) -> bool:
    """Does the model the probe would pick have the best true (fine-tuned) quality?

    `pred[i]` is the probe's score of candidate i, `true[i]` its fine-tuned quality, higher is better.
    The pick is Algorithm 1's: its loop replaces M_best only on a strictly better ZS, so among tied
    probe scores the first candidate wins (np.argmax). The pick agrees if it is among the best by
    `true` (all tied best count: any of them is a right answer)."""
    p, t = _vector(pred, "pred"), _vector(true, "true")
    if p.shape != t.shape:
        raise ValueError(f"pred and true differ in length ({p.size} vs {t.size})")
    if p.size == 0:
        raise ValueError("pred and true are empty")
    return bool(t[int(np.argmax(p))] == t.max())


def ranking_spearman(pred: Sequence[float], true: Sequence[float]) -> float:
    """Spearman's rho between the probe's ranking of candidates and their true ranking (1 = same
    order, -1 = reversed). A float only: with a handful of candidate models a p-value says little, so
    unlike `spearman` two candidates are enough. Raises ValueError for mismatched lengths, fewer than
    2 candidates, or a constant input (a ranking that cannot tell any candidates apart)."""
    a, b = _pair(pred, true, 2)
    return _pearson_r(_average_ranks(a), _average_ranks(b))


# ----------------------------------------------------------------------------- CORRELATE: points


def trajectory_correlations(T: ArrayLike) -> np.ndarray:
    """[n, n] Pearson correlations between the points' confidence trajectories (Algorithm 1's
    CORRELATE, the O(n^2) "brute force" of the probe-selection paper's §3.4).

    A constant trajectory (the model is equally confident at every checkpoint, e.g. always 1.0) has
    no dynamics and an undefined correlation; we give it correlation 1 with the other constant ones
    (they all behave alike: they never move) and 0 with moving ones, so it clusters with its kind
    instead of poisoning the matrix with NaN."""
    X = _trajectories(T)
    Z = X - X.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(Z, axis=1)
    flat = norms <= 1e-12 * np.maximum(1.0, np.abs(X).max(axis=1))
    Z[~flat] /= norms[~flat, None]
    Z[flat] = 0.0
    C = np.clip(Z @ Z.T, -1.0, 1.0)
    C[np.ix_(flat, flat)] = 1.0
    np.fill_diagonal(C, 1.0)
    return C


def cluster_by_correlation(T: ArrayLike, budget: int) -> np.ndarray:
    """Cluster labels (0 .. k-1, k = min(budget, n)) from average-linkage agglomerative clustering
    on the distance 1 - corr.

    Why this clustering: it needs only the pairwise matrix (no coordinates, which k-means would
    need), is deterministic (no initialisation to seed), returns exactly k non-empty clusters, and
    average linkage judges a merge by the mean correlation between the two groups, so a cluster is a
    set of points that move together, without the chaining of single linkage. 1 - corr (not
    1 - |corr|) keeps anti-correlated points apart, as the probe-selection paper's own clustering does: there the
    points of different classes form separate clusters (its Figures 5-6)."""
    return _agglomerate(trajectory_correlations(T), _budget(budget))


def _agglomerate(C: np.ndarray, k: int) -> np.ndarray:
    n = C.shape[0]
    if k >= n:
        return np.arange(n, dtype=np.int64)
    if k == 1:
        return np.zeros(n, dtype=np.int64)
    from sklearn.cluster import AgglomerativeClustering

    D = np.clip(1.0 - C, 0.0, 2.0)
    D = 0.5 * (D + D.T)
    labels = AgglomerativeClustering(n_clusters=k, metric="precomputed", linkage="average").fit_predict(D)
    return _canonical_labels(labels)


def _canonical_labels(labels: np.ndarray) -> np.ndarray:
    """Relabel clusters 0, 1, ... in order of their lowest member index, so labels do not depend on
    the clustering library's internal numbering."""
    uniq, first = np.unique(labels, return_index=True)
    new = np.argsort(np.argsort(first))  # rank of each cluster's first appearance
    return new[np.searchsorted(uniq, labels)].astype(np.int64)


def _medoids(C: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per cluster, the member with the highest summed correlation to its cluster (its most typical
    trajectory, the one whose zero-shot score best stands in for the others'); ties go to the lowest
    index."""
    reps = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        centrality = C[np.ix_(members, members)].sum(axis=1)
        reps.append(members[int(np.argmax(centrality))])
    return np.sort(np.asarray(reps, dtype=np.int64))


# ----------------------------------------------------------------------------- CORRELATE: polynomial fits


def _positions(n_checkpoints: int, steps: Optional[Sequence[float]]) -> np.ndarray:
    """Checkpoint positions scaled to [-1, 1]: centred and bounded so the power-basis coefficients are
    well conditioned and comparable whatever the step numbers (evenly spaced if `steps` is None)."""
    if steps is None:
        return np.linspace(-1.0, 1.0, n_checkpoints)
    s = _vector(steps, "steps")
    if s.size != n_checkpoints:
        raise ValueError(f"steps has {s.size} entries for {n_checkpoints} checkpoints")
    if np.unique(s).size != s.size:
        raise ValueError("steps must be distinct")
    return 2.0 * (s - s.min()) / (s.max() - s.min()) - 1.0


def polyfit_coefficients(T: ArrayLike, degree: int = 2, steps: Optional[Sequence[float]] = None,
                         segments: Optional[Sequence[int]] = None) -> np.ndarray:
    """[n, degree+1] least-squares polynomial coefficients (constant term first) of each trajectory
    over checkpoint positions normalised to [-1, 1]: the probe-selection paper's §3.4 O(n) summary of a point's
    training dynamics (one small least-squares solve shared by all points).

    All coefficients are kept, the constant term (the point's average confidence, i.e. difficulty)
    included: unlike a correlation, the fit also tells an easy point from a hard one that moves the
    same way. Needs degree <= n_checkpoints - 1 (the degree that interpolates the checkpoints, the
    best in the probe-selection paper's Figure 8).

    `segments`: when the columns are several runs' checkpoints one after the other (say a dense and
    a Switch sweep), their lengths in order. Each run is fitted on its own (a polynomial through the
    end of one run and the start of the next would fit a jump that is not training dynamics) and
    the coefficients are concatenated: [n, runs * (degree+1)]. `steps` then holds each run's steps."""
    X = _trajectories(T)
    if isinstance(degree, (bool, np.bool_)) or not isinstance(degree, (int, np.integer)) or degree < 0:
        raise ValueError(f"degree must be a non-negative integer, got {degree!r}")
    if segments is None:
        segments = [X.shape[1]]
    segments = [int(g) for g in segments]
    if any(g < 1 for g in segments) or sum(segments) != X.shape[1]:
        raise ValueError(f"segments {segments} must be positive and sum to the {X.shape[1]} checkpoints")
    if steps is not None and len(steps) != X.shape[1]:
        raise ValueError(f"steps has {len(steps)} entries for {X.shape[1]} checkpoints")
    if degree > min(segments) - 1:
        raise ValueError(f"degree {degree} needs at least {degree + 1} checkpoints per run, got {min(segments)}")
    out, start = [], 0
    for g in segments:
        x = _positions(g, None if steps is None else list(steps)[start:start + g])
        out.append(np.polynomial.polynomial.polyfit(x, X[:, start:start + g].T, int(degree)).T)
        start += g
    return np.concatenate(out, axis=1)


def cluster_by_polyfit(T: ArrayLike, budget: int, seed: Optional[int] = 0, degree: int = 2,
                       steps: Optional[Sequence[float]] = None,
                       segments: Optional[Sequence[int]] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, centroids, coefficients): k-means (k = min(budget, n), k-means++ seeded with `seed`,
    10 restarts, the best inertia kept) on the polynomial coefficients.

    k-means because the coefficients are coordinates in a small Euclidean space, where it is O(n k)
    per iteration (keeping the approach O(n) in the number of points, its point in the probe-selection paper). Labels
    are canonical (numbered by lowest member); empty clusters are possible only when fewer than k
    coefficient vectors are distinct."""
    k = _budget(budget)
    coefs = polyfit_coefficients(T, degree, steps, segments)
    n = coefs.shape[0]
    if k >= n:
        return np.arange(n), coefs.copy(), coefs
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():  # "found fewer distinct clusters than n_clusters": handled below
        warnings.simplefilter("ignore", ConvergenceWarning)
        km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(coefs)
    # canonical numbering: used clusters by lowest member, then any empty ones in k-means' order
    used, first = np.unique(km.labels_, return_index=True)
    old_order = list(used[np.argsort(first)]) + [c for c in range(k) if c not in set(used.tolist())]
    new_of_old = np.empty(k, dtype=np.int64)
    new_of_old[old_order] = np.arange(k)
    labels = new_of_old[km.labels_]
    centroids = km.cluster_centers_[old_order]
    return labels, centroids, coefs


def _closest_to_centroids(coefs: np.ndarray, labels: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """One distinct point per centroid: its nearest member, or, for an empty cluster or one whose
    members were all taken, the nearest unused point (so the result always has k unique indices)."""
    taken = np.zeros(coefs.shape[0], dtype=bool)
    reps = []
    for c, centre in enumerate(centroids):
        dist = np.linalg.norm(coefs - centre, axis=1)
        outside = labels != c
        # members first, then by distance, then by index
        order = np.lexsort((np.arange(dist.size), dist, outside))
        pick = next(int(i) for i in order if not taken[i])
        taken[pick] = True
        reps.append(pick)
    return np.sort(np.asarray(reps, dtype=np.int64))


# ----------------------------------------------------------------------------- SELECT


def select_random(n: int, budget: int, seed: Optional[int] = 0) -> np.ndarray:
    """min(budget, n) distinct indices drawn uniformly without replacement, sorted: the baseline of
    the probe-selection paper (its §3.3 evaluates on "50 randomly-selected examples"), against which the
    redundancy-aware selectors must show they help."""
    k = _budget(budget)
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(int(n), size=min(k, int(n)), replace=False)).astype(np.int64)


def select_by_correlation(
    T: ArrayLike, budget: int, seed: Optional[int] = 0, with_weights: bool = False
) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
    """SELECT with the O(n^2) pairwise trajectory correlations: cluster the points into
    min(budget, n) groups that move together (`cluster_by_correlation`) and keep each group's medoid,
    its member most correlated with the rest of the group. Sorted unique indices.

    with_weights: also return each medoid's cluster size (the number of pool points it stands for,
    summing to n). A plain mean over the medoids counts a cluster of 2 odd points as much as one of
    500 ordinary ones; weighting by size makes the selected points' mean estimate the whole pool's
    (stratified sampling, one point per stratum).

    `seed` is accepted for a uniform selector interface and ignored: average-linkage clustering and
    the medoid choice (ties to the lowest index) involve no randomness."""
    k = _budget(budget)
    C = trajectory_correlations(T)
    labels = _agglomerate(C, k)
    reps = _medoids(C, labels)
    if not with_weights:
        return reps
    return reps, np.bincount(labels)[labels[reps]].astype(np.float64)


def select_by_polyfit(T: ArrayLike, budget: int, seed: Optional[int] = 0, degree: int = 2,
                      steps: Optional[Sequence[float]] = None, segments: Optional[Sequence[int]] = None,
                      with_weights: bool = False) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
    """SELECT with the O(n) polynomial summary: fit each trajectory with a degree-`degree` polynomial
    over normalised checkpoint positions (`steps`, evenly spaced if None), k-means the coefficient
    vectors into min(budget, n) clusters (seeded), keep the point closest to each centroid. Sorted
    unique indices.

    with_weights: also return how many pool points each selected point stands for: the points whose
    coefficients lie nearest to it (its k-means cell, also when an empty or exhausted cluster made
    the representatives depart from the clusters); they sum to n."""
    k = _budget(budget)
    labels, centroids, coefs = cluster_by_polyfit(T, k, seed, degree, steps, segments)
    n = coefs.shape[0]
    reps = np.arange(n, dtype=np.int64) if k >= n else _closest_to_centroids(coefs, labels, centroids)
    if not with_weights:
        return reps
    nearest = np.argmin(((coefs[:, None, :] - coefs[reps][None, :, :]) ** 2).sum(-1), axis=1)
    return reps, np.bincount(nearest, minlength=reps.size).astype(np.float64)


# ----------------------------------------------------------------------------- budget across tasks


def task_relatedness(task_trajectories: Mapping[str, np.ndarray]) -> np.ndarray:
    """[t, t] correlations between the tasks' mean confidence trajectories (the probe-selection paper's §3.3,
    Objective 2: tasks whose zero-shot scores move together across checkpoints are related; SST-2 and
    IMDB correlate, One Stop English does not). Rows follow the mapping's order; a task whose mean
    trajectory is flat is treated as `trajectory_correlations` treats a flat point."""
    means = [_trajectories(v).mean(axis=0) for v in task_trajectories.values()]
    lengths = {m.size for m in means}
    if len(lengths) != 1:
        raise ValueError(f"all tasks need the same checkpoints, got trajectory lengths {sorted(lengths)}")
    return trajectory_correlations(np.stack(means))


def _apportion(weights: np.ndarray, total: int, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Integers near-proportional to `weights`, each within [low, high], summing exactly to `total`.

    Real-valued shares first: q_t = clip(lam * w_t, low_t, high_t), with lam found by bisection so
    that sum(q) = total (the sum grows monotonically with lam from sum(low) to sum(high)); a task
    whose proportional share falls below its floor or above its size is pinned there and the others
    share what is left. Then Hamilton's largest-remainder rounding: everyone gets floor(q_t), the
    points still missing go to the largest fractional parts (ties to the earlier task). Since the
    bounds are integers, the rounding cannot leave them. A zero weight is raised to a tiny one so such
    a task still takes points once everyone else is full. Needs sum(low) <= total <= sum(high)."""
    w = np.asarray(weights, dtype=np.float64)
    w = np.full(w.size, 1.0) if w.max() <= 0 else np.maximum(w, 1e-9 * w.max())
    low, high = low.astype(np.float64), high.astype(np.float64)

    def shares(lam: float) -> np.ndarray:
        return np.clip(lam * w, low, high)

    lo_lam, hi_lam = 0.0, float((high / w).max())
    for _ in range(200):
        mid = 0.5 * (lo_lam + hi_lam)
        if shares(mid).sum() < total:
            lo_lam = mid
        else:
            hi_lam = mid
    q = shares(hi_lam)
    q = np.minimum(np.maximum(q, low), high)
    part = np.floor(q + 1e-9).astype(np.int64)  # a share a hair under an integer is that integer
    part = np.clip(part, low.astype(np.int64), high.astype(np.int64))
    short = int(total - part.sum())
    frac = np.where(part < high, q - part, -np.inf)
    order = np.lexsort((np.arange(w.size), -frac))  # largest remainder first, then task order
    part[order[:short]] += 1
    return part


def split_budget(task_trajectories: Mapping[str, np.ndarray], total_budget: int,
                 relatedness: bool = True) -> Dict[str, int]:
    """Split `total_budget` points across tasks: {task: points}, same order, summing exactly to the
    total, every task at least 1 point and at most its number of points.

    Rule. Points are shared in proportion to a weight, floored at 1 point per task (a task not probed
    at all could not be predicted) and capped at the task's size, rounded by largest remainders
    (`_apportion`):
      * relatedness=True:  weight_t = 1 - mean_{s != t} |corr(mean trajectory t, mean trajectory s)|.
        A task that duplicates another (|corr| ~ 1) adds little the other's points do not already
        say, so it gets little beyond its floor point; an unrelated task (corr ~ 0) gets the most.
        |corr| because an anti-correlated task is just as predictable from the other. With one task,
        or when every weight is 0 (all tasks duplicates), the split is even.
      * relatedness=False: weight_t = number of points of task t (the benchmark's own proportions).
    A task whose share falls below 1 point or above its size is pinned there and the others re-share
    the rest.

    Raises ValueError for no tasks, total_budget < number of tasks, or total_budget > all points."""
    if not task_trajectories:
        raise ValueError("no tasks to split the budget across")
    total = _budget(total_budget, "total_budget")
    names = list(task_trajectories)
    sizes = np.array([_trajectories(task_trajectories[t]).shape[0] for t in names], dtype=np.int64)
    if total < len(names):
        raise ValueError(f"total_budget {total} cannot give each of {len(names)} tasks a point")
    if total > sizes.sum():
        raise ValueError(f"total_budget {total} exceeds the {int(sizes.sum())} points of all tasks")
    if relatedness and len(names) > 1:
        R = np.abs(task_relatedness(task_trajectories))
        np.fill_diagonal(R, 0.0)
        weights = np.clip(1.0 - R.sum(axis=1) / (len(names) - 1), 0.0, 1.0)
    elif relatedness:
        weights = np.ones(1)
    else:
        weights = sizes.astype(np.float64)
    parts = _apportion(weights, total, np.ones(len(names), dtype=np.int64), sizes)
    return {t: int(p) for t, p in zip(names, parts)}

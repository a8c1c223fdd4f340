"""Small statistics for benchmark summaries: t-intervals and paired differences.

- :func:`t_quantile`: Student-t quantile, from the regularised incomplete beta function
  (written here: scipy is not a dependency of this package).
- :func:`mean_ci`: mean with a t confidence interval over independent values.
- :func:`clustered_mean_ci`: the same mean with an interval that counts clusters (prompts),
  not values, as the samples: the images of one prompt are not independent draws.
- :func:`prompt_mean_ci`: the interval the benchmark tables use: over prompts (clustered)
  when there are several, over the seeds of the one prompt when there is one.
- :func:`metric_value` / :func:`paired_differences`: read one metric from a benchmark record,
  and pair two methods' values by (prompt id, seed), so a method is compared with the
  baseline on the same prompts and starting noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Iterable, Sequence

__all__ = ["MeanCI", "clustered_mean_ci", "mean_ci", "metric_value", "paired_differences", "prompt_mean_ci",
           "t_quantile"]

# Above this many degrees of freedom the incomplete-beta continued fraction needs thousands
# of terms, while the Cornish-Fisher series in 1/df is exact to double precision.
_LARGE_DF = 1e5


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t distribution with ``df`` degrees of freedom."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"t_quantile: p must be strictly between 0 and 1, got {p!r}.")
    if not df > 0:  # also rejects NaN
        raise ValueError(f"t_quantile: df must be positive, got {df!r}.")
    if p == 0.5:
        return 0.0
    tail = min(p, 1.0 - p)  # 1 - p is exact for p >= 0.5, so small tails keep their precision
    t = _t_upper_quantile(tail, df)
    return t if p > 0.5 else -t


def _t_upper_quantile(tail: float, df: float) -> float:
    """The t > 0 with P(T > t) = tail, for 0 < tail < 0.5."""
    z = -NormalDist().inv_cdf(tail)
    if df > _LARGE_DF:
        return _cornish_fisher(z, df)
    # Newton's method on the upper tail. The tail is convex for t > 0 and t's tails are
    # heavier than the normal's, so starting at the normal quantile (left of the root) every
    # step lands left of the root again: the iterates rise monotonically, no bracket needed.
    t = z
    for _ in range(200):
        density = _t_density(t, df)
        if density == 0.0:
            break
        step = (_t_upper_tail(t, df) - tail) / density
        t += step
        if abs(step) <= 1e-14 * max(1.0, t):
            break
    return t


def _cornish_fisher(z: float, df: float) -> float:
    """t quantile from the normal quantile ``z`` (Abramowitz & Stegun 26.7.5), for large df."""
    z2 = z * z
    g1 = z * (z2 + 1) / 4
    g2 = z * ((5 * z2 + 16) * z2 + 3) / 96
    g3 = z * (((3 * z2 + 19) * z2 + 17) * z2 - 15) / 384
    g4 = z * ((((79 * z2 + 776) * z2 + 1482) * z2 - 1920) * z2 - 945) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def _t_density(t: float, df: float) -> float:
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_norm - (df + 1) / 2 * math.log1p(t * t / df))


def _t_upper_tail(t: float, df: float) -> float:
    """P(T > t) for t >= 0: half the regularised incomplete beta I_x(df/2, 1/2), x = df/(df+t²)."""
    t2 = t * t
    x, one_minus_x = df / (df + t2), t2 / (df + t2)  # both directly: 1 - x would cancel
    return 0.5 * _betainc(df / 2, 0.5, x, one_minus_x)


def _betainc(a: float, b: float, x: float, y: float) -> float:
    """Regularised incomplete beta I_x(a, b), with y = 1 - x given separately."""
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    log_front = a * math.log(x) + b * math.log(y) + math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(log_front)
    # The continued fraction converges fast only for x < (a+1)/(a+b+2); otherwise use
    # I_x(a, b) = 1 - I_{1-x}(b, a).
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, y) / b


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta, by the modified Lentz method."""
    tiny, eps = 1e-300, 1e-16
    c = 1.0
    d = 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        # Two terms per step: the even one, then the odd one.
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            delta = c * d
            h *= delta
        if abs(delta - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta: continued fraction did not converge (a={a}, b={b}, x={x}).")


@dataclass(frozen=True)
class MeanCI:
    """A mean and the half-width of its confidence interval (``nan`` when undefined)."""

    mean: float
    half_width: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> MeanCI:
    """Mean ± t_{(1+c)/2, n-1} · s / √n, with the sample standard deviation s (ddof=1).

    One value has no spread estimate: its half-width is ``nan``, not 0. No values: mean ``nan``.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"mean_ci: confidence must be strictly between 0 and 1, got {confidence!r}.")
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        return MeanCI(math.nan, math.nan, 0)
    mean = math.fsum(values) / n
    if n == 1:
        return MeanCI(mean, math.nan, 1)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half_width = t_quantile((1.0 + confidence) / 2.0, n - 1) * std / math.sqrt(n)
    return MeanCI(mean, half_width, n)


def clustered_mean_ci(values: Iterable[float], clusters: Iterable, confidence: float = 0.95) -> MeanCI:
    """The mean of ``values`` with a cluster-robust interval: ``mean ± t_{(1+c)/2, G-1} · se``,
    ``se² = G/(G-1) · Σ_g (Σ_{i in g} (x_i - mean))² / N²`` over the ``G`` clusters (the
    sandwich estimator with the usual small-sample factor). With one value per cluster it is
    :func:`mean_ci`'s interval; values of one cluster that move together widen it. ``n`` is
    the number of clusters; fewer than two: half-width ``nan``."""
    values = [float(v) for v in values]
    clusters = list(clusters)
    if len(clusters) != len(values):
        raise ValueError(f"clustered_mean_ci: {len(values)} values but {len(clusters)} cluster labels.")
    if not values:
        return MeanCI(math.nan, math.nan, 0)
    mean = math.fsum(values) / len(values)
    sums: dict = {}
    for value, cluster in zip(values, clusters):
        sums[cluster] = sums.get(cluster, 0.0) + (value - mean)
    g = len(sums)
    if g < 2:
        return MeanCI(mean, math.nan, g)
    variance = g / (g - 1) * math.fsum(s * s for s in sums.values()) / len(values) ** 2
    return MeanCI(mean, t_quantile((1.0 + confidence) / 2.0, g - 1) * math.sqrt(variance), g)


def prompt_mean_ci(values: Sequence[float], prompts: Sequence, confidence: float = 0.95) -> tuple[MeanCI, int]:
    """``(interval, number of prompts)``: :func:`clustered_mean_ci` over ``prompts`` (one label
    per value) when the values come from two or more prompts, so seeds of one prompt do not
    count as independent draws; from a single prompt, :func:`mean_ci` over its seeds (the
    question is then that prompt's success over starting noise)."""
    if len(prompts) != len(values):
        raise ValueError(f"prompt_mean_ci: {len(values)} values but {len(prompts)} prompt labels.")
    n_prompts = len(set(prompts))
    if n_prompts < 2:
        return mean_ci(values, confidence), n_prompts
    return clustered_mean_ci(values, prompts, confidence), n_prompts


def metric_value(record: dict, metric: str) -> float | None:
    """The record's value of ``metric`` as a float, or None when failed, unscored or not a number.

    Bools are skipped (the runner writes floats; a stray flag is not a score), and so are
    NaN and infinities, which mean "not applicable" and would poison the mean.
    """
    if record.get("status") != "ok":
        return None
    metrics = record.get("metrics")
    if not isinstance(metrics, dict):
        return None
    value = metrics.get(metric)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def paired_differences(records: Sequence[dict], metric: str, method: str, baseline: str,
                       with_keys: bool = False) -> list:
    """``method - baseline`` for every (prompt_id, seed) both scored on ``metric``
    (``with_keys``: ``((prompt_id, seed), difference)`` pairs).

    Ordered as ``method``'s records appear; if a pair occurs twice (a re-run), the later
    record of each method counts.
    """
    baseline_values = {
        (r.get("prompt_id"), r.get("seed")): metric_value(r, metric) for r in records if r.get("method") == baseline
    }
    method_values: dict = {}
    for r in records:
        if r.get("method") == method:
            method_values[(r.get("prompt_id"), r.get("seed"))] = metric_value(r, metric)
    return [
        (key, value - baseline_values[key]) if with_keys else value - baseline_values[key]
        for key, value in method_values.items()
        if value is not None and baseline_values.get(key) is not None
    ]

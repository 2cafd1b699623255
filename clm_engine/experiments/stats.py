"""The statistics of an experiment report: rates, lifts, intervals, p-values, power.

Two methods, chosen per experiment (``docs/experiments.md`` gives the formulas):

- ``fixed``: the textbook two-proportion z-test (pooled standard error for the p-value,
  unpooled for the Wald interval). Its error rate holds only if the data is looked at once, at
  a sample size fixed in advance: looking every day and stopping at the first significant
  result makes false winners far more likely than ``level``. So the report declares no
  winner until every arm has reached the planned ``sample_size``, and says so.
- ``sequential`` (default): the mixture sequential probability ratio test (mSPRT) of Johari,
  Koomen, Pekelis and Walsh ("Peeking at A/B tests", KDD 2017; "Always valid inference",
  Operations Research 2022), with a normal mixture of variance tau^2 over the difference in
  rates. Its p-value and confidence sequence are *always valid*: the chance that a true
  difference of zero is ever called significant, however often and whenever one looks, is
  at most ``level``. The price is wider intervals than the fixed test's at the same sample.

Several arms against one control are several tests: each is run at ``level / k`` (Bonferroni)
so that the chance of any false winner stays at ``level``. Revenue per contact is compared by
Welch's t-test and shown for information; the winner is decided on the conversion rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from types import ModuleType

Method = Literal["fixed", "sequential"]


def _stats() -> ModuleType:
    """``scipy.stats``, imported when a report is computed: ``clm`` starts without scipy."""
    from scipy import stats

    return stats


#: The power the sample-size warning plans for.
POWER = 0.8


@dataclass(frozen=True)
class ArmCounts:
    """One arm's numbers: exposed contacts, those who converted, and their revenue (summed
    per contact: ``revenue`` the total, ``revenue_sq`` the sum of squared per-contact totals)."""

    name: str
    exposed: int
    converted: int
    revenue: float = 0.0
    revenue_sq: float = 0.0

    @property
    def rate(self) -> float | None:
        return self.converted / self.exposed if self.exposed else None

    @property
    def revenue_per_contact(self) -> float | None:
        return self.revenue / self.exposed if self.exposed else None

    @property
    def revenue_variance(self) -> float | None:
        """The sample variance of revenue per contact (None below two contacts)."""
        n = self.exposed
        if n < 2:
            return None
        mean = self.revenue / n
        return max(0.0, (self.revenue_sq - n * mean * mean) / (n - 1))


@dataclass(frozen=True)
class Comparison:
    """``arm`` against ``baseline`` (the control or the holdout) on the conversion rate."""

    arm: str
    baseline: str
    difference: float  # absolute lift: rate(arm) - rate(baseline)
    relative: float | None  # difference / rate(baseline); None when that rate is 0
    low: float  # confidence interval (or sequence) of the difference
    high: float
    p_value: float
    level: float  # the level this comparison is tested at (after Bonferroni)
    significant: bool
    revenue_difference: float | None = None
    revenue_low: float | None = None
    revenue_high: float | None = None
    revenue_p_value: float | None = None


def compare(
    arm: ArmCounts,
    baseline: ArmCounts,
    *,
    level: float,
    method: Method,
    minimum_effect: float,
) -> Comparison | None:
    """The comparison at ``level`` (already corrected for the number of comparisons); None
    when either arm has no exposure yet."""
    if not arm.exposed or not baseline.exposed:
        return None
    p1, p0 = arm.converted / arm.exposed, baseline.converted / baseline.exposed
    difference = p1 - p0
    if method == "fixed":
        p_value, low, high = fixed_test(arm, baseline, level)
    else:
        p_value, low, high = sequential_test(arm, baseline, level, tau=minimum_effect)
    revenue = welch(arm, baseline, level)
    return Comparison(
        arm=arm.name,
        baseline=baseline.name,
        difference=difference,
        relative=difference / p0 if p0 > 0 else None,
        low=low,
        high=high,
        p_value=p_value,
        level=level,
        significant=p_value < level,
        revenue_difference=revenue[0] if revenue else None,
        revenue_low=revenue[1] if revenue else None,
        revenue_high=revenue[2] if revenue else None,
        revenue_p_value=revenue[3] if revenue else None,
    )


def fixed_test(arm: ArmCounts, baseline: ArmCounts, level: float) -> tuple[float, float, float]:
    """Two-sided two-proportion z-test: ``(p_value, low, high)``.

    p-value from the pooled standard error sqrt(p(1-p)(1/n1 + 1/n0)), p the pooled rate;
    interval d +/- z(1 - level/2) sqrt(p1(1-p1)/n1 + p0(1-p0)/n0) (Wald)."""
    n1, n0 = arm.exposed, baseline.exposed
    p1, p0 = arm.converted / n1, baseline.converted / n0
    difference = p1 - p0
    pooled = (arm.converted + baseline.converted) / (n1 + n0)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n0))
    p_value = 1.0 if se0 == 0 else float(2 * _stats().norm.sf(abs(difference) / se0))
    se = math.sqrt(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0)
    half = float(_stats().norm.ppf(1 - level / 2)) * se
    return min(1.0, p_value), max(-1.0, difference - half), min(1.0, difference + half)


def sequential_test(
    arm: ArmCounts, baseline: ArmCounts, level: float, *, tau: float
) -> tuple[float, float, float]:
    """The mSPRT's always-valid ``(p_value, low, high)`` for the difference in rates.

    With d the observed difference, V its variance and tau^2 the mixture's variance:
    Lambda = sqrt(V / (V + tau^2)) exp(tau^2 d^2 / (2 V (V + tau^2))), p = min(1, 1/Lambda),
    and the confidence sequence d +/- sqrt(V (V + tau^2) / tau^2 (2 log(1/level) +
    log((V + tau^2) / V))). V uses rates shrunk towards 1/2 by one success and one failure
    ((x + 1) / (n + 2)), so an arm with no conversions yet does not claim certainty.
    """
    n1, n0 = arm.exposed, baseline.exposed
    difference = arm.converted / n1 - baseline.converted / n0
    s1, s0 = (arm.converted + 1) / (n1 + 2), (baseline.converted + 1) / (n0 + 2)
    variance = s1 * (1 - s1) / n1 + s0 * (1 - s0) / n0
    t2 = tau * tau
    log_lambda = 0.5 * math.log(variance / (variance + t2)) + t2 * difference**2 / (
        2 * variance * (variance + t2)
    )
    p_value = 1.0 if log_lambda <= 0 else math.exp(-log_lambda)
    half = math.sqrt(
        variance
        * (variance + t2)
        / t2
        * (2 * math.log(1 / level) + math.log((variance + t2) / variance))
    )
    # A difference in rates lies in [-1, 1]: the sequence says nothing wider than that.
    return min(1.0, p_value), max(-1.0, difference - half), min(1.0, difference + half)


def welch(
    arm: ArmCounts, baseline: ArmCounts, level: float
) -> tuple[float, float, float, float] | None:
    """Welch's t-test on revenue per contact: ``(difference, low, high, p_value)``, or None
    when an arm has fewer than two contacts or neither has any spread."""
    v1, v0 = arm.revenue_variance, baseline.revenue_variance
    if v1 is None or v0 is None:
        return None
    n1, n0 = arm.exposed, baseline.exposed
    m1, m0 = arm.revenue / n1, baseline.revenue / n0
    se2 = v1 / n1 + v0 / n0
    if se2 <= 0:
        return None
    result = _stats().ttest_ind_from_stats(
        m1, math.sqrt(v1), n1, m0, math.sqrt(v0), n0, equal_var=False
    )
    df = se2**2 / ((v1 / n1) ** 2 / (n1 - 1) + (v0 / n0) ** 2 / (n0 - 1))
    half = float(_stats().t.ppf(1 - level / 2, df)) * math.sqrt(se2)
    difference = m1 - m0
    return difference, difference - half, difference + half, float(result.pvalue)


def sample_size(baseline_rate: float, effect: float, level: float, power: float = POWER) -> int:
    """Contacts per arm for a two-sided fixed-horizon test at ``level`` to detect an absolute
    change of ``effect`` from ``baseline_rate`` with ``power`` (the normal approximation):
    n = (z(1 - level/2) sqrt(2 q(1-q)) + z(power) sqrt(p0(1-p0) + p1(1-p1)))^2 / effect^2,
    with p1 = p0 + effect (p0 - effect if that passes 1) and q their mean."""
    p0 = min(max(baseline_rate, 0.0), 1.0)
    p1 = p0 + effect if p0 + effect < 1 else p0 - effect
    p1 = min(max(p1, 0.0), 1.0)
    q = (p0 + p1) / 2
    a = float(_stats().norm.ppf(1 - level / 2)) * math.sqrt(2 * q * (1 - q))
    b = float(_stats().norm.ppf(power)) * math.sqrt(p0 * (1 - p0) + p1 * (1 - p1))
    return max(2, math.ceil((a + b) ** 2 / effect**2))

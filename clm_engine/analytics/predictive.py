"""Predictive customer value: BG/NBD (is a customer still alive, how often will they buy) and
Gamma-Gamma (how much per purchase), fitted by maximum likelihood with scipy.

The data each model is fitted on is one row per customer, computed by the store
(``clm_engine.store.analytics``), with time in weeks:

- ``x``: repeat purchases (purchase days after the first; purchases on one day are one);
- ``t_x``: weeks from the first purchase to the last;
- ``T``: weeks from the first purchase to the end of the calibration period;
- ``m``: the mean value of the repeat purchases (Gamma-Gamma; customers with ``x > 0``).

Formulas: Fader, Hardie & Lee (2005), "Counting your customers the easy way: an alternative to
the Pareto/NBD model" (BG/NBD: likelihood eq. 6, P(alive) eq. 13, conditional expectation
eq. 10) and Fader, Hardie & Lee (2005), "RFM and CLV: using iso-value curves for customer base
analysis" (Gamma-Gamma: likelihood and conditional expected spend, eq. 5).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, special

Array = NDArray[np.float64]


class FitError(ValueError):
    """The data cannot be fitted (too few customers, no repeat purchases, no convergence)."""


@dataclass(frozen=True)
class BGNBD:
    """BG/NBD parameters: purchase rates ~ Gamma(r, alpha), dropout p ~ Beta(a, b)."""

    r: float
    alpha: float
    a: float
    b: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def p_alive(self, x: Any, t_x: Any, T: Any) -> Array:
        """The probability that customers with these histories are still active (eq. 13);
        arrays in, an array out (a number in, a 0-d array out: ``float()`` it)."""
        xs, txs, Ts = np.asarray(x, float), np.asarray(t_x, float), np.asarray(T, float)
        return np.asarray(1.0 / (1.0 + self._odds_dead(xs, txs, Ts)), dtype=np.float64)

    def _odds_dead(self, x: Array, t_x: Array, T: Array) -> Array:
        """a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x), and 0 where x is 0."""
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        repeat = x > 0
        safe_x = np.where(repeat, x, 1.0)
        log_odds = (
            np.log(a)
            - np.log(b + safe_x - 1)
            + (r + safe_x) * (np.log(alpha + T) - np.log(alpha + t_x))
        )
        return np.where(repeat, np.exp(log_odds), 0.0)

    def expected_purchases(self, t: float, x: Any, t_x: Any, T: Any) -> Array:
        """Expected purchases in the next ``t`` weeks, given the histories (eq. 10)."""
        xs, txs, Ts = np.asarray(x, float), np.asarray(t_x, float), np.asarray(T, float)
        if t <= 0:
            return np.zeros_like(xs)
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        hyp = special.hyp2f1(r + xs, b + xs, a + b + xs - 1, t / (alpha + Ts + t))
        head = (a + b + xs - 1) / (a - 1)
        body = 1.0 - ((alpha + Ts) / (alpha + Ts + t)) ** (r + xs) * hyp
        return np.asarray(head * body / (1.0 + self._odds_dead(xs, txs, Ts)), dtype=np.float64)

    def expected_purchases_new(self, t: float) -> float:
        """Expected purchases in ``t`` weeks of a customer who has just arrived (eq. 9)."""
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        hyp = special.hyp2f1(r, b, a + b - 1, t / (alpha + t))
        return float((a + b - 1) / (a - 1) * (1.0 - (alpha / (alpha + t)) ** r * hyp))


@dataclass(frozen=True)
class GammaGamma:
    """Gamma-Gamma parameters: spend per transaction ~ Gamma(p, nu), nu ~ Gamma(q, gamma)."""

    p: float
    q: float
    gamma: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def expected_value(self, x: Any, m: Any) -> Array:
        """Expected spend per future transaction of customers with ``x`` repeat purchases of
        mean value ``m``; the population mean (p * gamma / (q - 1)) where ``x`` is 0."""
        p, q, gamma = self.p, self.q, self.gamma
        xs, ms = np.asarray(x, float), np.asarray(m, float)
        population = p * gamma / (q - 1) if q > 1 else np.nan
        known = (gamma + ms * xs) * p / (p * xs + q - 1)
        return np.asarray(np.where(xs > 0, known, population), dtype=np.float64)


def predicted_clv(
    bgnbd: BGNBD,
    gamma_gamma: GammaGamma,
    x: Any,
    t_x: Any,
    T: Any,
    m: Any,
    *,
    months: int = 12,
    monthly_discount: float = 0.01,
) -> Array:
    """Predicted customer lifetime value over ``months``: each month's expected purchases
    (BG/NBD) times the expected spend per purchase (Gamma-Gamma), discounted monthly
    (the method of the ``lifetimes`` library's ``customer_lifetime_value``)."""
    weeks_per_month = 52.0 / 12.0
    value = gamma_gamma.expected_value(x, m)
    total = np.zeros_like(value)
    previous = np.zeros_like(value)
    for month in range(1, months + 1):
        cumulative = bgnbd.expected_purchases(month * weeks_per_month, x, t_x, T)
        total += (cumulative - previous) * value / (1 + monthly_discount) ** month
        previous = cumulative
    return total


def _arrays(*columns: ArrayLike) -> list[Array]:
    return [np.asarray(column, dtype=np.float64) for column in columns]


def bgnbd_log_likelihood(params: Array, x: Array, t_x: Array, T: Array) -> float:
    """The BG/NBD log-likelihood of the whole sample (eq. 6), summed over customers."""
    r, alpha, a, b = params
    a1 = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
    a2 = special.gammaln(a + b) + special.gammaln(b + x) - special.gammaln(b)
    a2 -= special.gammaln(a + b + x)
    a3 = -(r + x) * np.log(alpha + T)
    repeat = x > 0
    a4 = np.full_like(x, -np.inf)
    a4[repeat] = (
        np.log(a) - np.log(b + x[repeat] - 1) - (r + x[repeat]) * np.log(alpha + t_x[repeat])
    )
    return float(np.sum(a1 + a2 + np.logaddexp(a3, a4)))


def gamma_gamma_log_likelihood(params: Array, x: Array, m: Array) -> float:
    """The Gamma-Gamma log-likelihood of the mean spends ``m`` over ``x`` transactions."""
    p, q, gamma = params
    px = p * x
    ll = (
        special.gammaln(px + q)
        - special.gammaln(px)
        - special.gammaln(q)
        + q * np.log(gamma)
        + (px - 1) * np.log(m)
        + px * np.log(x)
        - (px + q) * np.log(x * m + gamma)
    )
    return float(np.sum(ll))


def _maximise(objective: Any, start: Sequence[float], what: str) -> Array:
    """Maximise ``objective`` over positive parameters, searching their logarithms."""

    def negative(log_params: Array) -> float:
        value = objective(np.exp(log_params))
        return -value if np.isfinite(value) else 1e300

    result = optimize.minimize(
        negative,
        np.log(np.asarray(start, dtype=np.float64)),
        method="Nelder-Mead",
        options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 20000, "maxfev": 40000},
    )
    refined = optimize.minimize(negative, result.x, method="BFGS")
    best = refined if refined.fun <= result.fun else result
    if not np.all(np.isfinite(best.x)):
        raise FitError(f"{what}: the fit did not converge ({best.message})")
    fitted: Array = np.exp(best.x)
    return fitted


def fit_bgnbd(x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> BGNBD:
    """BG/NBD by maximum likelihood over one row per customer (time in weeks)."""
    xs, txs, Ts = _arrays(x, t_x, T)
    if len(xs) < 10:
        raise FitError(f"BG/NBD needs at least 10 customers (got {len(xs)})")
    if not np.any(xs > 0):
        raise FitError("BG/NBD needs some customers with repeat purchases")
    fitted = _maximise(lambda p: bgnbd_log_likelihood(p, xs, txs, Ts), (1, 1, 1, 1), "BG/NBD")
    return BGNBD(*map(float, fitted))


def fit_gamma_gamma(x: ArrayLike, m: ArrayLike) -> GammaGamma:
    """Gamma-Gamma by maximum likelihood over customers with repeat purchases of mean ``m``
    (rows with ``x`` of 0 or a mean that is not positive are left out)."""
    xs, ms = _arrays(x, m)
    keep = (xs > 0) & (ms > 0)
    xs, ms = xs[keep], ms[keep]
    if len(xs) < 10:
        raise FitError(f"Gamma-Gamma needs at least 10 repeat customers (got {len(xs)})")
    fitted = _maximise(lambda p: gamma_gamma_log_likelihood(p, xs, ms), (1, 1, 1), "Gamma-Gamma")
    return GammaGamma(*map(float, fitted))

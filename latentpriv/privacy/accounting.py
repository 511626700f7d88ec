"""Privacy accounting: Gaussian calibration and composition.

Pure functions, no state:

* :func:`analytic_gaussian_sigma` - the smallest sigma for which the Gaussian mechanism with L2
  sensitivity ``Delta`` is (epsilon, delta)-DP, from the *exact* condition of Balle & Wang (2018),
  "Improving the Gaussian Mechanism for Differential Privacy: Analytical Calibration and Optimal
  Denoising", Theorem 8. Valid for every epsilon > 0.
* :func:`classic_gaussian_sigma` - ``sqrt(2 ln(1.25/delta)) * Delta / epsilon`` (Dwork & Roth, Thm A.1),
  a valid calibration only for epsilon < 1; used here solely to reproduce the research notebook's step.
* :func:`gaussian_rho`, :func:`zcdp_to_dp` - zero-concentrated DP (Bun & Steinke 2016): the Gaussian
  mechanism is ``Delta^2 / (2 sigma^2)``-zCDP, zCDP composes by adding rho, and rho-zCDP implies
  ``(rho + 2 sqrt(rho ln(1/delta)), delta)``-DP for every delta in (0, 1) (Prop. 1.3).
"""

from __future__ import annotations

import math
from numbers import Real

__all__ = [
    "analytic_gaussian_delta",
    "analytic_gaussian_sigma",
    "classic_gaussian_sigma",
    "gaussian_rho",
    "zcdp_to_dp",
    "check_number",
]


def check_number(name: str, value: object, *, low: float | None = None, high: float | None = None,
                 low_open: bool = True, high_open: bool = True, allow_inf: bool = False) -> float:
    """Return ``value`` as float after checking its type and range.

    Raises :class:`TypeError` for a non-number (bools included) and
    :class:`~latentpriv.errors.ConfigError` (a ``ValueError``) for NaN, an infinity (unless
    ``allow_inf``) or a value outside the interval given by ``low``/``high`` (open ends by default).
    """
    from latentpriv.errors import ConfigError

    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    if math.isnan(v):
        raise ConfigError(f"{name} is NaN; give a finite number")
    if math.isinf(v) and not allow_inf:
        raise ConfigError(f"{name} = {v} is not finite; give a finite number")
    if low is not None and (v < low or (low_open and v == low)):
        raise ConfigError(f"{name} = {v:g} must be {'>' if low_open else '>='} {low:g}")
    if high is not None and (v > high or (high_open and v == high)):
        raise ConfigError(f"{name} = {v:g} must be {'<' if high_open else '<='} {high:g}")
    return v


def _log_phi(x: float) -> float:
    """log of the standard normal CDF, accurate in the far left tail."""
    if x > -30.0:
        val = 0.5 * math.erfc(-x / math.sqrt(2.0))
        if val > 0.0:
            return math.log(val)
    # asymptotic series for Phi(x), x -> -inf
    x2 = x * x
    series = 1.0 - 1.0 / x2 + 3.0 / (x2 * x2) - 15.0 / (x2 * x2 * x2)
    return -0.5 * x2 - math.log(-x) - 0.5 * math.log(2.0 * math.pi) + math.log(series)


def analytic_gaussian_delta(sigma: float, epsilon: float, sensitivity: float = 1.0) -> float:
    """The exact delta(epsilon) of the Gaussian mechanism N(0, sigma^2) with L2 sensitivity ``sensitivity``.

    ``delta = Phi(D/(2s) - e s/D) - e^e Phi(-D/(2s) - e s/D)`` (Balle & Wang 2018, Thm 8).
    """
    d, s, e = float(sensitivity), float(sigma), float(epsilon)
    u = d / (2.0 * s)
    v = e * s / d
    first = math.exp(_log_phi(u - v))
    second = math.exp(min(e + _log_phi(-u - v), 700.0))
    return max(first - second, 0.0)


def analytic_gaussian_sigma(epsilon: float, delta: float, sensitivity: float = 1.0, *,
                            rel_tol: float = 1e-12) -> float:
    """Smallest sigma (to ``rel_tol``, rounded up) making N(0, sigma^2 I) (epsilon, delta)-DP.

    Args:
        epsilon: > 0 (any size; the classic formula is only valid below 1).
        delta: in (0, 1).
        sensitivity: L2 sensitivity Delta > 0 of the released vector.

    Returns:
        sigma > 0 such that ``analytic_gaussian_delta(sigma, epsilon, sensitivity) <= delta``;
        the bisection returns the upper end, so the guarantee always holds.
        Reference: ``analytic_gaussian_sigma(1, 1e-5, 1) = 3.7306`` (classic: 4.8448).
    """
    epsilon = check_number("epsilon", epsilon, low=0.0)
    delta = check_number("delta", delta, low=0.0, high=1.0)
    sensitivity = check_number("sensitivity", sensitivity, low=0.0)
    # delta(sigma) is strictly decreasing in sigma: bracket, then bisect in log space.
    lo = hi = sensitivity
    while analytic_gaussian_delta(hi, epsilon, sensitivity) > delta:
        lo, hi = hi, hi * 2.0
    while analytic_gaussian_delta(lo, epsilon, sensitivity) <= delta and lo > 1e-12 * sensitivity:
        lo, hi = lo / 2.0, lo
    for _ in range(200):
        if hi - lo <= rel_tol * hi:
            break
        mid = math.sqrt(lo * hi)
        if analytic_gaussian_delta(mid, epsilon, sensitivity) > delta:
            lo = mid
        else:
            hi = mid
    return hi


def classic_gaussian_sigma(epsilon: float, delta: float, sensitivity: float = 1.0) -> float:
    """``sqrt(2 ln(1.25/delta)) * sensitivity / epsilon`` (a DP calibration only when epsilon < 1).

    Kept for the notebook-compatible ``seed`` mechanism; no range check on epsilon on purpose.
    """
    epsilon = check_number("epsilon", epsilon, low=0.0)
    delta = check_number("delta", delta, low=0.0, high=1.0)
    return math.sqrt(2.0 * math.log(1.25 / delta)) * float(sensitivity) / epsilon


def gaussian_rho(sigma: float, sensitivity: float) -> float:
    """zCDP parameter ``rho = Delta^2 / (2 sigma^2)`` of the Gaussian mechanism."""
    return float(sensitivity) ** 2 / (2.0 * float(sigma) ** 2)


def zcdp_to_dp(rho: float, delta: float) -> float:
    """Epsilon such that rho-zCDP implies (epsilon, delta)-DP: ``rho + 2 sqrt(rho ln(1/delta))``."""
    delta = check_number("delta", delta, low=0.0, high=1.0)
    if rho < 0:
        raise ValueError(f"rho = {rho} must be >= 0")
    return float(rho) + 2.0 * math.sqrt(float(rho) * math.log(1.0 / delta))

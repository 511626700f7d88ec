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
  (epsilon, delta)-DP with epsilon from CKS20 Cor 13 (:func:`zcdp_delta`), never more than Bun &
  Steinke's ``rho + 2 sqrt(rho ln(1/delta))`` (Prop. 1.3).

The noise actually drawn is OpenDP's *discrete* Gaussian on a grid, not the continuous one, so the
release calibration uses bounds proven for it (Canonne, Kamath & Steinke 2020, "The Discrete Gaussian
for Differential Privacy", CKS20):

* :func:`discrete_gaussian_delta` / :func:`discrete_gaussian_sigma` - one coordinate: CKS20 Thm 7's
  delta for an integer-valued query, with the discrete tail sums bounded by integrals, so the value is
  a proven upper bound (within a relative ~1/sigma of the continuous delta);
* :func:`zcdp_delta` / :func:`zcdp_gaussian_sigma` - several coordinates: the multivariate discrete
  Gaussian is ``Delta_2^2 / (2 sigma^2)``-zCDP exactly (CKS20), converted to (epsilon, delta) by CKS20
  Cor 13 (the conversion OpenDP's own ``make_zCDP_to_approxDP`` uses). The continuous analytic bound
  is not proven for a discrete vector, so this costs ~8 % more sigma than it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from numbers import Real

# How a gaussian release's sigma was set (a record's noise.calibration, a dither's calibration):
GAUSSIAN_DISCRETE_1D = ("CKS20 Thm 7 for the discrete Gaussian (one direction), tail sums bounded by integrals: "
                        "a proven (epsilon, delta)")
GAUSSIAN_DISCRETE_ZCDP = ("zCDP of the multivariate discrete Gaussian, converted by CKS20 Cor 13 (as OpenDP's "
                          "make_zCDP_to_approxDP)")
GAUSSIAN_CONTINUOUS = "analytic Gaussian mechanism, Balle & Wang 2018 (continuous noise)"

__all__ = [
    "discrete_gaussian_delta",
    "discrete_gaussian_sigma",
    "zcdp_delta",
    "zcdp_gaussian_sigma",
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


def check_epsilons(values: Sequence[float], *, name: str = "epsilons") -> list[float]:
    """A non-empty list of privacy budgets, each > 0 and finite (:func:`check_number`); raises
    :class:`~latentpriv.errors.ConfigError` naming ``name`` otherwise."""
    from latentpriv.errors import ConfigError

    values = list(values)
    if not values:
        raise ConfigError(f"{name}: give at least one epsilon, e.g. 0.5,1,2,4")
    return [check_number(f"{name} value", v, low=0.0) for v in values]


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
    return _bisect_safe(lambda sg: analytic_gaussian_delta(sg, epsilon, sensitivity) <= delta, lo, hi, rel_tol)


def _bisect_safe(ok, lo: float, hi: float, rel_tol: float) -> float:
    """Geometric bisection of ``[lo, hi]`` (``ok(hi)`` true) to ``rel_tol``; returns a point where ``ok``
    held, so the caller's guarantee holds whatever ``ok`` does in between."""
    for _ in range(200):
        if hi - lo <= rel_tol * hi:
            break
        mid = math.sqrt(lo * hi)
        if ok(mid):
            hi = mid
        else:
            lo = mid
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
    """Epsilon such that rho-zCDP implies (epsilon, delta)-DP: the smallest epsilon (to 1e-12, safe side)
    with :func:`zcdp_delta` ``<= delta``, never more than Bun & Steinke's ``rho + 2 sqrt(rho ln(1/delta))``."""
    delta = check_number("delta", delta, low=0.0, high=1.0)
    if rho < 0:
        raise ValueError(f"rho = {rho} must be >= 0")
    return _zcdp_epsilon(float(rho), delta)


@functools.lru_cache(maxsize=4096)
def _zcdp_epsilon(rho: float, delta: float) -> float:
    bun_steinke = rho + 2.0 * math.sqrt(rho * math.log(1.0 / delta))
    if rho == 0.0 or _zcdp_delta(rho, bun_steinke) > delta:  # pragma: no cover - CKS20 is never looser
        return bun_steinke
    lo, hi = 0.0, bun_steinke
    for _ in range(200):
        if hi - lo <= 1e-12 * hi:
            break
        mid = (lo + hi) / 2.0
        if _zcdp_delta(rho, mid) <= delta:
            hi = mid
        else:
            lo = mid
    return hi


# ------------------------------------------------------------------------------ discrete Gaussian


def discrete_gaussian_delta(sigma: float, epsilon: float, sensitivity: int) -> float:
    """A proven upper bound on delta(epsilon) of adding N_Z(0, sigma^2) to an integer-valued query whose
    values on neighbours differ by at most ``sensitivity`` (an integer >= 1); all in grid units.

    CKS20 Thm 7: ``delta = P[Y > t] - e^eps P[Y > t + D]``, ``t = eps sigma^2 / D - D / 2``, Y ~ N_Z(0,
    sigma^2). With ``m = floor(t) + 1 >= 1`` and ``f(x) = exp(-x^2 / (2 sigma^2))`` decreasing on x >= m:
    ``sum_{x>=m} f <= f(m) + integral_m^inf f`` and ``sum_{x>=n} f >= integral_n^inf f``; the normaliser
    is ``sigma sqrt(2 pi) theta`` with ``1 <= theta <= 1 + 2q / (1 - q)``, ``q = exp(-2 pi^2 sigma^2)``
    (Poisson summation). So ``delta <= Phibar(m/s) + phi(m/s)/s - e^eps Phibar((m+D)/s) / theta_max``.
    Returns 1.0 when ``t < 0`` (only for sigma far too small for any delta < 1/2).
    """
    s = check_number("sigma", sigma, low=0.0)
    e = check_number("epsilon", epsilon, low=0.0, low_open=False)
    if isinstance(sensitivity, bool) or int(sensitivity) != sensitivity or sensitivity < 1:
        raise ValueError(f"sensitivity = {sensitivity!r} must be an integer >= 1 (grid units)")
    d = int(sensitivity)
    t = e * s * s / d - d / 2.0
    if t < 0:
        return 1.0
    m = math.floor(t) + 1
    upper = math.exp(_log_phi(-m / s)) + math.exp(-0.5 * (m / s) ** 2) / (s * math.sqrt(2.0 * math.pi))
    q = math.exp(-2.0 * math.pi ** 2 * s * s)
    log_theta_max = math.log1p(2.0 * q / (1.0 - q)) if q < 1.0 else math.inf
    lower = math.exp(min(e + _log_phi(-(m + d) / s) - log_theta_max, 700.0))
    return min(max(upper - lower, 0.0), 1.0)


def discrete_gaussian_sigma(epsilon: float, delta: float, sensitivity: int, *, rel_tol: float = 1e-12) -> float:
    """The smallest sigma (grid units, to ``rel_tol``, safe side) with
    ``discrete_gaussian_delta(sigma, epsilon, sensitivity) <= delta``.

    Starts from the continuous analytic sigma; the discrete bound differs from it by a relative ~1/sigma,
    so on a fine grid (sigma ~ 10^6 steps) the result is the continuous sigma to ~6 digits.
    """
    epsilon = check_number("epsilon", epsilon, low=0.0)
    delta = check_number("delta", delta, low=0.0, high=1.0)
    hi = analytic_gaussian_sigma(epsilon, delta, float(sensitivity))
    while discrete_gaussian_delta(hi, epsilon, sensitivity) > delta:
        hi *= 1.001
    lo = hi
    while discrete_gaussian_delta(lo, epsilon, sensitivity) <= delta and lo > 1e-12:
        lo /= 1.001
    # the bound is monotone in sigma up to the floor() in t (jumps ~1/sigma): the bisection keeps hi on the
    # valid side whatever happens in between, which is all the guarantee needs
    return _bisect_safe(lambda sg: discrete_gaussian_delta(sg, epsilon, sensitivity) <= delta, lo, hi, rel_tol)


def zcdp_delta(rho: float, epsilon: float) -> float:
    """delta such that rho-zCDP implies (epsilon, delta)-DP (CKS20 Cor 13, as in OpenDP):
    ``inf_{a > 1} exp((a - 1)(a rho - epsilon)) (1 - 1/a)^a / (a - 1)``.

    Every ``a`` gives a valid bound, so the search only affects tightness, never validity.
    """
    rho = check_number("rho", rho, low=0.0, low_open=False)
    epsilon = check_number("epsilon", epsilon, low=0.0, low_open=False)
    if rho == 0.0:
        return 0.0

    return _zcdp_delta(rho, epsilon)


@functools.lru_cache(maxsize=4096)
def _zcdp_delta(rho: float, epsilon: float) -> float:
    def log_delta(a: float) -> float:
        return (a - 1.0) * (a * rho - epsilon) + a * math.log1p(-1.0 / a) - math.log(a - 1.0)

    # log_delta is convex in a (second derivative 2 rho + 1/(a (a - 1)) > 0): golden-section search
    lo, hi = 1.0 + 1e-9, 4.0 + 4.0 * (epsilon + 1.0) / rho
    g = (math.sqrt(5.0) - 1.0) / 2.0
    x1, x2 = hi - g * (hi - lo), lo + g * (hi - lo)
    f1, f2 = log_delta(x1), log_delta(x2)
    for _ in range(200):
        if hi - lo <= 1e-12 * hi:
            break
        if f1 < f2:
            hi, x2, f2 = x2, x1, f1
            x1 = hi - g * (hi - lo)
            f1 = log_delta(x1)
        else:
            lo, x1, f1 = x1, x2, f2
            x2 = lo + g * (hi - lo)
            f2 = log_delta(x2)
    return min(math.exp(min(f1, f2, 0.0)), 1.0)


def zcdp_gaussian_sigma(epsilon: float, delta: float, sensitivity: float, *, rel_tol: float = 1e-12) -> float:
    """Smallest sigma (safe side) for which the ``Delta^2/(2 sigma^2)``-zCDP Gaussian mechanism with L2
    sensitivity ``sensitivity`` is (epsilon, delta)-DP via :func:`zcdp_delta`; valid for the discrete
    (multivariate) Gaussian, for which the continuous analytic bound is not proven."""
    epsilon = check_number("epsilon", epsilon, low=0.0)
    delta = check_number("delta", delta, low=0.0, high=1.0)
    sensitivity = check_number("sensitivity", sensitivity, low=0.0)

    def ok(sigma: float) -> bool:
        return zcdp_delta(gaussian_rho(sigma, sensitivity), epsilon) <= delta

    lo = hi = analytic_gaussian_sigma(epsilon, delta, sensitivity)  # zCDP is never tighter than the exact bound
    while not ok(hi):
        lo, hi = hi, hi * 1.25
    return _bisect_safe(ok, lo, hi, rel_tol)

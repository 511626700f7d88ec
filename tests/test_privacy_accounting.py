"""Analytic Gaussian calibration and zCDP conversion against independent references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from latentpriv.errors import ConfigError
from latentpriv.privacy.accounting import (
    analytic_gaussian_delta,
    analytic_gaussian_sigma,
    check_number,
    classic_gaussian_sigma,
    discrete_gaussian_delta,
    discrete_gaussian_sigma,
    gaussian_rho,
    zcdp_delta,
    zcdp_gaussian_sigma,
    zcdp_to_dp,
)


def test_reference_values_from_privacy_design():
    # PRIVACY.md 2 and 7: analytic 3.7306 vs classic 4.8448; the notebook's sigma at eps 0.5 is 9.69
    assert analytic_gaussian_sigma(1.0, 1e-5, 1.0) == pytest.approx(3.7306, abs=5e-5)
    assert classic_gaussian_sigma(1.0, 1e-5, 1.0) == pytest.approx(4.8448, abs=5e-5)
    assert classic_gaussian_sigma(0.5, 1e-5, 1.0) == pytest.approx(9.69, abs=5e-3)


@pytest.mark.parametrize("eps,delta,sens", [(1.0, 1e-5, 1.0), (0.1, 1e-6, 1.0), (0.5, 1e-5, 6.0),
                                            (2.0, 1e-5, 6.0), (5.0, 1e-7, 8.49), (20.0, 1e-3, 1.0)])
def test_analytic_sigma_matches_dp_accounting(eps, delta, sens):
    dp_accounting = pytest.importorskip("dp_accounting", reason="dp-accounting is in the `test` extra")
    ours = analytic_gaussian_sigma(eps, delta, sens)
    theirs = dp_accounting.get_sigma_gaussian(eps, delta) * sens
    assert ours == pytest.approx(theirs, rel=1e-8)
    # and the bisection returns the safe side: the exact delta at our sigma is <= delta
    assert analytic_gaussian_delta(ours, eps, sens) <= delta


def test_analytic_sigma_is_tight_and_valid_above_one():
    for eps in (0.3, 1.0, 3.0, 10.0):
        s = analytic_gaussian_sigma(eps, 1e-5, 1.0)
        assert analytic_gaussian_delta(s, eps, 1.0) <= 1e-5
        assert analytic_gaussian_delta(s * (1 - 1e-6), eps, 1.0) > 1e-5
    # classic is looser below 1 and invalid above: at eps=10 it under-noises (its delta exceeds the claim)
    assert classic_gaussian_sigma(0.5, 1e-5, 1.0) > analytic_gaussian_sigma(0.5, 1e-5, 1.0)
    s_classic = classic_gaussian_sigma(10.0, 1e-5, 1.0)
    assert analytic_gaussian_delta(s_classic, 10.0, 1.0) > 1e-5


def test_zcdp_conversion_and_rho():
    assert gaussian_rho(2.0, 1.0) == pytest.approx(0.125)
    rho, delta = 0.1, 1e-5
    bun_steinke = rho + 2 * math.sqrt(rho * math.log(1 / delta))
    eps = zcdp_to_dp(rho, delta)
    # CKS20 Cor 13 is tighter than Bun & Steinke's closed form, and it is the smallest such epsilon
    assert 0.8 * bun_steinke < eps < bun_steinke
    assert zcdp_delta(rho, eps) <= delta < zcdp_delta(rho, eps * (1 - 1e-6))
    with pytest.raises(ValueError):
        zcdp_to_dp(-1.0, 1e-5)


@pytest.mark.parametrize("kwargs,exc", [
    ({"epsilon": 0.0, "delta": 1e-5}, ConfigError),
    ({"epsilon": -1.0, "delta": 1e-5}, ConfigError),
    ({"epsilon": float("nan"), "delta": 1e-5}, ConfigError),
    ({"epsilon": float("inf"), "delta": 1e-5}, ConfigError),
    ({"epsilon": 1.0, "delta": 0.0}, ConfigError),
    ({"epsilon": 1.0, "delta": 1.0}, ConfigError),
    ({"epsilon": "1", "delta": 1e-5}, TypeError),
    ({"epsilon": 1.0, "delta": None}, TypeError),
    ({"epsilon": True, "delta": 1e-5}, TypeError),
])
def test_sigma_validation(kwargs, exc):
    with pytest.raises(exc):
        analytic_gaussian_sigma(**kwargs)


def test_check_number_messages():
    with pytest.raises(ConfigError, match=r"epsilon = -2 must be > 0"):
        check_number("epsilon", -2, low=0.0)
    with pytest.raises(TypeError, match="must be a real number"):
        check_number("epsilon", [1.0], low=0.0)
    assert check_number("x", 3, low=0.0) == 3.0


def _exact_discrete_delta(sigma: float, eps: float, d: int) -> float:
    """delta(eps) of N_Z(0, sigma^2) vs N_Z(d, sigma^2) by direct summation (small sigma only)."""
    xs = np.arange(-int(40 * sigma) - d, int(40 * sigma) + d + 1)
    logf = -xs.astype(np.float64) ** 2 / (2 * sigma**2)
    p = np.exp(logf - logf.max())
    p /= p.sum()
    q = np.roll(p, d)  # q(x) = p(x - d)
    q[:d] = 0.0
    return float(np.maximum(p - math.exp(eps) * q, 0.0).sum())


@pytest.mark.parametrize("sigma,eps,d", [(5.0, 1.0, 3), (20.0, 0.5, 4), (50.3, 1.0, 13), (3.0, 2.0, 1),
                                         (400.0, 1.0, 100)])
def test_discrete_delta_bound_is_an_upper_bound_and_tightens_with_sigma(sigma, eps, d):
    exact = _exact_discrete_delta(sigma, eps, d)
    bound = discrete_gaussian_delta(sigma, eps, d)
    assert exact <= bound
    # the slack is the density term phi(m/s)/s: relative ~ (tail z-score)/sigma of the tail probability
    assert bound - exact <= 2.0 * (6.0 / sigma) * math.exp(_log_tail(eps * sigma / d - d / (2 * sigma)))


def _log_tail(z: float) -> float:
    return math.log(0.5 * math.erfc(z / math.sqrt(2.0)))


def test_discrete_sigma_is_safe_and_close_to_the_continuous_one():
    for eps, delta, d in [(1.0, 1e-5, 6 * 2**20 + 1), (0.25, 1e-6, 1000), (8.0, 1e-5, 50)]:
        s = discrete_gaussian_sigma(eps, delta, d)
        assert discrete_gaussian_delta(s, eps, d) <= delta
        cont = analytic_gaussian_sigma(eps, delta, float(d))
        assert cont * (1 - 1e-3) <= s <= cont * (1 + 0.2)
    with pytest.raises(ValueError, match="integer"):
        discrete_gaussian_delta(3.0, 1.0, 1.5)


def test_zcdp_delta_against_opendp_and_the_standard_conversion():
    import opendp.prelude as dp

    dp.enable_features("contrib")
    for eps, delta in [(0.5, 1e-5), (1.0, 1e-5), (4.0, 1e-6)]:
        s = zcdp_gaussian_sigma(eps, delta, 1.0)
        assert zcdp_delta(gaussian_rho(s, 1.0), eps) <= delta
        # OpenDP's own conversion certifies the same (epsilon, delta) at this sigma, to float precision
        meas = dp.m.make_gaussian(dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float), scale=s)
        assert dp.c.make_zCDP_to_approxDP(meas).map(1.0).epsilon(delta) == pytest.approx(eps, rel=1e-9)
        # tighter than Bun-Steinke's rho + 2 sqrt(rho ln 1/delta), looser than the exact continuous bound
        rho = gaussian_rho(s, 1.0)
        assert zcdp_to_dp(rho, delta) == pytest.approx(eps, rel=1e-6)
        assert rho + 2 * math.sqrt(rho * math.log(1 / delta)) > eps
        assert analytic_gaussian_sigma(eps, delta, 1.0) < s < 1.1 * analytic_gaussian_sigma(eps, delta, 1.0)
    assert zcdp_delta(0.0, 1.0) == 0.0


def test_check_epsilons_is_the_one_rule_for_lists_of_budgets():
    from latentpriv.errors import ConfigError
    from latentpriv.privacy.accounting import check_epsilons

    assert check_epsilons([0.5, 2]) == [0.5, 2.0]
    for bad, match in (([], "at least one"), ([1, 0], "must be > 0"), ([float("inf")], "not finite"),
                       ([float("nan")], "NaN")):
        with pytest.raises(ConfigError, match=match):
            check_epsilons(bad, name="--epsilons")

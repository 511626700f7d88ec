"""The empirical audit: correct mechanisms survive, the notebook's step is caught, laplace is tight."""

from __future__ import annotations

import numpy as np
import pytest

from latentpriv.privacy.audit import audit, clopper_pearson, empirical_epsilon
from latentpriv.privacy.noise import OpenDPNoise


def test_clopper_pearson_reference_values():
    lo, hi = clopper_pearson(np.array([0, 5, 10]), 10, 0.05)
    # exact values from the beta quantiles (e.g. R's binom.test)
    assert lo[0] == 0.0 and hi[0] == pytest.approx(0.3084971, abs=1e-6)
    assert lo[1] == pytest.approx(0.1870860, abs=1e-6) and hi[1] == pytest.approx(0.8129140, abs=1e-6)
    assert lo[2] == pytest.approx(0.6915029, abs=1e-6) and hi[2] == 1.0


@pytest.mark.parametrize("epsilon", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("mechanism,delta", [("laplace", 0.0), ("gaussian", 1e-5), ("rr", 0.0)])
def test_default_mechanisms_pass(mechanism, delta, epsilon):
    res = audit(mechanism, epsilon, delta, trials=50_000, seed=int(epsilon * 10))
    assert res.epsilon_lb <= epsilon
    assert res.passed and not res.flags
    assert res.as_dict()["result"] == "PASS"


@pytest.mark.parametrize("epsilon", [0.5, 1.0, 2.0])
def test_seed_mechanism_is_flagged(epsilon):
    res = audit("seed", epsilon, 1e-5, trials=20_000, seed=1)
    assert not res.passed
    assert res.epsilon_lb > 3 * epsilon  # its atoms at a +- C prove a huge epsilon
    assert any("point masses" in f for f in res.flags)
    assert any(p.disjoint_atoms for p in res.pairs)


def test_laplace_is_not_needlessly_noisy():
    """At worst-case neighbours the audit proves at least half the claimed epsilon (10^5 trials)."""
    for eps in (0.5, 1.0, 2.0):
        res = audit("laplace", eps, trials=100_000, seed=123)
        assert eps / 2 <= res.epsilon_lb <= eps


def test_audit_with_opendp_sampler():
    # OpenDP cannot be seeded: 99.9% confidence makes a spurious failure of a correct mechanism negligible
    res = audit("laplace", 1.0, trials=20_000, confidence=0.999)
    assert res.sampler["sampler"] == "opendp"
    assert 0.5 <= res.epsilon_lb <= 1.0 and res.passed
    res = audit("rr", 1.0, noise=OpenDPNoise(), trials=2_000, confidence=0.999)
    assert res.epsilon_lb <= 1.0 and res.passed
    res = audit("seed", 0.5, 1e-5, trials=2_000)
    assert not res.passed


def test_audit_catches_a_broken_mechanism():
    """A mechanism with twice the claimed epsilon (half the noise) must fail."""
    rng = np.random.default_rng(0)
    x = np.clip(-3 + rng.laplace(0, 3.0, 100_000), -3, 3)   # scale 2B/eps for eps = 2
    y = np.clip(3 + rng.laplace(0, 3.0, 100_000), -3, 3)
    r = empirical_epsilon(x, y)
    assert r["epsilon_lb"] > 1.5  # so a claim of epsilon = 1 fails


def test_audit_validation():
    with pytest.raises(ValueError):
        audit("laplace", 1.0, trials=10)
    with pytest.raises(ValueError):
        audit("laplace", 1.0, 1e-5, trials=1000, seed=0)
    with pytest.raises(ValueError):
        audit("laplace", 0.0, trials=1000, seed=0)

"""latentpriv.privatize: validation, geometry (residual, range), noise sources, records."""

from __future__ import annotations

import contextlib
import json
import math

import numpy as np
import pytest

import latentpriv
from latentpriv.errors import ConfigError, InputError
from latentpriv.privacy.accounting import analytic_gaussian_sigma
from latentpriv.privacy.mechanisms import SeedMechanismWarning, calibrate, privatize
from latentpriv.privacy.noise import DEFAULT_GRID_K, OpenDPNoise, SeededNoise


def _orthonormal(k: int, dim: int, seed: int = 0) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, k)))
    return q.T.copy()


@pytest.fixture
def dirs2():
    return _orthonormal(2, 512)


@pytest.fixture
def w_batch():
    return np.random.default_rng(1).normal(size=(64, 512)).astype(np.float32)


# ------------------------------------------------------------------------------------- validation

BAD = [
    # (kwargs, exception, message fragment)
    ({"epsilon": 0.0}, ConfigError, "epsilon = 0 must be > 0"),
    ({"epsilon": -1.0}, ConfigError, "must be > 0"),
    ({"epsilon": float("inf")}, ConfigError, "no privacy"),
    ({"epsilon": float("nan")}, ConfigError, "NaN"),
    ({"epsilon": "1"}, TypeError, "real number"),
    ({"epsilon": None}, TypeError, "real number"),
    ({"epsilon": 1.0, "delta": 1e-5}, ConfigError, "does not apply to the laplace"),
    ({"epsilon": 1.0, "delta": 1e-5, "mechanism": "rr"}, ConfigError, "does not apply to the rr"),
    ({"epsilon": 1.0, "mechanism": "gaussian"}, ConfigError, "needs delta in (0, 1)"),
    ({"epsilon": 1.0, "delta": 1.0, "mechanism": "gaussian"}, ConfigError, "delta"),
    ({"epsilon": 1.0, "delta": -0.1, "mechanism": "gaussian"}, ConfigError, "delta"),
    ({"epsilon": 1.0, "mechanism": "seed"}, ConfigError, "needs delta"),
    ({"epsilon": 1.0, "clip_radius": 0.0}, ConfigError, "clip_radius = 0 must be > 0"),
    ({"epsilon": 1.0, "clip_radius": -3.0}, ConfigError, "clip_radius"),
    ({"epsilon": 1.0, "clip_radius": "3"}, TypeError, "clip_radius"),
    ({"epsilon": 1.0, "mechanism": "exponential"}, ConfigError, "unknown mechanism"),
    ({"epsilon": 1.0, "mechanism": 3}, TypeError, "mechanism must be a string"),
    ({"epsilon": 1.0, "center": float("nan")}, ConfigError, "center"),
    ({"epsilon": 1.0, "center": [0.0, 1.0, 2.0]}, ConfigError, "center has 3 values"),
    ({"epsilon": 1.0, "epsilon_split": [1.0]}, ConfigError, "1 weights for 2"),
    ({"epsilon": 1.0, "epsilon_split": [1.0, -1.0]}, ConfigError, "epsilon_split"),
    ({"epsilon": 1.0, "delta": 1e-5, "mechanism": "gaussian", "epsilon_split": [1, 1]}, ConfigError, "joint draw"),
    ({"epsilon": 1.0, "seed": 1.5}, TypeError, "seed"),
    ({"epsilon": 1.0, "seed": -1}, ValueError, "seed"),
    ({"epsilon": 1.0, "layers": [0]}, ConfigError, "W+"),
]


@pytest.mark.parametrize("kwargs,exc,fragment", BAD)
def test_parameter_validation(kwargs, exc, fragment, dirs2):
    w = np.zeros((1, 512), np.float32)
    with pytest.raises(exc) as info:
        privatize(w, dirs2, **kwargs)
    assert fragment in str(info.value)


@pytest.mark.parametrize("w,fragment", [
    (np.zeros((1, 100), np.float32), "dimension 100"),
    (np.zeros((1, 512), np.int64), "floating-point"),
    (np.full((1, 512), np.nan, np.float32), "NaN"),
    (np.zeros((2, 3, 4, 512), np.float32), "expected"),
    (np.zeros((0, 512), np.float32), "no rows"),
])
def test_latent_validation(w, fragment, dirs2):
    with pytest.raises((InputError, TypeError)) as info:
        privatize(w, dirs2, epsilon=1.0, seed=0)
    assert fragment in str(info.value)


def test_direction_validation():
    w = np.zeros((1, 512), np.float32)
    n = _orthonormal(2, 512)
    with pytest.raises(InputError, match="norm"):
        privatize(w, [n[0] * 1.01], epsilon=1.0, seed=0)
    # rows that are not orthogonal are orthonormalised in order (never accepted by a tolerance)
    skew = np.stack([n[0], (n[0] + n[1]) / np.sqrt(2)])
    rec = privatize(w, skew, epsilon=1.0, seed=0).record
    assert rec["directions"]["sha256_float64"][0] == privatize(w, n, epsilon=1.0, seed=0).record["directions"][
        "sha256_float64"][0]
    with pytest.raises(InputError, match="parallel"):
        privatize(w, [n[0], n[0]], epsilon=1.0, seed=0)
    with pytest.raises(TypeError):
        privatize(w.tolist(), n, epsilon=1.0, seed=0)
    # a list of boundaries is orthogonalised in order: the first is kept
    v = (n[0] + 0.3 * n[1]) / np.linalg.norm(n[0] + 0.3 * n[1])
    res = privatize(w, [n[0][None], v[None]], epsilon=1.0, seed=0)
    assert res.latent.shape == w.shape


# ------------------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("mechanism,delta", [("laplace", 0.0), ("gaussian", 1e-5), ("rr", 0.0)])
def test_residual_dithered_and_release_in_range(mechanism, delta, dirs2, w_batch):
    c = np.array([0.5, -1.0])
    B = 2.0
    proj = np.eye(512) - dirs2.T @ dirs2
    for w in (w_batch.astype(np.float64), w_batch):
        res = privatize(w, dirs2, epsilon=1.0, delta=delta, mechanism=mechanism, clip_radius=B, center=c, seed=3)
        out = res.latent
        # float32 whatever the input's dtype, the input's shape
        assert out.dtype == np.float32 and out.shape == w_batch.shape
        out64 = out.astype(np.float64)
        coords = out64 @ dirs2.T
        assert np.all(coords >= c - B - 1e-5) and np.all(coords <= c + B + 1e-5)
        # the residual is released with the calibrated dither: orthogonal to the directions, sigma as recorded
        diff = out64 @ proj - w_batch.astype(np.float64) @ proj
        sigma = res.record["residual_release"]["sigma"]
        assert 0 < sigma < 0.02
        assert diff.std() == pytest.approx(sigma * math.sqrt(510 / 512), rel=0.05)
        assert res.record["spend"]["epsilon"] == pytest.approx(1.0 + res.record["residual_release"]["epsilon"])


def test_rr_keeps_magnitude_and_flips_sides(dirs2):
    n = dirs2[:1]
    a = np.linspace(-5, 5, 4001)
    w = a[:, None] * n  # coordinates a along n, zero residual
    res = privatize(w, n, epsilon=1.0, mechanism="rr", clip_radius=3.0, seed=5)
    out = res.latent @ n[0]
    assert np.allclose(np.abs(out), np.clip(np.abs(a), 0, 3), atol=1e-5)
    kept = np.sign(out[a != 0]) == np.sign(a[a != 0])
    assert kept.mean() == pytest.approx(math.e / (1 + math.e), abs=0.03)


def test_wplus_every_layer_released_and_layer_subset_refused(dirs2):
    rng = np.random.default_rng(2)
    w = rng.normal(size=(3, 18, 512)).astype(np.float32)
    w[0, 9:] += 5.0 * dirs2[0].astype(np.float32)  # layers with different coordinates: none may leak
    res = privatize(w, dirs2, epsilon=2.0, seed=1)
    out = res.latent
    assert out.shape == w.shape and out.dtype == np.float32
    coords = out.astype(np.float64) @ dirs2.T          # [3, 18, 2]
    # every layer carries the one released value: no layer keeps its own coordinate
    assert np.abs(coords - coords[:, :1]).max() < 1e-5
    assert np.all(np.abs(coords) <= 3.0 + 1e-5)
    assert res.record["latent"]["layers"] == 18
    with pytest.raises(ConfigError, match="every layer"):
        privatize(w, dirs2, epsilon=2.0, seed=1, layers=range(8))
    # all layers spelled out is the same as the default
    assert privatize(w, dirs2, epsilon=2.0, seed=1, layers=range(18)).latent.shape == w.shape


def test_z_latents_of_any_dim_and_single_row_shapes():
    n = _orthonormal(1, 100)
    z = np.random.default_rng(0).normal(size=(100,))
    res = privatize(z, n, epsilon=1.0, seed=0)
    assert res.latent.shape == (100,) and res.latent.dtype == np.float32
    res = privatize(z[None].astype(np.float32), n, epsilon=1.0, seed=0)
    assert res.latent.shape == (1, 100)


def test_torch_tensor_in_tensor_out(dirs2):
    torch = pytest.importorskip("torch")
    w = torch.randn(2, 512, generator=torch.Generator().manual_seed(0))
    res = privatize(w, dirs2, epsilon=1.0, seed=0)
    assert isinstance(res.latent, torch.Tensor) and res.latent.dtype == torch.float32 and res.latent.shape == (2, 512)


def test_lazy_reexport():
    assert latentpriv.privatize is privatize


# ------------------------------------------------------------------------------------- noise


def test_seeded_runs_reproduce_and_unseeded_differ(dirs2, w_batch):
    a = privatize(w_batch, dirs2, epsilon=1.0, seed=42).latent
    b = privatize(w_batch, dirs2, epsilon=1.0, seed=42).latent
    c = privatize(w_batch, dirs2, epsilon=1.0, seed=43).latent
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    u1 = privatize(w_batch, dirs2, epsilon=1.0)
    u2 = privatize(w_batch, dirs2, epsilon=1.0)
    assert not np.array_equal(u1.latent, u2.latent)
    assert u1.record["sampler"]["sampler"] == "opendp"
    assert u1.record["for_release"] is True and u1.record["reproducible"] is False
    s = privatize(w_batch, dirs2, epsilon=1.0, seed=42).record
    assert s["for_release"] is False and s["reproducible"] is True and s["sampler"]["seed"] == 42
    assert s["seed"] == 42 and any("NOT private" in x for x in s["warnings"])


def test_rows_are_independent_records(dirs2):
    w = np.repeat(np.random.default_rng(0).normal(size=(1, 512)), 50, axis=0)
    out = privatize(w, dirs2[:1], epsilon=20.0, seed=9).latent @ dirs2[0]
    assert len(np.unique(out)) > 40


@pytest.mark.parametrize("source", ["opendp", "seeded"])
def test_laplace_scale_and_grid(source):
    noise = OpenDPNoise() if source == "opendp" else SeededNoise(11)
    B, eps = 3.0, 1.0
    scale = 2 * B / eps
    x = noise.laplace(np.full(100_000, 0.3), scale)
    # empirical scale (mean absolute deviation) within 2% of 2B/eps (PRIVACY.md 7)
    assert np.mean(np.abs(x - 0.3)) == pytest.approx(scale, rel=0.02)
    # outputs lie on the 2^k grid whatever the input (0.3 is not on it)
    on_grid = np.ldexp(x, -DEFAULT_GRID_K)
    np.testing.assert_array_equal(on_grid, np.rint(on_grid))


def test_opendp_gaussian_and_rr_sources():
    noise = OpenDPNoise()
    g = noise.gaussian(np.zeros(20_000), 2.0)
    assert g.std() == pytest.approx(2.0, rel=0.03)
    keep = noise.keep_sign(1.0, 3000)
    assert keep.mean() == pytest.approx(math.e / (1 + math.e), abs=0.03)
    assert noise.rr_measurement(1.0).map(1) <= 1.0


def test_seed_mechanism_reproduces_the_notebook():
    """PRIVACY.md 7: at eps=0.5, delta=1e-5, C=1: sigma = 9.69 and P(|shift| = C) = 0.918."""
    n = _orthonormal(1, 512)
    w = np.random.default_rng(0).normal(size=(20_000, 512))
    with pytest.warns(SeedMechanismWarning):
        res = privatize(w, n, epsilon=0.5, delta=1e-5, mechanism="seed", seed=7)
    shift = (res.latent - w) @ n[0]
    assert res.record["noise"]["sigma_per_direction"][0] == pytest.approx(9.6896, abs=1e-3)
    clipped = np.isclose(np.abs(shift), 1.0, rtol=0, atol=1e-12).mean()
    assert clipped == pytest.approx(0.918, abs=0.01)
    assert np.abs(shift).max() <= 1.0 + 1e-12
    # no clamp: the coordinate moves from wherever it was, even far outside [-3, 3]
    far = np.asarray(10.0 * n)
    with pytest.warns(SeedMechanismWarning):
        out = privatize(far, n, epsilon=0.5, delta=1e-5, mechanism="seed", seed=1).latent @ n[0]
    assert out[0] >= 9.0
    rec = res.record
    assert rec["guarantee"]["type"] == "none" and "no differential-privacy guarantee" in rec["guarantee"]["reason"]
    assert rec["for_release"] is False


# ------------------------------------------------------------------------------------- calibration & records


def test_gaussian_calibration_uses_l2_sensitivity(dirs2):
    # continuous noise (grid_slack 0, an idealisation): the analytic sigma for L2 sensitivity 2B sqrt(k)
    cal = calibrate("gaussian", epsilon=1.0, delta=1e-5, clip_radius=3.0, k=2)
    assert cal.sensitivity == pytest.approx(6.0 * math.sqrt(2))
    assert cal.sigma == pytest.approx(analytic_gaussian_sigma(1.0, 1e-5, 6.0 * math.sqrt(2)))
    assert cal.rho == pytest.approx(cal.sensitivity ** 2 / (2 * cal.sigma ** 2))
    assert cal.as_dict()["noise"]["calibration"].startswith("analytic")
    lap = calibrate("laplace", epsilon=1.0, clip_radius=3.0, k=2, epsilon_split=[3, 1])
    assert lap.epsilons == pytest.approx((0.75, 0.25))
    assert lap.scales == pytest.approx((6.0 / 0.75, 6.0 / 0.25))


@pytest.mark.parametrize("mechanism,delta", [("laplace", 0.0), ("gaussian", 1e-5), ("rr", 0.0), ("seed", 1e-5)])
def test_record_never_contains_the_true_coordinate(mechanism, delta, dirs2):
    rng = np.random.default_rng(4)
    base = rng.normal(size=(1, 512))
    resid = base - (base @ dirs2.T) @ dirs2
    w1 = resid + np.array([[1.234567, -0.765432]]) @ dirs2
    w2 = resid + np.array([[-2.5, 0.125]]) @ dirs2
    with pytest.warns(SeedMechanismWarning) if mechanism == "seed" else contextlib.nullcontext():
        r1 = privatize(w1, dirs2, epsilon=1.0, delta=delta, mechanism=mechanism, seed=0, attributes=["a", "b"])
        r2 = privatize(w2, dirs2, epsilon=1.0, delta=delta, mechanism=mechanism, seed=0, attributes=["a", "b"])
    text1 = json.dumps(r1.record)  # JSON-serialisable
    # the record is the same for two inputs with different coordinates: it carries nothing about them
    assert r1.record == r2.record
    a_true = (w1 @ dirs2.T)[0]
    for v in (*a_true, *np.clip(a_true, -3, 3)):
        assert f"{v:.4f}"[:6] not in text1
    assert "1.2345" not in text1 and "0.7654" not in text1



def test_calibration_agrees_with_opendps_own_privacy_maps():
    """The scales we pass to OpenDP satisfy OpenDP's own accounting at sensitivity 2B (grid rounding included)."""
    import opendp.prelude as dp

    dp.enable_features("contrib")
    noise = OpenDPNoise()
    lap = calibrate("laplace", epsilon=1.0, clip_radius=3.0, k=2, grid_slack=noise.grid_slack())
    space = dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float)
    meas = dp.m.make_laplace(*space, scale=lap.scales[0], k=DEFAULT_GRID_K)
    assert meas.map(6.0) <= lap.epsilons[0] + 1e-12
    gau = calibrate("gaussian", epsilon=1.0, delta=1e-5, clip_radius=3.0, k=2, grid_slack=noise.grid_slack())
    vspace = dp.vector_domain(dp.atom_domain(T=float, nan=False), size=2), dp.l2_distance(T=float)
    gmeas = dp.m.make_gaussian(*vspace, scale=gau.sigma, k=DEFAULT_GRID_K)
    assert gmeas.map(gau.sensitivity) <= gau.rho * (1 + 1e-9)
    # and (epsilon, delta) as OpenDP itself certifies it for the discrete vector Gaussian (zCDP -> approx DP)
    profile = dp.c.make_zCDP_to_approxDP(gmeas).map(gau.sensitivity)
    assert profile.epsilon(1e-5) <= 1.0 + 1e-9
    assert "zCDP" in gau.as_dict()["noise"]["calibration"]


def test_one_direction_gaussian_uses_the_discrete_bound():
    """k = 1 on OpenDP's grid: CKS20 Thm 7 in grid units; sigma is the continuous one to ~1e-6 and the
    bound at it is <= delta, while the continuous analytic sigma for the same steps is not certified."""
    from latentpriv.privacy.accounting import discrete_gaussian_delta

    g = OpenDPNoise().grid_slack()
    cal = calibrate("gaussian", epsilon=1.0, delta=1e-5, clip_radius=3.0, k=1, grid_slack=g)
    steps = math.floor(6.0 / g) + 1
    assert discrete_gaussian_delta(cal.sigma / g, 1.0, steps) <= 1e-5
    cont = analytic_gaussian_sigma(1.0, 1e-5, 6.0 + g)
    assert cont <= cal.sigma <= cont * (1 + 1e-5)
    assert "Thm 7" in cal.as_dict()["noise"]["calibration"]

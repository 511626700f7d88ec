"""Goodness of fit of the noise OpenDP actually draws against the distribution the release is calibrated for.

As OpenDP tests its own samplers: draw, bin, and run a chi-square test (cells merged until every expected
count is >= 5) at a critical value of p = 1e-6, so a correct sampler fails one run in a million. Each test
also checks that the same data reject a wrong hypothesis (the scale off by 10 %, a rounded continuous
sampler, a wrong keep probability), so a pass is not a test without power.

Distributions on the grid ``g = 2^grid_k`` (noise ``K g``, ``K`` an integer):
* discrete Laplace with scale s: ``P(K = k) ~ exp(-|k| g / s)``;
* discrete Gaussian with sigma: ``P(K = k) ~ exp(-(k g)^2 / (2 sigma^2))``;
* randomized response: keep with probability ``e^eps / (1 + e^eps)``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from latentpriv.privacy.mechanisms import DITHER_GRID_K, calibrate, calibrate_dither, release_coordinates
from latentpriv.privacy.noise import DEFAULT_GRID_K, OpenDPNoise

P_CRIT = 1e-6
N_DRAWS = 50_000   # OpenDP draws ~4e5 Laplace / 2.5e5 Gaussian values a second on one core


def _grid_units(x: np.ndarray, grid_k: int) -> np.ndarray:
    """``x / 2^grid_k`` as int64, asserting every value lies exactly on the grid."""
    u = np.ldexp(np.asarray(x, dtype=np.float64), -grid_k)
    assert np.array_equal(u, np.rint(u)), "released values are not on the grid 2^grid_k"
    return u.astype(np.int64)


def _merge(counts: np.ndarray, expected: np.ndarray, minimum: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Merge adjacent cells (from both tails inward, then any left) until every expected count >= minimum."""
    cells = [[float(c), float(e)] for c, e in zip(counts, expected, strict=True)]
    while len(cells) > 1:
        small = [i for i, (_, e) in enumerate(cells) if e < minimum]
        if not small:
            break
        i = small[0]
        j = i + 1 if i + 1 < len(cells) else i - 1
        if 0 < i < len(cells) - 1 and cells[i - 1][1] < cells[i + 1][1]:
            j = i - 1
        lo, hi = min(i, j), max(i, j)
        cells[lo] = [cells[lo][0] + cells[hi][0], cells[lo][1] + cells[hi][1]]
        del cells[hi]
    arr = np.array(cells)
    return arr[:, 0], arr[:, 1]


def chi_square_p(k: np.ndarray, cdf, edges: np.ndarray) -> float:
    """p-value of integer draws ``k`` against the integer CDF ``cdf`` (vectorised), cells
    ``(-inf, e_0], (e_0, e_1], ..., (e_last, inf)``."""
    edges = np.unique(np.asarray(edges, dtype=np.int64))
    counts = np.bincount(np.searchsorted(edges, k, side="left"), minlength=len(edges) + 1)
    F = np.concatenate([[0.0], cdf(edges), [1.0]])
    expected = np.diff(F) * len(k)
    assert np.all(expected >= -1e-9) and abs(expected.sum() - len(k)) < 1e-6 * len(k)
    obs, exp = _merge(counts, np.clip(expected, 0.0, None))
    stat = float(np.sum((obs - exp) ** 2 / exp))
    return float(stats.chi2.sf(stat, len(obs) - 1))


def laplace_cdf(scale: float, grid_k: int):
    """``P(K <= m)`` of the discrete Laplace on the grid (``q = exp(-g/s)``):
    ``q^|m| / (1 + q)`` for ``m < 0`` and ``1 - q^(m+1) / (1 + q)`` for ``m >= 0``."""
    t = math.ldexp(1.0, grid_k) / scale
    q = math.exp(-t)

    def cdf(m):
        m = np.asarray(m, dtype=np.float64)
        return np.where(m < 0, np.exp(-t * np.abs(m)) / (1 + q), 1.0 - np.exp(-t * (m + 1)) / (1 + q))

    return cdf


def gaussian_cdf(sigma: float, grid_k: int):
    """``P(K <= m)`` of the discrete Gaussian on the grid: the exact normalised sum when sigma spans few grid
    steps, else the normal CDF at ``(m + 1/2) g`` (the two differ by far less than 1e-9 there)."""
    g = math.ldexp(1.0, grid_k)
    if sigma / g < 1e4:
        K = int(math.ceil(40 * sigma / g))
        ks = np.arange(-K, K + 1)
        pmf = np.exp(-((ks * g) ** 2) / (2 * sigma ** 2))
        c = np.cumsum(pmf / pmf.sum())
        return lambda m: c[np.clip(np.asarray(m) + K, 0, 2 * K)]
    return lambda m: stats.norm.cdf((np.asarray(m, dtype=np.float64) + 0.5) * g / sigma)


def rounded_laplace_cdf(scale: float, grid_k: int):
    """A plausible wrong sampler: continuous Laplace rounded to the nearest grid point."""
    g = math.ldexp(1.0, grid_k)
    return lambda m: stats.laplace.cdf((np.asarray(m, dtype=np.float64) + 0.5) * g, scale=scale)


def quantile_edges(ppf, grid_k: int, cells: int = 20) -> np.ndarray:
    """Integer cell edges near the continuous quantiles ``ppf(j / cells)``."""
    return np.floor(ppf(np.arange(1, cells) / cells) / math.ldexp(1.0, grid_k)).astype(np.int64)


@pytest.fixture(scope="module")
def opendp():
    return OpenDPNoise()


# ------------------------------------------------------------------------------------------ laplace


@pytest.mark.parametrize("grid_k, scale, rounded_differs", [(-1, 0.5, True), (-3, 0.5, False)])
def test_laplace_on_a_coarse_grid_is_the_discrete_laplace(grid_k, scale, rounded_differs):
    """A grid of one to four steps per scale. At one step per scale the discrete law is far from a rounded
    continuous Laplace (noncentrality ~1000 at these draws); at four steps the two are too close to tell."""
    k = _grid_units(OpenDPNoise(grid_k=grid_k).laplace(np.zeros(N_DRAWS), scale), grid_k)
    edges = np.arange(-60, 60)
    assert chi_square_p(k, laplace_cdf(scale, grid_k), edges) > P_CRIT
    assert chi_square_p(k, laplace_cdf(1.1 * scale, grid_k), edges) < P_CRIT
    if rounded_differs:
        assert chi_square_p(k, rounded_laplace_cdf(scale, grid_k), edges) < P_CRIT


def test_laplace_at_the_calibrated_scale_of_a_release(opendp):
    """The default grid 2^-20 and the scale ``calibrate`` gives epsilon = 1, B = 3; input off the grid."""
    calib = calibrate("laplace", epsilon=1.0, clip_radius=3.0, grid_slack=opendp.grid_slack())
    scale = calib.scales[0]
    value = 0.3  # not a grid point: the release is round(value) + K g
    out = opendp.laplace(np.full(N_DRAWS, value), scale)
    k = _grid_units(out, DEFAULT_GRID_K) - int(np.rint(math.ldexp(value, -DEFAULT_GRID_K)))
    edges = quantile_edges(lambda q: stats.laplace.ppf(q, scale=scale), DEFAULT_GRID_K)
    assert chi_square_p(k, laplace_cdf(scale, DEFAULT_GRID_K), edges) > P_CRIT
    assert chi_square_p(k, laplace_cdf(1.1 * scale, DEFAULT_GRID_K), edges) < P_CRIT
    assert chi_square_p(k, laplace_cdf(scale / 1.1, DEFAULT_GRID_K), edges) < P_CRIT


# ------------------------------------------------------------------------------------------ gaussian


def test_gaussian_on_a_coarse_grid_is_the_discrete_gaussian():
    grid_k, sigma = -1, 1.5
    k = _grid_units(OpenDPNoise(grid_k=grid_k).gaussian(np.zeros(N_DRAWS), sigma), grid_k)
    edges = np.arange(-30, 30)
    assert chi_square_p(k, gaussian_cdf(sigma, grid_k), edges) > P_CRIT
    assert chi_square_p(k, gaussian_cdf(1.1 * sigma, grid_k), edges) < P_CRIT
    assert chi_square_p(k, gaussian_cdf(sigma / 1.1, grid_k), edges) < P_CRIT


def test_gaussian_at_the_calibrated_sigma_of_a_release(opendp):
    calib = calibrate("gaussian", epsilon=1.0, delta=1e-5, clip_radius=3.0, grid_slack=opendp.grid_slack())
    sigma = float(calib.sigma)
    value = -1.7
    out = opendp.gaussian(np.full(N_DRAWS, value), sigma)
    k = _grid_units(out, DEFAULT_GRID_K) - int(np.rint(math.ldexp(value, -DEFAULT_GRID_K)))
    edges = quantile_edges(lambda q: stats.norm.ppf(q, scale=sigma), DEFAULT_GRID_K)
    assert chi_square_p(k, gaussian_cdf(sigma, DEFAULT_GRID_K), edges) > P_CRIT
    assert chi_square_p(k, gaussian_cdf(1.1 * sigma, DEFAULT_GRID_K), edges) < P_CRIT


def test_residual_dither_is_the_calibrated_discrete_gaussian(opendp):
    """The dither privatize adds to the residual: sigma from calibrate_dither, grid 2^DITHER_GRID_K."""
    dither = calibrate_dither(dims=512)
    n = 20_000  # sigma spans ~3e7 grid steps: OpenDP's sampler is slower there
    k = _grid_units(opendp.gaussian(np.zeros(n), dither.sigma, grid_k=dither.grid_k), DITHER_GRID_K)
    edges = quantile_edges(lambda q: stats.norm.ppf(q, scale=dither.sigma), DITHER_GRID_K)
    assert chi_square_p(k, gaussian_cdf(dither.sigma, DITHER_GRID_K), edges) > P_CRIT
    assert chi_square_p(k, gaussian_cdf(1.1 * dither.sigma, DITHER_GRID_K), edges) < P_CRIT


# ------------------------------------------------------------------------------------------ the release


@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
def test_released_coordinate_is_the_clamped_calibrated_law(opendp, mechanism):
    """End to end through release_coordinates: at a = c the output is clip(K g, -B, B) for the calibrated K."""
    B = 3.0
    calib = calibrate(mechanism, epsilon=1.0, delta=1e-5 if mechanism == "gaussian" else 0.0, clip_radius=B,
                      grid_slack=opendp.grid_slack())
    out = release_coordinates(np.zeros((N_DRAWS, 1)), calib, np.zeros(1), opendp)[:, 0]
    k = _grid_units(out, DEFAULT_GRID_K)
    M = int(math.ldexp(B, -DEFAULT_GRID_K))
    assert k.min() >= -M and k.max() <= M
    # outer cells (-inf, -M] and (M - 1, inf) hold the clamped mass; 18 equal-width cells in between. Most
    # mass sits on the clamp (sigma 22 for the gaussian), so the power check uses a scale off by 30 %.
    edges = np.linspace(-M, M - 1, 19).astype(np.int64)
    if mechanism == "laplace":
        cdf, wrong = laplace_cdf(calib.scales[0], DEFAULT_GRID_K), laplace_cdf(1.3 * calib.scales[0], DEFAULT_GRID_K)
    else:
        cdf, wrong = gaussian_cdf(calib.sigma, DEFAULT_GRID_K), gaussian_cdf(1.3 * calib.sigma, DEFAULT_GRID_K)
    assert chi_square_p(k, cdf, edges) > P_CRIT
    assert chi_square_p(k, wrong, edges) < P_CRIT


# ------------------------------------------------------------------------------------------ rr


def test_randomized_response_keeps_the_sign_with_the_calibrated_probability(opendp):
    n, eps = 10_000, 1.0  # OpenDP's boolean RR is one call per draw (~0.1 ms)
    kept = int(np.sum(opendp.keep_sign(eps, n)))

    def p_value(epsilon: float) -> float:
        return stats.binomtest(kept, n, 1.0 / (1.0 + math.exp(-epsilon))).pvalue

    assert p_value(eps) > P_CRIT
    assert p_value(1.5 * eps) < P_CRIT and p_value(eps / 1.5) < P_CRIT


# ------------------------------------------------------------------------------------------ the test itself


def test_chi_square_helper_merges_small_cells_and_is_calibrated():
    """Merging keeps totals; on exact expected counts the statistic is 0 (p = 1)."""
    obs, exp = _merge(np.array([1, 2, 50, 60, 3, 0]), np.array([0.5, 3.0, 50.0, 60.0, 2.0, 0.5]))
    assert obs.sum() == 116 and exp.sum() == 116 and exp.min() >= 5
    rng = np.random.default_rng(0)
    k = rng.integers(-5, 5, size=10_000)  # uniform on -5..4
    cdf = lambda m: np.clip((np.asarray(m) + 6) / 10, 0, 1)  # noqa: E731
    assert chi_square_p(k, cdf, np.arange(-5, 5)) > P_CRIT
    assert chi_square_p(k, lambda m: np.clip((np.asarray(m) + 6) / 11, 0, 1), np.arange(-5, 5)) < P_CRIT

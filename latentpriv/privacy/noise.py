"""Noise sources behind one interface: OpenDP's exact samplers (for release) and a seeded numpy one.

A :class:`NoiseSource` does not hand out raw noise to be added in floating point: it *releases* a
noisy version of its input, ``release = round_to_grid(value) + discrete noise on the grid 2^grid_k``.
This is how OpenDP avoids the floating-point attack on textbook Laplace sampling (Mironov, "On
Significance of the Least Significant Bits for Differential Privacy", CCS 2012): the output lies on
a grid that does not depend on the input, and the noise is sampled exactly from the discrete Laplace
or discrete Gaussian distribution (Canonne, Kamath & Steinke 2020) with a CSPRNG.

* :class:`OpenDPNoise` (default; ``for_release=True``): OpenDP ``make_laplace`` / ``make_gaussian``
  on float vectors with granularity ``2^grid_k`` and ``make_randomized_response_bool``. Rounding the
  input to the grid can move two neighbours apart by up to one grid step, so callers calibrate with
  the sensitivity plus :meth:`NoiseSource.grid_slack` (OpenDP's own privacy map does the same).
* :class:`SeededNoise` (``--seed N``; ``for_release=False``): a numpy ``Generator`` (PCG64) for
  reproducible experiments and fast audits. Continuous noise, rounded to the same grid, is NOT a safe
  release mechanism; the records and the CLI say so.

Neither ever touches the global ``numpy.random`` or ``torch`` RNG state.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["DEFAULT_GRID_K", "NoiseSource", "OpenDPNoise", "SeededNoise", "make_noise_source"]

#: Output granularity 2^-20 (~9.5e-7): far below the noise scales used here, above float32's
#: resolution of a coordinate of size ~1.
DEFAULT_GRID_K = -20


@runtime_checkable
class NoiseSource(Protocol):
    """What a mechanism needs from its randomness. All arrays are 1-D float64 / bool."""

    name: str
    reproducible: bool
    for_release: bool
    grid_k: int

    def laplace(self, values: np.ndarray, scale: float) -> np.ndarray:
        """``values`` (rounded to the grid) plus i.i.d. discrete Laplace(scale) noise on the grid."""

    def gaussian(self, values: np.ndarray, sigma: float, grid_k: int | None = None) -> np.ndarray:
        """``values`` (rounded to the grid) plus i.i.d. discrete Gaussian(sigma) noise on the grid
        (``2^grid_k``; default the source's own ``grid_k``)."""

    def normal(self, sigma: float, size: int) -> np.ndarray:
        """``size`` draws of zero-mean noise with standard deviation ``sigma`` (``seed`` mechanism only)."""

    def bernoulli(self, p: float, size: int) -> np.ndarray:
        """``size`` independent booleans, each True with probability ``p`` (in [0.5, 1])."""

    def keep_sign(self, epsilon: float, size: int) -> np.ndarray:
        """``size`` draws of "keep the sign" for epsilon-randomized response (P = e^eps / (1 + e^eps))."""

    def grid_slack(self) -> float:
        """Largest amount by which rounding to the grid can increase a per-coordinate distance."""

    def describe(self) -> dict:
        """Provenance for records: name, library versions, grid, reproducible/for_release, seed."""


def _as_1d(values) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.isfinite(arr).all():
        raise ValueError("noise source: input values must be finite")
    return arr


def _round_to_grid(x: np.ndarray, grid_k: int) -> np.ndarray:
    return np.ldexp(np.rint(np.ldexp(x, -grid_k)), grid_k)


class OpenDPNoise:
    """Secure noise from OpenDP (exact discrete samplers, CSPRNG). Not reproducible, for release.

    Args:
        grid_k: outputs are multiples of ``2**grid_k``.
    """

    name = "opendp"
    reproducible = False
    for_release = True

    def __init__(self, grid_k: int = DEFAULT_GRID_K) -> None:
        import opendp.prelude as dp

        dp.enable_features("contrib")
        self._dp = dp
        self.grid_k = int(grid_k)

    def grid_slack(self) -> float:
        return math.ldexp(1.0, self.grid_k)

    def _vector_space(self, n: int, metric: str):
        dp = self._dp
        domain = dp.vector_domain(dp.atom_domain(T=float, nan=False), size=n)
        return domain, (dp.l1_distance(T=float) if metric == "l1" else dp.l2_distance(T=float))

    def laplace(self, values, scale: float) -> np.ndarray:
        arr = _as_1d(values)
        if arr.size == 0:
            return arr
        meas = self._dp.m.make_laplace(*self._vector_space(arr.size, "l1"), scale=float(scale), k=self.grid_k)
        return np.asarray(meas(arr.tolist()), dtype=np.float64)

    def gaussian(self, values, sigma: float, grid_k: int | None = None) -> np.ndarray:
        arr = _as_1d(values)
        if arr.size == 0:
            return arr
        meas = self._dp.m.make_gaussian(*self._vector_space(arr.size, "l2"), scale=float(sigma),
                                        k=self.grid_k if grid_k is None else int(grid_k))
        return np.asarray(meas(arr.tolist()), dtype=np.float64)

    def normal(self, sigma: float, size: int) -> np.ndarray:
        """``size`` draws of discrete Gaussian(sigma) noise on the grid (centred at 0)."""
        return self.gaussian(np.zeros(int(size)), sigma)

    def rr_measurement(self, epsilon: float):
        """OpenDP's boolean randomized response whose own privacy map is <= ``epsilon``."""
        p = math.exp(epsilon) / (1.0 + math.exp(epsilon)) if epsilon < 700 else 1.0
        meas = self._dp.m.make_randomized_response_bool(p)
        while meas.map(1) > epsilon:  # float rounding of p can overshoot by an ulp: step down
            p = math.nextafter(p, 0.0)
            meas = self._dp.m.make_randomized_response_bool(p)
        return meas

    def bernoulli(self, p: float, size: int) -> np.ndarray:
        """True with probability ``p``: OpenDP's exact Bernoulli via randomized response on True."""
        if not 0.5 <= p <= 1.0:
            raise ValueError(f"bernoulli p = {p} must be in [0.5, 1]")
        meas = self._dp.m.make_randomized_response_bool(float(p))
        return np.fromiter((bool(meas(True)) for _ in range(int(size))), dtype=bool, count=int(size))

    def keep_sign(self, epsilon: float, size: int) -> np.ndarray:
        """``size`` draws of "keep" for epsilon-randomized response (True w.p. e^eps/(1+e^eps))."""
        meas = self.rr_measurement(epsilon)
        return np.fromiter((bool(meas(True)) for _ in range(int(size))), dtype=bool, count=int(size))

    def describe(self) -> dict:
        import importlib.metadata as md

        return {"sampler": self.name, "opendp_version": md.version("opendp"), "grid": f"2^{self.grid_k}",
                "reproducible": False, "for_release": True, "seed": None}


class SeededNoise:
    """Reproducible noise from a numpy ``Generator`` (PCG64). For experiments only, never for release.

    Args:
        seed: an int seed, or an existing ``numpy.random.Generator`` (then ``seed`` is recorded as None).
        grid_k: outputs are rounded to multiples of ``2**grid_k`` like OpenDP's.
    """

    name = "numpy-seeded"
    reproducible = True
    for_release = False

    def __init__(self, seed: int | np.random.Generator, grid_k: int = DEFAULT_GRID_K) -> None:
        if isinstance(seed, np.random.Generator):
            self.rng, self.seed = seed, None
        else:
            if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
                raise TypeError(f"seed must be an int or numpy Generator, got {type(seed).__name__}")
            if seed < 0:
                raise ValueError(f"seed = {seed} must be >= 0")
            self.rng, self.seed = np.random.default_rng(int(seed)), int(seed)
        self.grid_k = int(grid_k)

    def grid_slack(self) -> float:
        return math.ldexp(1.0, self.grid_k)

    def laplace(self, values, scale: float) -> np.ndarray:
        arr = _as_1d(values)
        noise = self.rng.laplace(0.0, float(scale), size=arr.shape)
        return _round_to_grid(arr, self.grid_k) + _round_to_grid(noise, self.grid_k)

    def gaussian(self, values, sigma: float, grid_k: int | None = None) -> np.ndarray:
        arr = _as_1d(values)
        g = self.grid_k if grid_k is None else int(grid_k)
        noise = self.rng.normal(0.0, float(sigma), size=arr.shape)
        return _round_to_grid(arr, g) + _round_to_grid(noise, g)

    def normal(self, sigma: float, size: int) -> np.ndarray:
        """Raw continuous N(0, sigma^2) draws (the research notebook's ``np.random.normal``)."""
        return self.rng.normal(0.0, float(sigma), size=int(size))

    def bernoulli(self, p: float, size: int) -> np.ndarray:
        if not 0.5 <= p <= 1.0:
            raise ValueError(f"bernoulli p = {p} must be in [0.5, 1]")
        return self.rng.random(int(size)) < p

    def keep_sign(self, epsilon: float, size: int) -> np.ndarray:
        p = 1.0 / (1.0 + math.exp(-epsilon))
        return self.bernoulli(p, size)

    def describe(self) -> dict:
        return {"sampler": self.name, "numpy_version": np.__version__, "grid": f"2^{self.grid_k}",
                "reproducible": True, "for_release": False, "seed": self.seed}


def make_noise_source(seed: int | np.random.Generator | NoiseSource | None = None) -> NoiseSource:
    """``None`` -> :class:`OpenDPNoise`; an int or Generator -> :class:`SeededNoise`; a source -> itself."""
    if seed is None:
        return OpenDPNoise()
    if isinstance(seed, (OpenDPNoise, SeededNoise)):
        return seed
    if isinstance(seed, (int, np.integer, np.random.Generator)) and not isinstance(seed, bool):
        return SeededNoise(seed)
    if isinstance(seed, NoiseSource):
        return seed
    raise TypeError(f"seed must be None, an int, a numpy Generator or a NoiseSource, got {type(seed).__name__}")

"""Empirical privacy audit: try to falsify a mechanism's claimed (epsilon, delta).

The approach of the trusted DP libraries' statistical testers (Google's DP stochastic tester,
diffprivlib's neighbour-probability tests, DP-Sniper/StatDP): run the mechanism many times on a pair
of neighbouring inputs ``a`` and ``a'``, and for a family of events ``S`` estimate ``p = P[M(a) in S]``
and ``q = P[M(a') in S]`` with Clopper-Pearson intervals. Any (epsilon, delta)-DP mechanism satisfies
``p <= e^epsilon q + delta`` for every S, so

    epsilon_lb = max_S ln((p_lo - delta) / q_hi)      (and with a, a' swapped)

is a lower bound on the true epsilon with the stated confidence. Events: thresholds ``{x > t}`` and
``{x <= t}`` at quantiles of the pooled outputs, and point events ``{x == v}`` at the most frequent
output values (so that point masses, e.g. the ``seed`` mechanism's atoms at ``a +- C``, are caught).
The events are chosen on one half of the draws and tested on the other half; the confidence is
simultaneous over all events and pairs (Bonferroni), so a correct mechanism fails with probability at
most ``1 - confidence``.

Neighbours: the worst case ``a = c - B`` vs ``a' = c + B`` and an interior pair ``c -+ B/2`` (for
``rr`` the pairs are mirror images, its neighbouring relation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from latentpriv.privacy.accounting import check_number
from latentpriv.privacy.mechanisms import calibrate, release_coordinates
from latentpriv.privacy.noise import NoiseSource, make_noise_source

__all__ = ["AuditResult", "PairResult", "audit", "clopper_pearson", "empirical_epsilon"]


def clopper_pearson(k: np.ndarray, n: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided exact (Clopper-Pearson) ``1 - alpha`` interval for binomial proportions ``k / n``."""
    from scipy.stats import beta

    k = np.asarray(k, dtype=np.float64)
    lo = np.where(k > 0, beta.ppf(alpha / 2, k, n - k + 1), 0.0)
    hi = np.where(k < n, beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
    return np.nan_to_num(lo, nan=0.0), np.nan_to_num(hi, nan=1.0)


def _select_events(x: np.ndarray, y: np.ndarray, n_thresholds: int, n_points: int):
    """Choose the events from a *selection* half of the samples: thresholds at pooled quantiles and
    the most frequent repeated values (candidate point masses)."""
    pooled = np.concatenate([x, y])
    ts = np.unique(np.quantile(pooled, np.linspace(0.0, 1.0, n_thresholds + 2)[1:-1]))
    vals, counts = np.unique(pooled, return_counts=True)
    repeated = counts > 1
    atoms = vals[repeated][np.argsort(counts[repeated])[::-1][:n_points]]
    return ts, atoms


def _count_events(x: np.ndarray, ts: np.ndarray, atoms: np.ndarray) -> np.ndarray:
    """Counts of {x > t}, {x <= t} for each threshold and {x == v} for each atom."""
    xs = np.sort(x)
    le = np.searchsorted(xs, ts, side="right")
    eq = np.searchsorted(xs, atoms, side="right") - np.searchsorted(xs, atoms, side="left")
    return np.concatenate([len(x) - le, le, eq])


def empirical_epsilon(x: np.ndarray, y: np.ndarray, *, delta: float = 0.0, alpha: float = 0.05,
                      n_thresholds: int = 100, n_points: int = 20, n_tests: int | None = None) -> dict[str, Any]:
    """Lower bound on epsilon from samples ``x ~ M(a)`` and ``y ~ M(a')`` (1-D arrays of equal length).

    The first half of each sample chooses the events, the second half estimates their probabilities,
    so the events do not depend on the data they are tested on. ``alpha`` is split over all events,
    both directions (and ``n_tests`` further, if given) by Bonferroni. Returns a dict: ``epsilon_lb``
    (>= 0; finite, since a Clopper-Pearson upper bound is never 0), the maximising ``event`` with its
    empirical ``p`` and ``q``, the number of ``events`` and of ``point_masses`` tested, and
    ``disjoint_atoms``: point events seen often for one sample and never for the other.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.size != y.size or x.size < 20:
        raise ValueError("need two samples of equal size >= 20")
    half = x.size // 2
    ts, atoms = _select_events(x[:half], y[:half], n_thresholds, n_points)
    xe, ye = x[half:], y[half:]
    n = xe.size
    kx, ky = _count_events(xe, ts, atoms), _count_events(ye, ts, atoms)
    labels = ([f"x > {t:.6g}" for t in ts] + [f"x <= {t:.6g}" for t in ts] + [f"x == {v:.6g}" for v in atoms])
    m = len(labels) * 2 * (n_tests or 1)
    plo, phi = clopper_pearson(kx, n, alpha / m)
    qlo, qhi = clopper_pearson(ky, n, alpha / m)

    def bound(lo, hi):
        num = lo - delta
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(num > 0, np.log(np.maximum(num, 1e-300) / np.maximum(hi, 1e-300)), -np.inf)

    both = np.maximum(bound(plo, qhi), bound(qlo, phi))
    i = int(np.argmax(both))
    n_atoms = atoms.size
    first_atom = len(labels) - n_atoms
    disjoint = sum(1 for j in range(first_atom, len(labels))
                   if (kx[j] == 0) != (ky[j] == 0) and max(kx[j], ky[j]) >= max(10, n // 1000))
    return {"epsilon_lb": float(max(both[i], 0.0)), "event": labels[i], "p": float(kx[i] / n),
            "q": float(ky[i] / n), "events": len(labels), "point_masses": int(n_atoms),
            "disjoint_atoms": int(disjoint)}


@dataclass(frozen=True)
class PairResult:
    a: float
    a_prime: float
    epsilon_lb: float
    event: str
    p: float
    q: float
    disjoint_atoms: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class AuditResult:
    """Outcome: ``passed`` iff ``epsilon_lb <= claimed epsilon`` (``seed``: the claim is its epsilon)."""

    mechanism: str
    epsilon: float
    delta: float
    clip_radius: float
    trials: int
    confidence: float
    epsilon_lb: float
    passed: bool
    pairs: tuple[PairResult, ...]
    sampler: dict
    flags: tuple[str, ...] = ()
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"mechanism": self.mechanism, "epsilon": self.epsilon, "delta": self.delta,
                "clip_radius": self.clip_radius, "trials": self.trials, "confidence": self.confidence,
                "epsilon_lb": self.epsilon_lb, "result": "PASS" if self.passed else "FAIL",
                "pairs": [p.as_dict() for p in self.pairs], "flags": list(self.flags), "sampler": self.sampler,
                **self.details}


def audit(mechanism: str, epsilon: float, delta: float = 0.0, *, clip_radius: float = 3.0, center: float = 0.0,
          trials: int = 100_000, confidence: float = 0.95, noise_clip: float = 1.0,
          seed: int | np.random.Generator | None = None, noise: NoiseSource | None = None,
          pairs: list[tuple[float, float]] | None = None) -> AuditResult:
    """Audit one mechanism configuration (one direction) against its claimed ``epsilon``.

    Args:
        mechanism, epsilon, delta, clip_radius, noise_clip: as for :func:`latentpriv.privatize`.
        center: the centre c of the clamp interval.
        trials: outputs drawn per neighbour (>= 100).
        confidence: simultaneous confidence of the lower bound (Bonferroni over events and pairs).
        seed: None -> OpenDP's samplers (what a release uses); an int/Generator -> seeded numpy (fast).
        noise: an explicit noise source (exclusive with ``seed``).
        pairs: neighbour pairs ``(a, a')``; default worst case ``(c - B, c + B)`` and interior
            ``(c - B/2, c + B/2)``.

    Returns:
        :class:`AuditResult`; ``passed`` is False when the empirical lower bound exceeds ``epsilon``.
    """
    if isinstance(trials, bool) or not isinstance(trials, (int, np.integer)) or trials < 100:
        raise ValueError(f"trials = {trials!r} must be an integer >= 100")
    confidence = check_number("confidence", confidence, low=0.0, high=1.0)
    center = check_number("center", center)
    source = noise if noise is not None else make_noise_source(seed)
    calib = calibrate(mechanism, epsilon=epsilon, delta=delta, clip_radius=clip_radius, k=1,
                      noise_clip=noise_clip, grid_slack=source.grid_slack())
    B = calib.clip_radius
    if pairs is None:
        pairs = [(center - B, center + B), (center - B / 2, center + B / 2)]
    alpha = 1.0 - confidence
    results = []
    c = np.array([center])
    for a, a2 in pairs:
        x = release_coordinates(np.full((int(trials), 1), float(a)), calib, c, source)[:, 0]
        y = release_coordinates(np.full((int(trials), 1), float(a2)), calib, c, source)[:, 0]
        r = empirical_epsilon(x, y, delta=calib.delta, alpha=alpha, n_tests=len(pairs))
        results.append(PairResult(float(a), float(a2), r["epsilon_lb"], r["event"], r["p"], r["q"],
                                  r["disjoint_atoms"]))
    lb = max(r.epsilon_lb for r in results)
    flags = []
    if any(r.disjoint_atoms for r in results):
        flags.append("point masses that occur for one neighbour only (delta close to 1)")
    if not calib.private:
        flags.append("mechanism claims no guarantee (research notebook step)")
    passed = lb <= calib.epsilon and calib.private
    details = {"ratio_lb_to_epsilon": lb / calib.epsilon if math.isfinite(lb) else None,
               "guarantee": calib.guarantee}
    return AuditResult(mechanism, calib.epsilon, calib.delta, B, int(trials), confidence, lb, passed,
                       tuple(results), source.describe(), tuple(flags), details)

"""The coordinate mechanisms as objects: one class per mechanism, each carrying its own privacy map.

A mechanism class (:class:`LaplaceMechanism`, :class:`GaussianMechanism`, :class:`RandomizedResponse`,
:class:`SeedMechanism`) knows, as diffprivlib's mechanisms and OpenDP's measurements do:

* which parameters are valid (:meth:`Mechanism.resolve_delta`: the one place that decides delta);
* its calibration from epsilon, delta, the clip radius B and the number of directions k
  (:meth:`Mechanism.calibrate`; an instance *is* a calibrated release, JSON via :meth:`Mechanism.as_dict`);
* its release of the coordinates through a :class:`~latentpriv.privacy.noise.NoiseSource`
  (:meth:`Mechanism.release`);
* its guarantee (:meth:`Mechanism.guarantee_record`), its spend (:meth:`Mechanism.spend_record` for the
  release record, :meth:`Mechanism.spend` for the ledger: both from the same numbers) and its neighbouring
  relation (:attr:`Mechanism.neighbouring_relation`, :attr:`Mechanism.relation` for protection profiles).

:data:`REGISTRY` maps names to classes; :data:`MECHANISMS` (the CLI's choices) and validation derive from it.
:func:`calibrate` and :func:`release_coordinates` keep the module-level API of latentpriv 0.1.

Per row and direction (PRIVACY.md section 2): ``a_i = <w, n_i>``; clamp ``abar_i = clip(a_i, c_i - B, c_i + B)``
(sensitivity ``2B`` per coordinate); noise (``laplace``: pure epsilon-DP, scale ``2B/epsilon_i``;
``gaussian``: one joint draw, L2 sensitivity ``2B sqrt(k)``, (epsilon, delta)-DP; ``rr``: randomized response on
the side of the hyperplane, the label only; ``seed``: the research notebook's step, **no guarantee**); then
the released value is clipped to ``[c_i - B, c_i + B]`` (post-processing). The calibration adds the noise
grid's rounding slack to the sensitivity, as OpenDP's own privacy maps do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from latentpriv.errors import ConfigError
from latentpriv.privacy.accounting import (
    GAUSSIAN_CONTINUOUS,
    GAUSSIAN_DISCRETE_1D,
    GAUSSIAN_DISCRETE_ZCDP,
    analytic_gaussian_sigma,
    check_number,
    classic_gaussian_sigma,
    discrete_gaussian_sigma,
    gaussian_rho,
    zcdp_gaussian_sigma,
)
from latentpriv.privacy.float_release import DEFAULT_DITHER_DELTA, DEFAULT_DITHER_EPSILON, Dither
from latentpriv.privacy.ledger import SEED_UNBOUNDED, Spend
from latentpriv.privacy.noise import NoiseSource

__all__ = [
    "MECHANISMS",
    "REGISTRY",
    "Calibration",
    "GaussianMechanism",
    "LaplaceMechanism",
    "Mechanism",
    "RandomizedResponse",
    "SeedMechanism",
    "SeedMechanismWarning",
    "calibrate",
    "get_mechanism",
    "release_coordinates",
    "validate_params",
]

SEED_REASON = (
    "the research notebook's step: the coordinate is never clamped (unbounded sensitivity, assumed 1), the "
    "noise is clipped to norm C after sampling, which puts point masses at w +- C n whose positions move with "
    "the input (neighbours have disjoint atoms: delta close to 1), and the classic Gaussian calibration is used "
    "for any epsilon. It gives no differential-privacy guarantee."
)

COORDINATE_RELATION = (
    "two records (float32 or float64) whose coordinates along the directions may differ arbitrarily (in every "
    "W+ layer) and whose residuals (w - a U) differ by at most tau in L2; tau covers any float32/float64 "
    "encodings of one face with different coordinates whose norms are at most max_norm")
LABEL_RELATION = (
    "two records on opposite sides of each hyperplane at equal clamped distance, whose residuals differ by "
    "at most tau in L2 (float32/float64)")


class SeedMechanismWarning(UserWarning):
    """Emitted whenever the notebook-compatible ``seed`` mechanism is used."""


@dataclass(frozen=True)
class Mechanism:
    """A calibrated coordinate mechanism: validated parameters, noise scale and privacy map of one release.

    Build one with :func:`calibrate` (or ``REGISTRY[name].calibrate(...)``). ``epsilons`` are the
    per-direction budgets (laplace/rr/seed); ``scales`` the Laplace scales (seed: its sigmas), ``sigma`` the
    Gaussian standard deviation, ``rho`` the zCDP parameter of a gaussian release; ``dither_epsilon`` /
    ``dither_delta`` the residual dither's budget, part of every release's spend (0 for seed).
    """

    name: ClassVar[str]
    #: the coordinates' guarantee: "pure-dp", "approx-dp", "label-dp" or "none"
    guarantee: ClassVar[str]
    #: what a protection profile protects: "coordinate" or "label" (only releases of one relation compose)
    relation: ClassVar[str] = "coordinate"
    #: the record's guarantee.neighbouring_relation
    neighbouring_relation: ClassVar[str] = COORDINATE_RELATION
    #: delta in (0, 1) required (True) or refused (False)
    approximate: ClassVar[bool] = False
    #: False: no guarantee at all (the record's ``for_release`` is false, the ledger marks the face unbounded)
    private: ClassVar[bool] = True
    #: the residual is dithered (and the dither charged); False: the notebook's step, output in the input's dtype
    dithered: ClassVar[bool] = True
    #: epsilon_split applies (per-direction draws composed by basic composition)
    per_direction: ClassVar[bool] = True
    sensitivity_kind: ClassVar[str] = "per-coordinate"

    epsilon: float
    delta: float
    clip_radius: float
    k: int
    epsilons: tuple[float, ...]
    sensitivity: float            # per coordinate (laplace/rr) or L2 of the k-vector (gaussian)
    grid_slack: float
    scales: tuple[float, ...] = ()
    sigma: float | None = None
    rho: float | None = None
    noise_clip: float | None = None
    method: str | None = None     # gaussian: which (epsilon, delta) bound set sigma (accounting.GAUSSIAN_*)
    dither_epsilon: float = 0.0
    dither_delta: float = 0.0

    # ---------------------------------------------------------------------------- parameters

    @property
    def mechanism(self) -> str:
        return self.name


    @classmethod
    def resolve_delta(cls, delta: float | None, *, option: str | None = None) -> float:
        """The delta this mechanism runs with, or :class:`ConfigError`: the one rule for delta.

        ``delta``: None when the user gave none. ``option``: the command-line option's name (``"--delta"``)
        when the value comes from the command line, where giving any delta to a pure mechanism is an error.
        """
        if delta is None:
            if cls.approximate:
                raise ConfigError(f"--mechanism {cls.name} needs --delta in (0, 1), e.g. --delta 1e-5")
            return 0.0
        if not cls.approximate and option is not None:
            raise ConfigError(f"{option} does not apply to --mechanism {cls.name} (pure epsilon-DP); drop it")
        delta = check_number("delta", delta, low=0.0, high=1.0, low_open=False)
        if not cls.approximate and delta != 0.0:
            raise ConfigError(f"delta = {delta:g} does not apply to the {cls.name} mechanism, which is pure "
                              "epsilon-DP; drop --delta (or use --mechanism gaussian)")
        if cls.approximate and not 0.0 < delta < 1.0:
            raise ConfigError(f"the {cls.name} mechanism needs delta in (0, 1), got {delta:g}; e.g. --delta 1e-5 "
                              "(well below 1/number-of-records)")
        return delta

    @classmethod
    def calibrate(cls, *, epsilon: float, delta: float, clip_radius: float, k: int, epsilons: tuple[float, ...],
                  grid_slack: float, noise_clip: float, dither_epsilon: float, dither_delta: float) -> Mechanism:
        """The calibrated mechanism for validated parameters (see :func:`calibrate`, which validates)."""
        raise NotImplementedError

    # ---------------------------------------------------------------------------- release

    def release(self, a: np.ndarray, centers: np.ndarray, noise: NoiseSource) -> np.ndarray:
        """Release true coordinates ``a`` float64 ``[m, k]`` about ``centers`` ``[k]``; returns ``[m, k]``.

        Clamp to ``[c - B, c + B]``, add this mechanism's noise (:meth:`_noisy`), clip the result to the
        same interval (post-processing: keeps the guarantee).
        """
        lo, hi = centers - self.clip_radius, centers + self.clip_radius
        return np.clip(self._noisy(a, np.clip(a, lo, hi), centers, noise), lo, hi)

    def _noisy(self, a: np.ndarray, abar: np.ndarray, centers: np.ndarray, noise: NoiseSource) -> np.ndarray:
        raise NotImplementedError

    # ---------------------------------------------------------------------------- privacy map

    @property
    def spend_epsilon(self) -> float | None:
        """Total epsilon one release charges (coordinates + residual dither); None: no guarantee."""
        return self.epsilon + self.dither_epsilon

    @property
    def spend_delta(self) -> float:
        """Total delta one release charges (coordinates + residual dither)."""
        return (self.delta if self.approximate else 0.0) + self.dither_delta

    def spend_record(self, dither: Dither | None) -> dict[str, Any]:
        """The record's ``spend``: the total charged per row. ``rho``: the coordinates' zCDP parameter
        (gaussian), which the ledger composes in zCDP; the dither is charged by basic composition through its
        (epsilon, delta) in the totals."""
        return {"epsilon": self.spend_epsilon, "delta": self.spend_delta, "rho": self.rho,
                "dither_rho": None if dither is None else dither.rho}

    def spend(self, *, unbounded: str | None = None) -> Spend:
        """What one release costs each face in the ledger (``unbounded``: why it has no bound, e.g. seeded)."""
        return Spend(self.name, self.spend_epsilon, self.spend_delta, self.rho, float(self.dither_epsilon),
                     float(self.dither_delta), unbounded)

    def coordinate_statement(self) -> str:
        """The coordinates' guarantee, for the record's statement."""
        raise NotImplementedError

    def guarantee_record(self, dither: Dither | None) -> dict[str, Any]:
        """The record's ``guarantee``: what one release proves, by basic composition with the dither."""
        eps_total, delta_total = self.spend_epsilon, self.spend_delta
        text = (f"({eps_total:g}, {delta_total:g})-differential privacy per row for the released file: the "
                f"coordinates {self.coordinate_statement()}, the residual dither ({dither.epsilon:g}, "
                f"{dither.delta:g})-DP, by basic composition")
        return {"type": "label-dp" if self.guarantee == "label-dp" else "approx-dp",
                "epsilon": eps_total, "delta": delta_total, "statement": text,
                "coordinates": {"type": self.guarantee, "epsilon": self.epsilon,
                                "delta": self.delta if self.approximate else 0.0},
                "neighbouring_relation": self.neighbouring_relation}

    def noise_record(self) -> dict[str, Any]:
        """The record's ``noise``: the distribution and its scale."""
        raise NotImplementedError

    def as_dict(self) -> dict[str, Any]:
        """The record's calibration fields (JSON-friendly)."""
        return {
            "mechanism": self.name,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "epsilon_per_direction": list(self.epsilons),
            "clip_radius": self.clip_radius,
            "sensitivity": self.sensitivity,
            "sensitivity_kind": self.sensitivity_kind,
            "grid_slack": self.grid_slack,
            "dither_epsilon": self.dither_epsilon,
            "dither_delta": self.dither_delta,
            "noise": self.noise_record(),
        }


#: latentpriv 0.1's name for a calibrated release.
Calibration = Mechanism


@dataclass(frozen=True)
class LaplaceMechanism(Mechanism):
    """Discrete Laplace noise per direction, scale ``(2B + grid slack) / epsilon_i``: pure epsilon-DP for
    neighbours whose coordinates differ arbitrarily (after the clamp, by at most 2B each)."""

    name: ClassVar[str] = "laplace"
    guarantee: ClassVar[str] = "pure-dp"

    @classmethod
    def calibrate(cls, *, epsilon, delta, clip_radius, k, epsilons, grid_slack, noise_clip, dither_epsilon,
                  dither_delta) -> Mechanism:
        sens = 2.0 * clip_radius
        return cls(epsilon, 0.0, clip_radius, k, epsilons, sens, grid_slack,
                   scales=tuple((sens + grid_slack) / e for e in epsilons),
                   dither_epsilon=dither_epsilon, dither_delta=dither_delta)

    def _noisy(self, a, abar, centers, noise):
        out = np.empty_like(a)
        for j in range(self.k):
            out[:, j] = noise.laplace(abar[:, j], self.scales[j])
        return out

    def coordinate_statement(self) -> str:
        return f"({self.epsilon:g})-DP (pure)"

    def noise_record(self) -> dict[str, Any]:
        return {"distribution": "discrete Laplace", "scale_per_direction": list(self.scales)}


@dataclass(frozen=True)
class GaussianMechanism(Mechanism):
    """One joint (discrete) Gaussian draw over the k directions, L2 sensitivity ``2B sqrt(k)``:
    (epsilon, delta)-DP from CKS20 Thm 7 (k = 1) or zCDP (k > 1) for the grid's noise, the analytic
    Gaussian (Balle & Wang 2018) for continuous noise."""

    name: ClassVar[str] = "gaussian"
    guarantee: ClassVar[str] = "approx-dp"
    approximate: ClassVar[bool] = True
    per_direction: ClassVar[bool] = False
    sensitivity_kind: ClassVar[str] = "l2"

    @classmethod
    def calibrate(cls, *, epsilon, delta, clip_radius, k, epsilons, grid_slack, noise_clip, dither_epsilon,
                  dither_delta) -> Mechanism:
        sens = 2.0 * clip_radius * math.sqrt(k)
        sens_grid = sens + grid_slack * math.sqrt(k)  # L2 distance of neighbours after rounding to the grid
        if grid_slack == 0.0:  # continuous noise (an idealisation: every sampler here draws on a grid)
            sigma, method = analytic_gaussian_sigma(epsilon, delta, sens), GAUSSIAN_CONTINUOUS
        elif k == 1:
            # integer-valued in grid units: neighbours differ by at most floor(2B/g) + 1 steps
            steps = math.floor(2.0 * clip_radius / grid_slack) + 1
            sigma, method = discrete_gaussian_sigma(epsilon, delta, steps) * grid_slack, GAUSSIAN_DISCRETE_1D
        else:
            sigma, method = zcdp_gaussian_sigma(epsilon, delta, sens_grid), GAUSSIAN_DISCRETE_ZCDP
        return cls(epsilon, delta, clip_radius, k, (epsilon,), sens, grid_slack, sigma=sigma,
                   rho=gaussian_rho(sigma, sens_grid), method=method, dither_epsilon=dither_epsilon,
                   dither_delta=dither_delta)

    def _noisy(self, a, abar, centers, noise):
        return noise.gaussian(abar.reshape(-1), float(self.sigma)).reshape(a.shape)

    def coordinate_statement(self) -> str:
        return f"({self.epsilon:g}, {self.delta:g})-DP"

    def noise_record(self) -> dict[str, Any]:
        return {"distribution": "discrete Gaussian" if self.grid_slack else "Gaussian",
                "calibration": self.method, "sigma": self.sigma, "rho_zcdp": self.rho}


@dataclass(frozen=True)
class RandomizedResponse(Mechanism):
    """Randomized response on the side of each hyperplane (keep with probability ``1 / (1 + e^-epsilon_i)``):
    epsilon-DP for the label only; the clamped distance ``|clip(a) - c|`` is released exactly."""

    name: ClassVar[str] = "rr"
    guarantee: ClassVar[str] = "label-dp"
    relation: ClassVar[str] = "label"
    neighbouring_relation: ClassVar[str] = LABEL_RELATION

    @classmethod
    def calibrate(cls, *, epsilon, delta, clip_radius, k, epsilons, grid_slack, noise_clip, dither_epsilon,
                  dither_delta) -> Mechanism:
        return cls(epsilon, 0.0, clip_radius, k, epsilons, 2.0 * clip_radius, grid_slack,
                   dither_epsilon=dither_epsilon, dither_delta=dither_delta)

    def _noisy(self, a, abar, centers, noise):
        side = np.where(a >= centers, 1.0, -1.0)
        out = np.empty_like(a)
        for j in range(self.k):
            keep = noise.keep_sign(self.epsilons[j], a.shape[0])
            out[:, j] = centers[j] + np.where(keep, side[:, j], -side[:, j]) * np.abs(abar[:, j] - centers[j])
        return out

    def coordinate_statement(self) -> str:
        return (f"({self.epsilon:g})-DP for the side of each hyperplane (the label) only; the distance "
                "|clip(a) - c| to the hyperplane is released exactly")

    def noise_record(self) -> dict[str, Any]:
        return {"distribution": "randomized response on sign(a - c)",
                "keep_probability_per_direction": [1.0 / (1.0 + math.exp(-e)) for e in self.epsilons]}


@dataclass(frozen=True)
class SeedMechanism(Mechanism):
    """The research notebook's step, kept for comparison: ``a + clip(eta, -C, C)`` with ``eta`` Gaussian of the
    classic calibration for sensitivity 1, no clamp, no dither. **No guarantee** (see :data:`SEED_REASON`)."""

    name: ClassVar[str] = "seed"
    guarantee: ClassVar[str] = "none"
    private: ClassVar[bool] = False
    approximate: ClassVar[bool] = True
    dithered: ClassVar[bool] = False

    @classmethod
    def calibrate(cls, *, epsilon, delta, clip_radius, k, epsilons, grid_slack, noise_clip, dither_epsilon,
                  dither_delta) -> Mechanism:
        # the notebook's calibration, per direction, sensitivity assumed 1
        return cls(epsilon, delta, clip_radius, k, epsilons, 1.0, grid_slack,
                   scales=tuple(classic_gaussian_sigma(e, delta, 1.0) for e in epsilons), noise_clip=noise_clip)

    def release(self, a, centers, noise):
        out = np.empty_like(a)
        for j in range(self.k):
            eta = noise.normal(self.scales[j], a.shape[0])
            out[:, j] = a[:, j] + np.clip(eta, -self.noise_clip, self.noise_clip)
        return out

    @property
    def spend_epsilon(self) -> float | None:
        return None

    def spend_record(self, dither: Dither | None) -> dict[str, Any]:
        return {"epsilon": None, "delta": self.spend_delta, "rho": None}

    def spend(self, *, unbounded: str | None = None) -> Spend:
        return Spend(self.name, None, min(float(self.delta), 1.0 - 1e-16), None, 0.0, 0.0,
                     unbounded or SEED_UNBOUNDED)

    def guarantee_record(self, dither: Dither | None) -> dict[str, Any]:
        return {"type": "none", "epsilon": None, "delta": None, "reason": SEED_REASON,
                "neighbouring_relation": self.neighbouring_relation}

    def noise_record(self) -> dict[str, Any]:
        return {"distribution": "Gaussian, classic calibration with assumed sensitivity 1, shift clipped to norm C",
                "sigma_per_direction": list(self.scales), "noise_clip": self.noise_clip}


#: name -> mechanism class, in the order the CLI lists them.
REGISTRY: dict[str, type[Mechanism]] = {m.name: m for m in (LaplaceMechanism, GaussianMechanism,
                                                            RandomizedResponse, SeedMechanism)}
MECHANISMS: tuple[str, ...] = tuple(REGISTRY)


def get_mechanism(mechanism: object) -> type[Mechanism]:
    """The class registered as ``mechanism`` (TypeError for a non-string, ConfigError for an unknown name)."""
    if not isinstance(mechanism, str):
        raise TypeError(f"mechanism must be a string, got {type(mechanism).__name__}")
    cls = REGISTRY.get(mechanism)
    if cls is None:
        raise ConfigError(f"unknown mechanism {mechanism!r}; choose one of {', '.join(MECHANISMS)}")
    return cls


def validate_params(mechanism: str, delta: float | None, *, max_epsilon: float | None = None,
                    option: str = "--delta") -> float:
    """Check the command-line privacy settings before any file is read; return the delta to pass on.

    ``delta`` None: not given (0 for the pure mechanisms; the approximate ones need one). ``max_epsilon``: the
    ledger budget (finite, > 0) if given. The rules are :meth:`Mechanism.resolve_delta`'s, which
    :func:`calibrate` applies too.
    """
    cls = get_mechanism(mechanism)
    if max_epsilon is not None:
        check_number("--max-epsilon", max_epsilon, low=0.0)
    return cls.resolve_delta(delta, option=option)


def calibrate(mechanism: str, *, epsilon: float, delta: float = 0.0, clip_radius: float = 3.0, k: int = 1,
              epsilon_split: Sequence[float] | None = None, noise_clip: float = 1.0,
              grid_slack: float = 0.0, dither_epsilon: float | None = None,
              dither_delta: float | None = None) -> Mechanism:
    """Validate the privacy parameters and return the calibrated mechanism (its noise scale and privacy map).

    Args:
        mechanism: one of :data:`MECHANISMS`.
        epsilon: total privacy budget > 0 (finite) over the ``k`` directions.
        delta: 0 for ``laplace``/``rr`` (pure DP); in (0, 1) for ``gaussian`` and ``seed``.
        clip_radius: B > 0; coordinates are clamped to ``[c - B, c + B]`` (not used by ``seed``).
        k: number of directions.
        epsilon_split: optional positive weights (length k) splitting ``epsilon`` across directions
            (laplace/rr/seed; basic composition); default equal shares.
        noise_clip: C > 0, the ``seed`` mechanism's norm bound on the shift (notebook default 1).
        grid_slack: added to each coordinate's sensitivity for the noise grid's rounding.
        dither_epsilon, dither_delta: the residual dither's budget (default
            :data:`~latentpriv.privacy.float_release.DEFAULT_DITHER_EPSILON`, ``DEFAULT_DITHER_DELTA``; the
            ``seed`` mechanism has no dither), part of every release's spend.

    Raises:
        TypeError: a parameter is not a number / string.
        ConfigError: a parameter is out of range or does not apply to the mechanism.
    """
    cls = get_mechanism(mechanism)
    if isinstance(epsilon, (int, float)) and not isinstance(epsilon, bool) and math.isinf(epsilon) and epsilon > 0:
        raise ConfigError("epsilon = inf releases the clamped coordinate without noise (no privacy); "
                          "give a finite epsilon > 0")
    epsilon = check_number("epsilon", epsilon, low=0.0)
    delta = check_number("delta", delta, low=0.0, high=1.0, low_open=False)
    clip_radius = check_number("clip_radius", clip_radius, low=0.0)
    noise_clip = check_number("noise_clip", noise_clip, low=0.0)
    grid_slack = check_number("grid_slack", grid_slack, low=0.0, low_open=False)
    d_eps, d_delta = 0.0, 0.0
    if cls.dithered:
        d_eps = check_number("dither_epsilon", DEFAULT_DITHER_EPSILON if dither_epsilon is None else dither_epsilon,
                             low=0.0)
        d_delta = check_number("dither_delta", DEFAULT_DITHER_DELTA if dither_delta is None else dither_delta,
                               low=0.0, high=1.0)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"need at least one direction, got k = {k!r}")
    k = int(k)
    delta = cls.resolve_delta(delta)
    return cls.calibrate(epsilon=epsilon, delta=delta, clip_radius=clip_radius, k=k,
                         epsilons=_split_epsilon(cls, epsilon, k, epsilon_split), grid_slack=grid_slack,
                         noise_clip=noise_clip, dither_epsilon=d_eps, dither_delta=d_delta)


def _split_epsilon(cls: type[Mechanism], epsilon: float, k: int,
                   epsilon_split: Sequence[float] | None) -> tuple[float, ...]:
    """Per-direction budgets: ``epsilon`` split by the weights (equal shares by default)."""
    if epsilon_split is None:
        return tuple(epsilon / k for _ in range(k))
    if not cls.per_direction:
        raise ConfigError(f"epsilon_split does not apply to the {cls.name} mechanism (one joint draw over all "
                          "directions); drop it")
    weights = [check_number(f"epsilon_split[{i}]", v, low=0.0) for i, v in enumerate(epsilon_split)]
    if len(weights) != k:
        raise ConfigError(f"epsilon_split has {len(weights)} weights for {k} direction(s)")
    total = math.fsum(weights)
    return tuple(epsilon * wt / total for wt in weights)


def release_coordinates(a: np.ndarray, calib: Mechanism, centers: np.ndarray, noise: NoiseSource) -> np.ndarray:
    """Apply the calibrated mechanism to true coordinates ``a`` ``[m, k]`` (float64); return the released
    ``[m, k]``. ``centers`` is ``[k]``. This is the whole mechanism; ``privatize`` and the audit both use it."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != calib.k:
        raise ValueError(f"coordinates must have shape (m, {calib.k}), got {a.shape}")
    c = np.broadcast_to(np.asarray(centers, dtype=np.float64), (calib.k,))
    return calib.release(a, c, noise)

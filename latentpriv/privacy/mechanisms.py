"""Differentially private attribute shifts in latent space (``latentpriv.privatize``).

What is protected (see docs/PRIVACY.md): the attribute coordinates ``a_i = <w, n_i>`` of one latent
along unit, mutually orthogonal directions ``n_1..n_k`` (e.g. InterFaceGAN boundaries). Two latents are
*neighbours* when they differ only along those directions (same residual ``r = w - sum_i a_i n_i``).
Each row of a batch is one record (local DP, one face = one record). Everything orthogonal to the
directions is released unchanged: this is attribute-level privacy, not identity protection, and an
attribute entangled with other directions can still leak through the residual.

Pipeline (PRIVACY.md section 2), per row and direction:

1. ``a_i = <w, n_i>`` (W+: mean over the edited layers);
2. clamp ``abar_i = clip(a_i, c_i - B, c_i + B)`` - this bounds the sensitivity to ``2B`` per coordinate;
3. noise: ``laplace`` (pure epsilon-DP, scale ``2B/epsilon_i``), ``gaussian`` (one joint draw, sigma
   for L2 sensitivity ``2B sqrt(k)`` from bounds proven for the discrete Gaussian: CKS20 Thm 7 for one
   direction, zCDP for several; (epsilon, delta)-DP), ``rr`` (randomized response on
   the side of the hyperplane; protects the label only), or ``seed`` (the research notebook's step, kept
   for comparison; **no guarantee**);
4. post-process: clip the released value to ``[c_i - B, c_i + B]``;
5. ``w' = w + sum_i (atilde_i - a_i) n_i`` so ``<w', n_i> = atilde_i`` and the residual is unchanged.

Noise comes from :mod:`latentpriv.privacy.noise`: OpenDP's exact samplers unless a seed is given.
The calibration adds the noise grid's rounding slack (one grid step, ~1e-6) to the sensitivity, as
OpenDP's own privacy maps do.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from latentpriv.errors import ConfigError, InputError
from latentpriv.privacy.accounting import (
    analytic_gaussian_sigma,
    check_number,
    classic_gaussian_sigma,
    discrete_gaussian_sigma,
    gaussian_rho,
    zcdp_gaussian_sigma,
)
from latentpriv.privacy.noise import NoiseSource, make_noise_source

__all__ = [
    "MECHANISMS",
    "Calibration",
    "PrivatizeResult",
    "SeedMechanismWarning",
    "calibrate",
    "DEFAULT_DITHER_DELTA",
    "DEFAULT_DITHER_EPSILON",
    "DEFAULT_MAX_NORM",
    "Dither",
    "calibrate_dither",
    "clamp_only",
    "coordinates",
    "orthonormalize",
    "prepare_directions",
    "privatize",
    "release_coordinates",
    "split_basis",
]

MECHANISMS = ("laplace", "gaussian", "rr", "seed")
RECORD_FORMAT = "latentpriv.privatize/1"

SCOPE_TEXT = (
    "Attribute-level local DP in latent space: protects the coordinates of each latent along the chosen "
    "directions; the residual (the rest of the latent) is released with only an invisible float-level dither, "
    "so it does not hide identity, and whatever the residual predicts about the attribute stays visible (see "
    "residual_r2; the decorrelated split removes the linear part)."
)
SEED_REASON = (
    "the research notebook's step: the coordinate is never clamped (unbounded sensitivity, assumed 1), the "
    "noise is clipped to norm C after sampling, which puts point masses at w +- C n whose positions move with "
    "the input (neighbours have disjoint atoms: delta close to 1), and the classic Gaussian calibration is used "
    "for any epsilon. It gives no differential-privacy guarantee."
)


# How a gaussian release's sigma was set (the record's noise.calibration), see accounting.py:
GAUSSIAN_DISCRETE_1D = ("CKS20 Thm 7 for the discrete Gaussian (one direction), tail sums bounded by integrals: "
                        "a proven (epsilon, delta)")
GAUSSIAN_DISCRETE_ZCDP = ("zCDP of the multivariate discrete Gaussian, converted by CKS20 Cor 13 (as OpenDP's "
                          "make_zCDP_to_approxDP)")
GAUSSIAN_CONTINUOUS = "analytic Gaussian mechanism, Balle & Wang 2018 (continuous noise)"


class SeedMechanismWarning(UserWarning):
    """Emitted whenever the notebook-compatible ``seed`` mechanism is used."""


@dataclass(frozen=True)
class Calibration:
    """Validated parameters and the noise scale of one release; JSON-friendly via :meth:`as_dict`.

    ``epsilons`` are the per-direction budgets (laplace/rr/seed); ``scales`` the Laplace scales,
    ``sigma`` the Gaussian standard deviation (gaussian, and the seed mechanism's), ``rho`` the zCDP
    parameter of a gaussian release.
    """

    mechanism: str
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
    guarantee: str = "pure-dp"
    method: str | None = None     # gaussian: which (epsilon, delta) bound set sigma (GAUSSIAN_* above)
    dither_epsilon: float = 0.0   # the residual dither's budget, added to the spend (0 for seed)
    dither_delta: float = 0.0

    @property
    def spend_epsilon(self) -> float | None:
        """Total epsilon one release charges (coordinates + residual dither); None: no guarantee."""
        return None if self.guarantee == "none" else self.epsilon + self.dither_epsilon

    @property
    def spend_delta(self) -> float:
        """Total delta one release charges (coordinates + residual dither)."""
        return (self.delta if self.guarantee in ("approx-dp", "none") else 0.0) + self.dither_delta

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "mechanism": self.mechanism,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "epsilon_per_direction": list(self.epsilons),
            "clip_radius": self.clip_radius,
            "sensitivity": self.sensitivity,
            "sensitivity_kind": "l2" if self.mechanism == "gaussian" else "per-coordinate",
            "grid_slack": self.grid_slack,
            "dither_epsilon": self.dither_epsilon,
            "dither_delta": self.dither_delta,
        }
        if self.mechanism == "laplace":
            d["noise"] = {"distribution": "discrete Laplace", "scale_per_direction": list(self.scales)}
        elif self.mechanism == "gaussian":
            d["noise"] = {"distribution": "discrete Gaussian" if self.grid_slack else "Gaussian",
                          "calibration": self.method, "sigma": self.sigma, "rho_zcdp": self.rho}
        elif self.mechanism == "rr":
            d["noise"] = {"distribution": "randomized response on sign(a - c)",
                          "keep_probability_per_direction": [1.0 / (1.0 + math.exp(-e)) for e in self.epsilons]}
        else:
            d["noise"] = {"distribution": "Gaussian, classic calibration with assumed sensitivity 1, "
                                          "shift clipped to norm C", "sigma_per_direction": list(self.scales),
                          "noise_clip": self.noise_clip}
        return d


def _check_mechanism(mechanism: object) -> str:
    if not isinstance(mechanism, str):
        raise TypeError(f"mechanism must be a string, got {type(mechanism).__name__}")
    if mechanism not in MECHANISMS:
        raise ConfigError(f"unknown mechanism {mechanism!r}; choose one of {', '.join(MECHANISMS)}")
    return mechanism


def calibrate(mechanism: str, *, epsilon: float, delta: float = 0.0, clip_radius: float = 3.0, k: int = 1,
              epsilon_split: Sequence[float] | None = None, noise_clip: float = 1.0,
              grid_slack: float = 0.0, dither_epsilon: float | None = None,
              dither_delta: float | None = None) -> Calibration:
    """Validate the privacy parameters and compute the noise scale.

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
        dither_epsilon, dither_delta: the residual dither's budget (default :data:`DEFAULT_DITHER_EPSILON`,
            :data:`DEFAULT_DITHER_DELTA`; the ``seed`` mechanism has no dither), part of every release's spend.

    Raises:
        TypeError: a parameter is not a number / string.
        ConfigError: a parameter is out of range or does not apply to the mechanism.
    """
    mechanism = _check_mechanism(mechanism)
    if isinstance(epsilon, (int, float)) and not isinstance(epsilon, bool) and math.isinf(epsilon) and epsilon > 0:
        raise ConfigError("epsilon = inf releases the clamped coordinate without noise (no privacy); "
                          "give a finite epsilon > 0")
    epsilon = check_number("epsilon", epsilon, low=0.0)
    delta = check_number("delta", delta, low=0.0, high=1.0, low_open=False)
    clip_radius = check_number("clip_radius", clip_radius, low=0.0)
    noise_clip = check_number("noise_clip", noise_clip, low=0.0)
    grid_slack = check_number("grid_slack", grid_slack, low=0.0, low_open=False)
    if mechanism == "seed":
        d_eps, d_delta = 0.0, 0.0
    else:
        d_eps = check_number("dither_epsilon", DEFAULT_DITHER_EPSILON if dither_epsilon is None else dither_epsilon,
                             low=0.0)
        d_delta = check_number("dither_delta", DEFAULT_DITHER_DELTA if dither_delta is None else dither_delta,
                               low=0.0, high=1.0)
    dither = {"dither_epsilon": d_eps, "dither_delta": d_delta}
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"need at least one direction, got k = {k!r}")
    k = int(k)
    if mechanism in ("laplace", "rr") and delta != 0.0:
        raise ConfigError(f"delta = {delta:g} does not apply to the {mechanism} mechanism, which is pure "
                          "epsilon-DP; drop --delta (or use --mechanism gaussian)")
    if mechanism in ("gaussian", "seed") and not 0.0 < delta < 1.0:
        raise ConfigError(f"the {mechanism} mechanism needs delta in (0, 1), got {delta:g}; e.g. --delta 1e-5 "
                          "(well below 1/number-of-records)")

    if epsilon_split is not None:
        if mechanism == "gaussian":
            raise ConfigError("epsilon_split does not apply to the gaussian mechanism (one joint draw over all "
                              "directions); drop it")
        weights = [check_number(f"epsilon_split[{i}]", v, low=0.0) for i, v in enumerate(epsilon_split)]
        if len(weights) != k:
            raise ConfigError(f"epsilon_split has {len(weights)} weights for {k} direction(s)")
        total = math.fsum(weights)
        epsilons = tuple(epsilon * wt / total for wt in weights)
    else:
        epsilons = tuple(epsilon / k for _ in range(k))

    if mechanism == "laplace":
        sens = 2.0 * clip_radius
        scales = tuple((sens + grid_slack) / e for e in epsilons)
        return Calibration(mechanism, epsilon, 0.0, clip_radius, k, epsilons, sens, grid_slack, scales=scales,
                           guarantee="pure-dp", **dither)
    if mechanism == "rr":
        return Calibration(mechanism, epsilon, 0.0, clip_radius, k, epsilons, 2.0 * clip_radius, grid_slack,
                           guarantee="label-dp", **dither)
    if mechanism == "gaussian":
        sens = 2.0 * clip_radius * math.sqrt(k)
        sens_grid = sens + grid_slack * math.sqrt(k)  # L2 distance of neighbours after rounding to the grid
        if grid_slack == 0.0:  # continuous noise (an idealisation: every sampler here draws on a grid)
            sigma = analytic_gaussian_sigma(epsilon, delta, sens)
            method = GAUSSIAN_CONTINUOUS
        elif k == 1:
            # integer-valued in grid units: neighbours differ by at most floor(2B/g) + 1 steps
            steps = math.floor(2.0 * clip_radius / grid_slack) + 1
            sigma = discrete_gaussian_sigma(epsilon, delta, steps) * grid_slack
            method = GAUSSIAN_DISCRETE_1D
        else:
            sigma = zcdp_gaussian_sigma(epsilon, delta, sens_grid)
            method = GAUSSIAN_DISCRETE_ZCDP
        return Calibration(mechanism, epsilon, delta, clip_radius, k, (epsilon,), sens, grid_slack, sigma=sigma,
                           rho=gaussian_rho(sigma, sens_grid), guarantee="approx-dp", method=method, **dither)
    # seed: the notebook's calibration, per direction, sensitivity assumed 1
    sigmas = tuple(classic_gaussian_sigma(e, delta, 1.0) for e in epsilons)
    return Calibration(mechanism, epsilon, delta, clip_radius, k, epsilons, 1.0, grid_slack, scales=sigmas,
                       noise_clip=noise_clip, guarantee="none")


def release_coordinates(a: np.ndarray, calib: Calibration, centers: np.ndarray, noise: NoiseSource) -> np.ndarray:
    """Apply the mechanism to true coordinates ``a`` ``[m, k]`` (float64); return the released ``[m, k]``.

    ``centers`` is ``[k]``. This is the whole mechanism; :func:`privatize` and the audit both use it.
    """
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != calib.k:
        raise ValueError(f"coordinates must have shape (m, {calib.k}), got {a.shape}")
    c = np.broadcast_to(np.asarray(centers, dtype=np.float64), (calib.k,))
    m, k = a.shape
    B = calib.clip_radius
    lo, hi = c - B, c + B
    if calib.mechanism == "seed":
        out = np.empty_like(a)
        for j in range(k):
            eta = noise.normal(calib.scales[j], m)
            out[:, j] = a[:, j] + np.clip(eta, -calib.noise_clip, calib.noise_clip)
        return out
    abar = np.clip(a, lo, hi)
    if calib.mechanism == "laplace":
        out = np.empty_like(a)
        for j in range(k):
            out[:, j] = noise.laplace(abar[:, j], calib.scales[j])
    elif calib.mechanism == "gaussian":
        out = noise.gaussian(abar.reshape(-1), float(calib.sigma)).reshape(m, k)
    else:  # rr
        side = np.where(a >= c, 1.0, -1.0)
        out = np.empty_like(a)
        for j in range(k):
            keep = noise.keep_sign(calib.epsilons[j], m)
            out[:, j] = c[j] + np.where(keep, side[:, j], -side[:, j]) * np.abs(abar[:, j] - c[j])
    return np.clip(out, lo, hi)  # post-processing: keeps the guarantee


# ------------------------------------------------------------------------------------- directions


def orthonormalize(directions: Any, *, dim: int | None = None, tol: float = 1e-3) -> np.ndarray:
    """Return the directions as exactly orthonormal float64 rows ``[k, D]``, always re-orthonormalised.

    ``directions`` is a 2-D array ``[k, D]`` or a list of boundary arrays (each ``(1, D)`` or ``(D,)``).
    Each row must be finite with norm within ``tol`` of 1 (a boundary file that is not a unit normal is an
    error). The rows are then Gram-Schmidt-orthonormalised in the order given, in float64, twice ("twice is
    enough": the second pass removes what rounding left of the first), whatever their input precision.
    Rows are never *accepted* as orthonormal by tolerance: rows orthogonal only to ~1e-5 would shift the
    latent along non-orthogonal axes and leak the coordinate into the residual.
    """
    from latentpriv.edit.boundaries import gram_schmidt, verify_direction

    if isinstance(directions, (list, tuple)):
        if not directions:
            raise InputError("directions: empty list; give at least one boundary")
        rows = np.stack([verify_direction(d, name=f"directions[{i}]", dim=dim, tol=tol)
                         for i, d in enumerate(directions)])
    else:
        arr = _to_numpy(directions, "directions")
        if arr.ndim == 1:
            arr = arr[None]
        if arr.ndim != 2:
            raise InputError(f"directions: expected an array (k, D) or a list of boundaries, got shape {arr.shape}")
        rows = np.stack([verify_direction(r, name=f"directions[{i}]", dim=dim, tol=tol) for i, r in enumerate(arr)])
    return gram_schmidt(gram_schmidt(rows))


#: Kept for callers of 0.1: the same as :func:`orthonormalize` (which no longer accepts rows by tolerance).
prepare_directions = orthonormalize


def split_basis(directions: np.ndarray, covariance: Any = None) -> np.ndarray:
    """The basis ``U [k, D]`` of the split ``w = a U + r`` with ``a = w N^T`` and ``r N^T = 0``.

    Args:
        directions: ``N``, orthonormal float64 rows ``[k, D]`` (see :func:`orthonormalize`).
        covariance: None for InterFaceGAN's orthogonal split (``U = N``: the residual is the part of ``w``
            orthogonal to the directions); or the latent covariance ``Sigma [D, D]`` (an array, or an object
            with a ``cov`` attribute such as :class:`latentpriv.edit.covariance.LatentCovariance`) for the
            oblique split ``U = (N Sigma N^T)^-1 N Sigma`` (k = 1: ``u = Sigma n / (n^T Sigma n)``), under
            which ``Cov(r, a) = (I - U^T N) Sigma N^T = 0``: the residual carries no linear information on
            the coordinates.

    Returns:
        float64 ``[k, D]`` with ``U N^T = I_k``.
    """
    n = np.asarray(directions, dtype=np.float64)
    if covariance is None:
        return n.copy()
    sigma = np.asarray(getattr(covariance, "cov", covariance), dtype=np.float64)
    k, dim = n.shape
    if sigma.shape != (dim, dim):
        raise InputError(f"covariance has shape {sigma.shape}, expected ({dim}, {dim}) for {dim}-d directions")
    if not np.isfinite(sigma).all():
        raise InputError("covariance contains NaN/inf values; re-estimate it (latentpriv boundary covariance)")
    ns = n @ sigma                      # [k, D]
    gram = ns @ n.T                     # [k, k], N Sigma N^T
    if np.linalg.eigvalsh((gram + gram.T) / 2).min() <= 1e-12 * max(1.0, float(np.trace(gram))):
        raise InputError("covariance is singular along the directions (n^T Sigma n = 0); the oblique split "
                         "is undefined; use the orthogonal split (--no-decorrelate)")
    return np.linalg.solve(gram, ns)


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(f"{name} must be a numpy array (or torch tensor), got {type(x).__name__}")


# ------------------------------------------------------------------------------------- latents

#: Unit roundoff of float32, the coarsest input precision whose rounding the float-level relation covers.
FLOAT32_UNIT_ROUNDOFF = 2.0 ** -24
#: Default M: float encodings of one face are neighbours (within tau) when their record norm (L2 over all W+
#: layers) is at most M. StyleGAN W rows have norm ~20-40, W+ records ~100-170, dcgan64 Z ~10. Larger
#: records are released too (refusing them would reveal a large coordinate), but their float encodings may
#: lie farther apart than tau. The dither's sigma is proportional to M (0.016 per number at 256).
DEFAULT_MAX_NORM = 256.0
#: Records above this norm are refused: the bound on the float64 evaluation error of the residual (part of
#: the dither's sensitivity) assumes it. No latent of a generator comes near it.
HARD_MAX_NORM = 2.0 ** 16
#: The residual dither's budget, added to every release by basic composition.
DEFAULT_DITHER_EPSILON = 0.01
DEFAULT_DITHER_DELTA = 1e-10
#: The dither's grid 2^-30: fine enough that rounding a D*L-vector to it adds sqrt(D L) 2^-30 << tau.
DITHER_GRID_K = -30


@dataclass
class _Frame:
    x: np.ndarray            # float64 [N, L, D]
    squeeze: str             # "none" | "row" | "wp"
    dtype: np.dtype


def _frame(w: np.ndarray, dim: int, layers: Sequence[int] | None, *, release: bool = False) -> _Frame:
    if not (np.issubdtype(w.dtype, np.floating)):
        raise TypeError(f"w must be a floating-point array, got dtype {w.dtype}")
    if release and np.finfo(w.dtype).eps > np.finfo(np.float32).eps:
        raise InputError(f"w is {w.dtype}: its rounding (relative {np.finfo(w.dtype).eps / 2:.2g}) carries how the "
                         "coordinate was encoded and is not covered by the float-level guarantee (float32/float64 "
                         "inputs only); save the latent as float32 from its source (converting this file keeps the "
                         f"{w.dtype} rounding)")
    if not np.isfinite(w).all():
        raise InputError(f"w contains {int((~np.isfinite(w)).sum())} NaN/inf value(s)")
    if w.ndim == 1:
        x, squeeze = w[None, None, :], "row"
    elif w.ndim == 2:
        x, squeeze = w[:, None, :], "none"
    elif w.ndim == 3:
        x, squeeze = w, "wp"
    else:
        raise InputError(f"w has shape {w.shape}; expected (D,), (N, D) or W+ (N, L, D)")
    if x.shape[-1] != dim:
        raise InputError(f"latent dimension {x.shape[-1]} (shape {tuple(w.shape)}) does not match the directions' "
                         f"dimension {dim}: a latent of another model or space, or a boundary for another one")
    if x.shape[0] == 0:
        raise InputError("w holds no rows")
    L = x.shape[1]
    if layers is not None:
        if w.ndim != 3:
            raise ConfigError("layers applies only to W+ latents (N, L, D)")
        idx = sorted(set(int(i) for i in layers))
        if not idx or idx[0] < 0 or idx[-1] >= L:
            raise ConfigError(f"layers {list(layers)} must be non-empty indices in [0, {L})")
        if idx != list(range(L)):
            # a layer left out would publish its coordinate along the direction exactly
            raise ConfigError(f"layers {idx}: a W+ release protects every layer's coordinate (the layers left out "
                              f"would publish theirs exactly); drop --layers (all {L} layers are released)")
    return _Frame(x.astype(np.float64), squeeze, w.dtype)


def _split(frame: _Frame, dirs: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(a [N, k], r [N, L, D])``: the coordinates averaged over W+ layers (each layer is then set to the
    released value) and the residual ``r = w - (w N^T) U`` of every layer (``r N^T = 0``)."""
    proj = frame.x @ dirs.T
    return proj.mean(axis=1), frame.x - proj @ u


def _unframe(frame: _Frame, out: np.ndarray) -> np.ndarray:
    if frame.squeeze == "row":
        out = out[0, 0]
    elif frame.squeeze == "none":
        out = out[:, 0]
    return out


def _centers(center: Any, k: int) -> np.ndarray:
    if isinstance(center, (list, tuple, np.ndarray)):
        arr = np.asarray(center, dtype=np.float64).reshape(-1)
        if arr.size == 1:
            arr = np.full(k, arr[0])
        if arr.size != k:
            raise ConfigError(f"center has {arr.size} values for {k} direction(s)")
        if not np.isfinite(arr).all():
            raise ConfigError(f"center {arr.tolist()} must be finite")
        return arr
    return np.full(k, check_number("center", center))


def coordinates(w: Any, directions: Any, *, layers: Sequence[int] | None = None) -> np.ndarray:
    """Attribute coordinates ``<w, n_i>`` ``[N, k]`` (W+: mean over all layers, or over ``layers``)."""
    dirs = orthonormalize(directions)
    arr = _to_numpy(w, "w")
    frame = _frame(arr, dirs.shape[1], None)
    x = frame.x if layers is None else frame.x[:, sorted(set(int(i) for i in layers)), :]
    return (x @ dirs.T).mean(axis=1)


def clamp_only(w: Any, directions: Any, *, clip_radius: float = 3.0, center: Any = 0.0,
               layers: Sequence[int] | None = None, covariance: Any = None) -> np.ndarray:
    """The epsilon = inf end of a sweep: every layer's coordinate set to the clamped mean, no noise.

    Not private (deterministic, residual not dithered); used for the "no noise" row of ``latentpriv sweep``.
    Output float32.
    """
    dirs = orthonormalize(directions)
    arr = _to_numpy(w, "w")
    frame = _frame(arr, dirs.shape[1], layers)
    B = check_number("clip_radius", clip_radius, low=0.0)
    c = _centers(center, len(dirs))
    u = split_basis(dirs, covariance)
    a, resid = _split(frame, dirs, u)
    out = resid + (np.clip(a, c - B, c + B) @ u)[:, None, :]
    return _from_numpy(_unframe(frame, out).astype(np.float32), w)


def _from_numpy(out: np.ndarray, like: Any) -> Any:
    if isinstance(like, np.ndarray):
        return out
    import torch

    return torch.from_numpy(out).to(like.device)


# ------------------------------------------------------------------------------------- the residual dither


@dataclass(frozen=True)
class Dither:
    """How the residual is released: ``r + z`` with ``z`` discrete Gaussian (grid ``2^grid_k``), then projected
    back onto the directions' orthogonal complement.

    ``tau``: the float-level neighbouring tolerance (L2 over the record) that covers float32 rounding of
    records with norm <= ``max_norm``; ``sensitivity``: ``tau`` plus the float64 computation error (records up
    to :data:`HARD_MAX_NORM`) and the grid rounding; ``sigma``: the discrete Gaussian's scale, set so the dither is
    ``(epsilon, delta)``-DP for that sensitivity (zCDP ``rho``, converted by CKS20 Cor 13).
    """

    epsilon: float
    delta: float
    max_norm: float
    op_norm: float
    dims: int
    tau: float
    sensitivity: float
    sigma: float
    rho: float
    grid_k: int = DITHER_GRID_K

    def as_dict(self) -> dict[str, Any]:
        return {"distribution": "discrete Gaussian on the residual, projected orthogonal to the directions",
                "epsilon": self.epsilon, "delta": self.delta, "rho_zcdp": self.rho, "sigma": self.sigma,
                "grid": f"2^{self.grid_k}", "tau": self.tau, "sensitivity_l2": self.sensitivity,
                "max_norm": self.max_norm, "residual_operator_norm": self.op_norm, "dims": self.dims,
                "calibration": GAUSSIAN_DISCRETE_ZCDP}


def calibrate_dither(*, dims: int, k: int = 1, op_norm: float = 1.0, max_norm: float = DEFAULT_MAX_NORM,
                     epsilon: float = DEFAULT_DITHER_EPSILON, delta: float = DEFAULT_DITHER_DELTA) -> Dither:
    """Calibrate the residual dither for a record of ``dims`` numbers (``L * D``).

    The float-level neighbouring relation (docs/PRIVACY.md, "The float-level relation"): two records of
    norm <= ``max_norm`` are neighbours when their exact residuals ``R(x) = x - (x N^T) U`` differ by at
    most ``tau`` in L2. Any two float32 (or float64) encodings of one face with different coordinates are
    such neighbours for ``tau = 2 u M ||U||_2 / (1 - u)`` (u = 2^-24): rounding moves a record by at most
    ``u`` times its norm, and ``R`` has operator norm ``||U||_2`` (1 for the orthogonal split).

    Args:
        dims: numbers per record (``L * D``).
        k: number of directions.
        op_norm: ``||U||_2``, the residual map's operator norm (>= 1).
        decorrelate: with ``covariance`` given: True (default) for the oblique split, False for the
            orthogonal one (the record still reports the held-out R^2 under ``covariance``).
        max_norm: M, the record norm up to which float32 encodings of one face are neighbours.
        epsilon, delta: the dither's own budget (> 0; delta in (0, 1)).
    """
    epsilon = check_number("dither_epsilon", epsilon, low=0.0)
    delta = check_number("dither_delta", delta, low=0.0, high=1.0)
    max_norm = check_number("max_norm", max_norm, low=0.0)
    u = FLOAT32_UNIT_ROUNDOFF
    tau = 2.0 * u * max_norm * op_norm / (1.0 - u)
    # float64 evaluation of R(x) = x - (x N^T) U (k dot products of length D <= dims, an axpy, a subtraction)
    # errs by less than 2^-52 (1 + dims sqrt(k) ||U||) ||x|| in L2 (twice the first-order bound), for each of
    # the two records (norm <= HARD_MAX_NORM); rounding a dims-vector to the grid moves it by <= sqrt(dims) 2^k.
    slack = (2.0 * 2.0 ** -52 * (1.0 + dims * math.sqrt(k) * op_norm) * HARD_MAX_NORM
             + math.sqrt(dims) * 2.0 ** DITHER_GRID_K)
    sens = tau + slack
    sigma = zcdp_gaussian_sigma(epsilon, delta, sens)
    return Dither(epsilon, delta, max_norm, float(op_norm), int(dims), tau, sens, sigma, gaussian_rho(sigma, sens))


def _dither_residual(resid: np.ndarray, dirs: np.ndarray, dither: Dither, noise: NoiseSource) -> np.ndarray:
    """``resid`` float64 ``[N, L, D]`` -> released residual, each record drawn separately, orthogonal to ``dirs``."""
    out = np.empty_like(resid)
    for i in range(resid.shape[0]):
        noisy = noise.gaussian(resid[i].reshape(-1), dither.sigma, grid_k=dither.grid_k).reshape(resid[i].shape)
        # post-processing: back onto the residual subspace, so the directions carry only the released values
        out[i] = noisy - (noisy @ dirs.T) @ dirs
    return out


# ------------------------------------------------------------------------------------- privatize


@dataclass(frozen=True)
class PrivatizeResult:
    """``latent``: the released latent (float32, the input's shape and array type).
    ``record``: JSON-serialisable description of the release (never the true coordinate or the noise)."""

    latent: Any
    record: dict[str, Any] = field(default_factory=dict)


def _sha256_rows(dirs: np.ndarray) -> list[str]:
    return [hashlib.sha256(np.ascontiguousarray(r, dtype="<f8").tobytes()).hexdigest() for r in dirs]


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    from latentpriv import __version__

    out = {"latentpriv": __version__, "numpy": np.__version__}
    with contextlib.suppress(md.PackageNotFoundError):
        out["opendp"] = md.version("opendp")
    return out


def _residual_r2(covariance: Any, dirs: np.ndarray, u: np.ndarray) -> dict[str, Any]:
    if covariance is None or not hasattr(covariance, "heldout_cov"):
        return {"values": None, "reason": "no latent covariance of the model was given (estimate one with "
                                          "`latentpriv boundary covariance --model M`)"}
    from latentpriv.edit.covariance import residual_r2

    out = {"values": [float(v) for v in residual_r2(covariance, dirs, u)],
           "heldout_samples": int(getattr(covariance, "heldout_num", 0)), "model": getattr(covariance, "model", None)}
    if hasattr(covariance, "describe"):
        out["covariance"] = covariance.describe()  # which Sigma (its sha256), from how many samples
    return out


def privatize(w: Any, directions: Any, *, epsilon: float, delta: float = 0.0, mechanism: str = "laplace",
              clip_radius: float = 3.0, center: Any = 0.0, seed: int | np.random.Generator | None = None,
              epsilon_split: Sequence[float] | None = None, layers: Sequence[int] | None = None,
              noise_clip: float = 1.0, noise: NoiseSource | None = None,
              attributes: Sequence[str] | None = None, covariance: Any = None,
              max_norm: float = DEFAULT_MAX_NORM, dither_epsilon: float | None = None,
              dither_delta: float | None = None, decorrelate: bool = True) -> PrivatizeResult:
    """Release ``w`` with its attribute coordinates privatised (local DP per row, for the released file).

    The released latent is rebuilt from released quantities only: ``w' = P(r + z) + atilde U`` where
    ``a = w N^T`` are the coordinates (W+: mean over layers), ``atilde`` their private release (clamp to
    ``[c - B, c + B]``, noise, clip), ``r = w - a U`` the residual of the split (``U = N``, or the oblique
    ``U`` of :func:`split_basis` when ``covariance`` is given), ``z`` a discrete Gaussian dither whose sigma
    covers float32 rounding of the input (:func:`calibrate_dither`) and ``P`` the projection orthogonal to
    the directions. So the output's bytes depend on the input only through ``atilde`` and the dithered
    residual, never on how the input's floats encoded the coordinate, and every W+ layer's coordinate is the
    private value. The output is float32 whatever the input's dtype.

    Guarantee (docs/PRIVACY.md): for two records whose residuals differ by at most ``tau`` (which covers any
    float32/float64 encodings of one face with different coordinates and norm <= ``max_norm``), the outputs
    are ``(epsilon + dither_epsilon, delta + dither_delta)``-indistinguishable (laplace/gaussian; rr: for the
    label). The ``seed`` mechanism reproduces the research notebook (``w + eta n``, no dither, no guarantee).

    Args:
        w: latent(s), float32 or float64: W/Z ``(D,)`` or ``(N, D)``; W+ ``(N, L, D)``. Each row is one
            record. float16 is refused (its rounding is not covered).
        directions: ``[k, D]`` rows or a list of boundary arrays; always re-orthonormalised in float64 in the
            order given (:func:`orthonormalize`). ``D`` must match the latent.
        epsilon: the coordinates' budget > 0 per row, split over the k directions (laplace/rr/seed).
        delta: 0 for laplace/rr; in (0, 1) for gaussian and seed.
        mechanism: ``"laplace"`` (default), ``"gaussian"``, ``"rr"`` (the side of each hyperplane only; the
            distance to it is released exactly), ``"seed"`` (research notebook's step; no guarantee;
            emits :class:`SeedMechanismWarning`).
        clip_radius: B > 0; coordinates are clamped to ``[c - B, c + B]`` and released values clipped to it.
        center: c, a number or ``k`` numbers (default 0: InterFaceGAN's hyperplanes pass through the origin).
        seed: None (default) -> OpenDP's secure samplers; an int or numpy Generator -> reproducible numpy
            noise: NOT private (anyone with the seed replays the noise); the record says
            ``"for_release": false`` and keeps the seed.
        epsilon_split: optional positive weights splitting epsilon over the directions.
        layers: W+ only; must be all layers (or None): a subset is refused, since the others would publish
            their coordinates exactly.
        noise_clip: the ``seed`` mechanism's C (norm bound of the shift, default 1).
        noise: an explicit :class:`~latentpriv.privacy.noise.NoiseSource` (exclusive with ``seed``).
        attributes: optional names of the directions, for the record.
        covariance: the model's latent covariance (``[D, D]`` array or a
            :class:`~latentpriv.edit.covariance.LatentCovariance`): oblique, decorrelated split. With a
            ``LatentCovariance`` the record reports the held-out R^2 of each coordinate from the residual.
        decorrelate: with ``covariance`` given: True (default) for the oblique split, False for the
            orthogonal one (the record still reports the held-out R^2 under ``covariance``).
        max_norm: M: float32 encodings of one face with record norm (L2 over all its numbers) <= M are
            neighbours; larger records are released too, without that coverage. The dither's sigma grows with
            M. Records above :data:`HARD_MAX_NORM` are refused.
        dither_epsilon, dither_delta: the residual dither's budget, added to the spend.

    Returns:
        :class:`PrivatizeResult`; ``record["spend"]`` is the total charged per row.
    """
    mechanism = _check_mechanism(mechanism)
    if seed is not None and noise is not None:
        raise ConfigError("give either seed or noise, not both")
    arr = _to_numpy(w, "w")
    dirs = orthonormalize(directions)
    k, dim = dirs.shape
    frame = _frame(arr, dim, layers, release=mechanism != "seed")
    source = noise if noise is not None else make_noise_source(seed)
    calib = calibrate(mechanism, epsilon=epsilon, delta=delta, clip_radius=clip_radius, k=k,
                      epsilon_split=epsilon_split, noise_clip=noise_clip, grid_slack=source.grid_slack(),
                      dither_epsilon=dither_epsilon, dither_delta=dither_delta)
    c = _centers(center, k)
    if attributes is not None and len(attributes) != k:
        raise ConfigError(f"{len(attributes)} attribute name(s) for {k} direction(s)")
    oblique = covariance is not None and bool(decorrelate)
    if mechanism == "seed" and oblique:
        raise ConfigError("the seed mechanism reproduces the research notebook's orthogonal step; drop covariance "
                          "(or decorrelate=False)")
    u = split_basis(dirs, covariance if oblique else None)
    n_rows, n_layers, _ = frame.x.shape
    dither = None
    if mechanism != "seed":
        dither = calibrate_dither(dims=n_layers * dim, k=k, op_norm=float(np.linalg.norm(u, 2)), max_norm=max_norm,
                                  epsilon=calib.dither_epsilon, delta=calib.dither_delta)
        norms = np.sqrt((frame.x ** 2).sum(axis=(1, 2)))
        if (norms > HARD_MAX_NORM).any():
            bad = int(np.argmax(norms))
            raise InputError(f"row {bad} of w has norm {norms[bad]:.6g} > {HARD_MAX_NORM:g}: not a latent of a "
                             "generator (check the file)")

    warn: list[str] = []
    if mechanism == "seed":
        msg = "mechanism 'seed' (research notebook) gives NO differential-privacy guarantee; use it only for comparison"
        warnings.warn(msg, SeedMechanismWarning, stacklevel=2)
        warn.append(msg)
    if not source.for_release:
        warn.append("seeded noise: reproducible and NOT private (anyone with the seed replays the noise); for "
                    "research only, never for release")

    a, resid = _split(frame, dirs, u)
    atilde = release_coordinates(a, calib, c, source)
    if mechanism == "seed":
        # the notebook's step exactly: w + (atilde - a) n on every layer, no clamp, no dither
        out = frame.x + ((atilde - a) @ dirs)[:, None, :]
    else:
        out = _dither_residual(resid, dirs, dither, source) + (atilde @ u)[:, None, :]
    del resid
    # the seed mechanism keeps the input's dtype (it reproduces the notebook bit for bit, with no guarantee to keep)
    out = _unframe(frame, out).astype(frame.dtype if mechanism == "seed" else np.float32)
    del a, atilde  # never leave this function

    if calib.guarantee == "none":
        guarantee = {"type": "none", "epsilon": None, "delta": None, "reason": SEED_REASON}
        spend = {"epsilon": None, "delta": calib.spend_delta, "rho": None}
    else:
        eps_total, delta_total = calib.spend_epsilon, calib.spend_delta
        coord = {
            "pure-dp": f"({calib.epsilon:g})-DP (pure)",
            "approx-dp": f"({calib.epsilon:g}, {calib.delta:g})-DP",
            "label-dp": f"({calib.epsilon:g})-DP for the side of each hyperplane (the label) only; the distance "
                        "|clip(a) - c| to the hyperplane is released exactly",
        }[calib.guarantee]
        text = (f"({eps_total:g}, {delta_total:g})-differential privacy per row for the released file: the "
                f"coordinates {coord}, the residual dither ({dither.epsilon:g}, {dither.delta:g})-DP, by basic "
                "composition")
        guarantee = {"type": "label-dp" if calib.guarantee == "label-dp" else "approx-dp",
                     "epsilon": eps_total, "delta": delta_total, "statement": text,
                     "coordinates": {"type": calib.guarantee, "epsilon": calib.epsilon,
                                     "delta": calib.delta if calib.guarantee == "approx-dp" else 0.0}}
        # rho: the coordinates' zCDP parameter (gaussian), which the ledger composes in zCDP; the dither is
        # charged by basic composition through its (epsilon, delta) in the totals
        spend = {"epsilon": eps_total, "delta": delta_total, "rho": calib.rho, "dither_rho": dither.rho}
    if mechanism != "rr":
        guarantee["neighbouring_relation"] = (
            "two records (float32 or float64) whose coordinates along the directions may differ arbitrarily (in every "
            "W+ layer) and whose residuals (w - a U) differ by at most tau in L2; tau covers any float32/float64 "
            "encodings of one face with different coordinates whose norms are at most max_norm")
    else:
        guarantee["neighbouring_relation"] = (
            "two records on opposite sides of each hyperplane at equal clamped distance, whose residuals differ by "
            "at most tau in L2 (float32/float64)")
    guarantee["scope"] = SCOPE_TEXT

    sampler = source.describe()
    record: dict[str, Any] = {
        "format": RECORD_FORMAT,
        **calib.as_dict(),
        "guarantee": guarantee,
        "spend": spend,
        "centers": c.tolist(),
        "post_processing": None if mechanism == "seed" else "released values clipped to [c - B, c + B]",
        "split": "oblique" if oblique else "orthogonal",
        "residual_release": None if dither is None else dither.as_dict(),
        "residual_r2": _residual_r2(covariance, dirs, u),
        "directions": {
            "count": k,
            "dim": dim,
            "attributes": list(attributes) if attributes is not None else None,
            "sha256_float64": _sha256_rows(dirs),
        },
        "latent": {"shape": list(arr.shape), "input_dtype": str(np.dtype(frame.dtype)), "dtype": "float32",
                   "rows": int(n_rows), "layers": int(n_layers) if arr.ndim == 3 else None},
        "sampler": sampler,
        "reproducible": bool(source.reproducible),
        "for_release": bool(source.for_release) and mechanism != "seed",
        "seed": sampler.get("seed"),
        "versions": _versions(),
        "warnings": warn,
    }
    return PrivatizeResult(_from_numpy(out, w), record)

"""The float-level release construction ``fl32(P(R(w) + z) + atilde U)`` (docs/PRIVACY.md section 2).

Everything of a release that is not the coordinate mechanism (:mod:`~latentpriv.privacy.coordinate_mechanisms`):

* the directions, exactly orthonormal in float64 (:func:`orthonormalize`), and the split ``w = a U + r``
  (:func:`split_basis`: ``U = N``, or the oblique basis under the latent covariance);
* a latent's layout as records ``[N, L, D]`` (:func:`coordinates`, the clamp-only end of a sweep
  :func:`clamp_only`);
* the residual dither ``z``: a discrete Gaussian whose sigma covers float32 rounding of the input
  (:func:`calibrate_dither`, :class:`Dither`), charged with every release.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from latentpriv.errors import ConfigError, InputError
from latentpriv.privacy.accounting import (
    GAUSSIAN_DISCRETE_ZCDP,
    check_number,
    gaussian_rho,
    zcdp_gaussian_sigma,
)
from latentpriv.privacy.noise import NoiseSource

__all__ = [
    "DEFAULT_DITHER_DELTA",
    "DEFAULT_DITHER_EPSILON",
    "DEFAULT_MAX_NORM",
    "DITHER_GRID_K",
    "Dither",
    "FLOAT32_UNIT_ROUNDOFF",
    "HARD_MAX_NORM",
    "Records",
    "as_records",
    "calibrate_dither",
    "centers_for",
    "clamp_only",
    "coordinates",
    "dither_residual",
    "from_records",
    "like_input",
    "split_records",
    "to_numpy",
    "orthonormalize",
    "prepare_directions",
    "split_basis",
]

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
        arr = to_numpy(directions, "directions")
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


def to_numpy(x: Any, name: str) -> np.ndarray:
    """``x`` (a numpy array or a torch tensor, on any device) as a numpy array; TypeError naming ``name``."""
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
class Records:
    """A latent as records: ``x`` float64 ``[N, L, D]`` (L = 1 for W/Z), how to give the input's shape back
    (``squeeze``: ``row`` for ``(D,)``, ``none`` for ``(N, D)``, ``wp`` for ``(N, L, D)``) and its dtype."""

    x: np.ndarray            # float64 [N, L, D]
    squeeze: str             # "none" | "row" | "wp"
    dtype: np.dtype


def as_records(w: np.ndarray, dim: int, layers: Sequence[int] | None, *, release: bool = False) -> Records:
    """Check a latent ``(D,)``, ``(N, D)`` or W+ ``(N, L, D)`` of dimension ``dim`` and return its :class:`Records`.

    ``release``: refuse float types coarser than float32 (their rounding is not covered). ``layers``: W+ only,
    and all of them (a subset would publish the other layers' coordinates exactly).
    """
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
    return Records(x.astype(np.float64), squeeze, w.dtype)


def split_records(frame: Records, dirs: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(a [N, k], r [N, L, D])``: the coordinates averaged over W+ layers (each layer is then set to the
    released value) and the residual ``r = w - (w N^T) U`` of every layer (``r N^T = 0``)."""
    proj = frame.x @ dirs.T
    return proj.mean(axis=1), frame.x - proj @ u


def from_records(frame: Records, out: np.ndarray) -> np.ndarray:
    """``out`` ``[N, L, D]`` in the shape of the input ``frame`` came from."""
    if frame.squeeze == "row":
        out = out[0, 0]
    elif frame.squeeze == "none":
        out = out[:, 0]
    return out


def centers_for(center: Any, k: int) -> np.ndarray:
    """The clamp centres ``[k]`` float64 from one number or ``k`` numbers (ConfigError otherwise)."""
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
    arr = to_numpy(w, "w")
    frame = as_records(arr, dirs.shape[1], None)
    x = frame.x if layers is None else frame.x[:, sorted(set(int(i) for i in layers)), :]
    return (x @ dirs.T).mean(axis=1)


def clamp_only(w: Any, directions: Any, *, clip_radius: float = 3.0, center: Any = 0.0,
               layers: Sequence[int] | None = None, covariance: Any = None) -> np.ndarray:
    """The epsilon = inf end of a sweep: every layer's coordinate set to the clamped mean, no noise.

    Not private (deterministic, residual not dithered); used for the "no noise" row of ``latentpriv sweep``.
    Output float32.
    """
    dirs = orthonormalize(directions)
    arr = to_numpy(w, "w")
    frame = as_records(arr, dirs.shape[1], layers)
    B = check_number("clip_radius", clip_radius, low=0.0)
    c = centers_for(center, len(dirs))
    u = split_basis(dirs, covariance)
    a, resid = split_records(frame, dirs, u)
    out = resid + (np.clip(a, c - B, c + B) @ u)[:, None, :]
    return like_input(from_records(frame, out).astype(np.float32), w)


def like_input(out: np.ndarray, like: Any) -> Any:
    """``out`` as the input's array type: numpy, or a torch tensor on ``like``'s device."""
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


def dither_residual(resid: np.ndarray, dirs: np.ndarray, dither: Dither, noise: NoiseSource) -> np.ndarray:
    """``resid`` float64 ``[N, L, D]`` -> released residual, each record drawn separately, orthogonal to ``dirs``."""
    out = np.empty_like(resid)
    for i in range(resid.shape[0]):
        noisy = noise.gaussian(resid[i].reshape(-1), dither.sigma, grid_k=dither.grid_k).reshape(resid[i].shape)
        # post-processing: back onto the residual subspace, so the directions carry only the released values
        out[i] = noisy - (noisy @ dirs.T) @ dirs
    return out

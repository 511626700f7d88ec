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
    "clamp_only",
    "coordinates",
    "prepare_directions",
    "privatize",
    "release_coordinates",
]

MECHANISMS = ("laplace", "gaussian", "rr", "seed")
RECORD_FORMAT = "latentpriv.privatize/1"

SCOPE_TEXT = (
    "Attribute-level local DP in latent space: protects the coordinates of each latent along the chosen "
    "directions; everything orthogonal to them is released unchanged. It does not hide identity, and an "
    "attribute entangled with other directions can still leak through the residual."
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
              grid_slack: float = 0.0) -> Calibration:
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
                           guarantee="pure-dp")
    if mechanism == "rr":
        return Calibration(mechanism, epsilon, 0.0, clip_radius, k, epsilons, 2.0 * clip_radius, grid_slack,
                           guarantee="label-dp")
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
                           rho=gaussian_rho(sigma, sens_grid), guarantee="approx-dp", method=method)
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


def prepare_directions(directions: Any, *, dim: int | None = None, tol: float = 1e-3) -> np.ndarray:
    """Return the directions as an orthonormal float64 ``[k, D]`` array.

    ``directions`` is either a 2-D array ``[k, D]`` of unit, mutually orthogonal rows (already
    conditioned and orthogonalised; checked to ``1e-5``) or a list of boundary arrays (each ``(1, D)``
    or ``(D,)``), which are verified and orthogonalised by Gram-Schmidt in the order given.
    Each row must be finite with norm within ``tol`` of 1 (then renormalised).
    """
    from latentpriv.boundaries import gram_schmidt, verify_direction

    if isinstance(directions, (list, tuple)):
        if not directions:
            raise InputError("directions: empty list; give at least one boundary")
        rows = [verify_direction(d, name=f"directions[{i}]", dim=dim, tol=tol) for i, d in enumerate(directions)]
        return gram_schmidt(np.stack(rows))
    arr = _to_numpy(directions, "directions")
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2:
        raise InputError(f"directions: expected an array (k, D) or a list of boundaries, got shape {arr.shape}")
    rows = np.stack([verify_direction(r, name=f"directions[{i}]", dim=dim, tol=tol) for i, r in enumerate(arr)])
    gram = rows @ rows.T
    off = np.abs(gram - np.eye(len(rows))).max()
    if off > 1e-5:
        raise InputError(f"directions: rows are not mutually orthogonal (max |cos| {off:.3g}); pass a list of "
                         "boundaries to orthogonalise them in order, or use latentpriv.boundaries.gram_schmidt")
    return rows


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


@dataclass
class _Frame:
    x: np.ndarray            # float64 [N, L, D]
    layers: np.ndarray       # edited layer indices
    squeeze: str             # "none" | "row" | "wp-single"
    dtype: np.dtype


def _frame(w: np.ndarray, dim: int, layers: Sequence[int] | None) -> _Frame:
    if not (np.issubdtype(w.dtype, np.floating)):
        raise TypeError(f"w must be a floating-point array, got dtype {w.dtype}")
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
        raise InputError(f"latent dimension {x.shape[-1]} does not match the directions' dimension {dim} "
                         "(a boundary for another space or model?)")
    if x.shape[0] == 0:
        raise InputError("w holds no rows")
    L = x.shape[1]
    if layers is None:
        idx = np.arange(L)
    else:
        if w.ndim != 3:
            raise ConfigError("layers applies only to W+ latents (N, L, D)")
        idx = np.asarray(sorted(set(int(i) for i in layers)), dtype=np.int64)
        if idx.size == 0 or idx.min() < 0 or idx.max() >= L:
            raise ConfigError(f"layers {list(layers)} must be non-empty indices in [0, {L})")
    return _Frame(x.astype(np.float64), idx, squeeze, w.dtype)


def _coords(frame: _Frame, dirs: np.ndarray) -> np.ndarray:
    return (frame.x[:, frame.layers, :] @ dirs.T).mean(axis=1)  # [N, k]


def _recompose(frame: _Frame, dirs: np.ndarray, a: np.ndarray, atilde: np.ndarray) -> np.ndarray:
    out = frame.x.copy()
    out[:, frame.layers, :] += ((atilde - a) @ dirs)[:, None, :]
    if frame.squeeze == "row":
        out = out[0, 0]
    elif frame.squeeze == "none":
        out = out[:, 0]
    return out.astype(frame.dtype)


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
    """Attribute coordinates ``<w, n_i>`` ``[N, k]`` (W+: mean over ``layers``)."""
    dirs = prepare_directions(directions)
    return _coords(_frame(_to_numpy(w, "w"), dirs.shape[1], layers), dirs)


def clamp_only(w: Any, directions: Any, *, clip_radius: float = 3.0, center: Any = 0.0,
               layers: Sequence[int] | None = None) -> np.ndarray:
    """The epsilon = inf end of a sweep: clamp the coordinates to ``[c - B, c + B]``, add no noise.

    Not private (deterministic); used for the "no noise" row of ``latentpriv sweep``.
    """
    dirs = prepare_directions(directions)
    arr = _to_numpy(w, "w")
    frame = _frame(arr, dirs.shape[1], layers)
    B = check_number("clip_radius", clip_radius, low=0.0)
    c = _centers(center, len(dirs))
    a = _coords(frame, dirs)
    return _from_numpy(_recompose(frame, dirs, a, np.clip(a, c - B, c + B)), w)


def _from_numpy(out: np.ndarray, like: Any) -> Any:
    if isinstance(like, np.ndarray):
        return out
    import torch

    return torch.from_numpy(out).to(like.device)


# ------------------------------------------------------------------------------------- privatize


@dataclass(frozen=True)
class PrivatizeResult:
    """``latent``: the released latent (same shape, dtype and array type as the input).
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


def privatize(w: Any, directions: Any, *, epsilon: float, delta: float = 0.0, mechanism: str = "laplace",
              clip_radius: float = 3.0, center: Any = 0.0, seed: int | np.random.Generator | None = None,
              epsilon_split: Sequence[float] | None = None, layers: Sequence[int] | None = None,
              noise_clip: float = 1.0, noise: NoiseSource | None = None,
              attributes: Sequence[str] | None = None) -> PrivatizeResult:
    """Release ``w`` with its attribute coordinates privatised (local DP per row).

    Args:
        w: latent(s), float array: W/Z ``(D,)`` or ``(N, D)``; W+ ``(N, L, D)``. Each row is one record.
        directions: ``[k, D]`` orthonormal rows, or a list of boundary arrays (verified, then
            Gram-Schmidt-orthogonalised in order). ``D`` must match the latent.
        epsilon: total budget > 0 per row, split over the k directions (laplace/rr/seed).
        delta: 0 for laplace/rr; in (0, 1) for gaussian and seed.
        mechanism: ``"laplace"`` (default, pure epsilon-DP), ``"gaussian"`` ((epsilon, delta)-DP,
            analytic calibration), ``"rr"`` (epsilon-DP for the side of the hyperplane only; the
            distance to it is released exactly), ``"seed"`` (research notebook's step; no guarantee;
            emits :class:`SeedMechanismWarning`).
        clip_radius: B > 0; coordinates are clamped to ``[c - B, c + B]`` and released values clipped
            to it. Sensitivity ``2B`` per coordinate (``2B sqrt(k)`` in L2).
        center: c, a number or ``k`` numbers (default 0: InterFaceGAN's hyperplanes pass through the
            origin; ``<w_avg, n_i>`` is a common choice).
        seed: None (default) -> OpenDP's secure samplers; an int or numpy Generator -> reproducible
            numpy noise, recorded as ``"for_release": false``.
        epsilon_split: optional positive weights splitting epsilon over the directions.
        layers: W+ only: the edited layers (default all); the coordinate is their mean and each edited
            layer is shifted by the same amount.
        noise_clip: the ``seed`` mechanism's C (norm bound of the shift, default 1).
        noise: an explicit :class:`~latentpriv.privacy.noise.NoiseSource` (exclusive with ``seed``).
        attributes: optional names of the directions, for the record.

    Returns:
        :class:`PrivatizeResult`. ``<latent_row, n_i> = atilde_i`` in ``[c_i - B, c_i + B]`` (except
        ``seed``); the component orthogonal to the directions is unchanged (up to the dtype's rounding).
    """
    mechanism = _check_mechanism(mechanism)
    if seed is not None and noise is not None:
        raise ConfigError("give either seed or noise, not both")
    arr = _to_numpy(w, "w")
    dirs = prepare_directions(directions)
    k, dim = dirs.shape
    frame = _frame(arr, dim, layers)
    source = noise if noise is not None else make_noise_source(seed)
    calib = calibrate(mechanism, epsilon=epsilon, delta=delta, clip_radius=clip_radius, k=k,
                      epsilon_split=epsilon_split, noise_clip=noise_clip, grid_slack=source.grid_slack())
    c = _centers(center, k)
    if attributes is not None and len(attributes) != k:
        raise ConfigError(f"{len(attributes)} attribute name(s) for {k} direction(s)")

    warn: list[str] = []
    if mechanism == "seed":
        msg = "mechanism 'seed' (research notebook) gives NO differential-privacy guarantee; use it only for comparison"
        warnings.warn(msg, SeedMechanismWarning, stacklevel=2)
        warn.append(msg)
    if not source.for_release:
        warn.append("seeded numpy noise: reproducible, NOT for release (floating-point noise is attackable)")

    a = _coords(frame, dirs)
    atilde = release_coordinates(a, calib, c, source)
    out = _recompose(frame, dirs, a, atilde)
    del a, atilde  # never leaves this function

    if calib.guarantee == "none":
        guarantee = {"type": "none", "epsilon": None, "delta": None, "reason": SEED_REASON}
    else:
        text = {
            "pure-dp": f"({calib.epsilon:g})-differential privacy per row (pure DP)",
            "approx-dp": f"({calib.epsilon:g}, {calib.delta:g})-differential privacy per row",
            "label-dp": f"({calib.epsilon:g})-DP for the side of each hyperplane (the label) only; the distance "
                        "|clip(a) - c| to the hyperplane is released exactly",
        }[calib.guarantee]
        guarantee = {"type": calib.guarantee, "epsilon": calib.epsilon,
                     "delta": calib.delta if calib.guarantee == "approx-dp" else 0.0, "statement": text}
    guarantee["neighbouring_relation"] = (
        "two latents whose coordinates along the directions differ and whose residual is equal"
        if mechanism != "rr" else
        "two latents on opposite sides of each hyperplane at equal distance, with equal residual")
    guarantee["scope"] = SCOPE_TEXT
    if mechanism in ("laplace", "gaussian", "rr"):
        guarantee["caveat"] = ("the proof covers the released coordinates on the noise grid; writing them into a "
                               f"{np.dtype(frame.dtype).name} latent adds rounding at the last-bit level")

    record: dict[str, Any] = {
        "format": RECORD_FORMAT,
        **calib.as_dict(),
        "guarantee": guarantee,
        "centers": c.tolist(),
        "post_processing": None if mechanism == "seed" else "released values clipped to [c - B, c + B]",
        "directions": {
            "count": k,
            "dim": dim,
            "attributes": list(attributes) if attributes is not None else None,
            "sha256_float64": _sha256_rows(dirs),
        },
        "latent": {"shape": list(arr.shape), "dtype": str(np.dtype(frame.dtype)), "rows": int(frame.x.shape[0]),
                   "edited_layers": frame.layers.tolist() if arr.ndim == 3 else None},
        "sampler": source.describe(),
        "reproducible": bool(source.reproducible),
        "for_release": bool(source.for_release) and mechanism != "seed",
        "versions": _versions(),
        "warnings": warn,
    }
    return PrivatizeResult(_from_numpy(out, w), record)

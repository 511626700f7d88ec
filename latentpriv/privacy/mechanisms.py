"""Differentially private attribute shifts in latent space (``latentpriv.privatize``).

What is protected (see docs/PRIVACY.md): the attribute coordinates ``a_i = <w, n_i>`` of one latent
along unit, mutually orthogonal directions ``n_1..n_k`` (e.g. InterFaceGAN boundaries). Two latents are
*neighbours* when they differ only along those directions (same residual ``r = w - sum_i a_i n_i``).
Each row of a batch is one record (local DP, one face = one record). Everything orthogonal to the
directions is released with only a float-level dither: this is attribute-level privacy, not identity
protection, and an attribute entangled with other directions can still leak through the residual.

:func:`privatize` puts the two halves of a release together, in named phases (prepare, draw, record):

* the coordinate mechanism, an object with its calibration, release, guarantee, spend and neighbouring
  relation (:mod:`latentpriv.privacy.coordinate_mechanisms`: laplace, gaussian, rr, seed, and the registry);
* the float-level construction ``fl32(P(R(w) + z) + atilde U)``: directions, split, residual dither
  (:mod:`latentpriv.privacy.float_release`).

Noise comes from :mod:`latentpriv.privacy.noise`: OpenDP's exact samplers unless a seed is given. The names
of both halves are importable from here, as they were in latentpriv 0.1.
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from latentpriv.errors import ConfigError, InputError
from latentpriv.privacy.accounting import GAUSSIAN_CONTINUOUS, GAUSSIAN_DISCRETE_1D, GAUSSIAN_DISCRETE_ZCDP
from latentpriv.privacy.coordinate_mechanisms import (
    MECHANISMS,
    REGISTRY,
    SEED_REASON,
    Calibration,
    Mechanism,
    SeedMechanismWarning,
    calibrate,
    get_mechanism,
    release_coordinates,
    validate_params,
)
from latentpriv.privacy.float_release import (
    DEFAULT_DITHER_DELTA,
    DEFAULT_DITHER_EPSILON,
    DEFAULT_MAX_NORM,
    DITHER_GRID_K,
    FLOAT32_UNIT_ROUNDOFF,
    HARD_MAX_NORM,
    Dither,
    Records,
    as_records,
    calibrate_dither,
    centers_for,
    clamp_only,
    coordinates,
    dither_residual,
    from_records,
    like_input,
    orthonormalize,
    prepare_directions,
    split_basis,
    split_records,
    to_numpy,
)
from latentpriv.privacy.noise import NoiseSource, make_noise_source

__all__ = [   # both halves' names, importable from here as in latentpriv 0.1
    "DEFAULT_DITHER_DELTA", "DEFAULT_DITHER_EPSILON", "DEFAULT_MAX_NORM", "DITHER_GRID_K", "Dither",
    "FLOAT32_UNIT_ROUNDOFF", "HARD_MAX_NORM", "calibrate_dither", "clamp_only", "coordinates", "orthonormalize",
    "prepare_directions", "split_basis",
    "MECHANISMS", "REGISTRY", "Calibration", "Mechanism", "SeedMechanismWarning", "calibrate", "get_mechanism",
    "release_coordinates", "validate_params",
    "GAUSSIAN_CONTINUOUS", "GAUSSIAN_DISCRETE_1D", "GAUSSIAN_DISCRETE_ZCDP", "SEED_REASON",
    "PreparedRelease", "PrivatizeResult", "direction_hashes", "oblique_split", "prepare_release", "privatize",
    "seed_warning_silenced", "split_hash",
]

RECORD_FORMAT = "latentpriv.privatize/1"

SCOPE_TEXT = (
    "Attribute-level local DP in latent space: protects the coordinates of each latent along the chosen "
    "directions; the residual (the rest of the latent) is released with only an invisible float-level dither, "
    "so it does not hide identity, and whatever the residual predicts about the attribute stays visible (see "
    "residual_r2; the decorrelated split removes the linear part)."
)
SEEDED_WARNING = ("seeded noise: reproducible and NOT private (anyone with the seed replays the noise); for "
                  "research only, never for release")
SEED_MECHANISM_WARNING = ("mechanism 'seed' (research notebook) gives NO differential-privacy guarantee; use it "
                          "only for comparison")


@contextlib.contextmanager
def seed_warning_silenced() -> Iterator[None]:
    """Silence :class:`SeedMechanismWarning` (and nothing else) inside the block: for callers that give
    :data:`SEED_MECHANISM_WARNING` themselves, once per run rather than once per release."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SeedMechanismWarning)
        yield


@dataclass(frozen=True)
class PrivatizeResult:
    """``latent``: the released latent (float32, the input's shape and array type).
    ``record``: JSON-serialisable description of the release (never the true coordinate or the noise)."""

    latent: Any
    record: dict[str, Any] = field(default_factory=dict)


def direction_hashes(dirs: np.ndarray) -> list[str]:
    """sha256 of each float64 row of ``dirs`` (a record's ``directions.sha256_float64``)."""
    return [hashlib.sha256(np.ascontiguousarray(r, dtype="<f8").tobytes()).hexdigest() for r in dirs]


def split_hash(plan: PreparedRelease) -> str | None:
    """sha256 of the oblique split's basis ``U`` (float64, row-major), or None for the orthogonal split
    (``U = N``, already named by the direction hashes). A record's ``directions.split_sha256_float64``: two
    releases decorrelated under different covariances protect different residuals, so their protection
    profiles must differ (:func:`~latentpriv.privacy.release.prepared_profile`)."""
    if not plan.oblique:
        return None
    return hashlib.sha256(np.ascontiguousarray(plan.u, dtype="<f8").tobytes()).hexdigest()


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
    cls = get_mechanism(mechanism)
    if seed is not None and noise is not None:
        raise ConfigError("give either seed or noise, not both")
    arr = to_numpy(w, "w")
    dirs = orthonormalize(directions)
    frame = as_records(arr, dirs.shape[1], layers, release=cls.dithered)
    source = noise if noise is not None else make_noise_source(seed)
    mech = calibrate(mechanism, epsilon=epsilon, delta=delta, clip_radius=clip_radius, k=len(dirs),
                     epsilon_split=epsilon_split, noise_clip=noise_clip, grid_slack=source.grid_slack(),
                     dither_epsilon=dither_epsilon, dither_delta=dither_delta)
    plan = _prepare(mech, w, arr, dirs, frame, center=center, attributes=attributes, covariance=covariance,
                    decorrelate=decorrelate, max_norm=max_norm)
    return plan.draw(source)


def prepare_release(mech: Mechanism, w: Any, directions: Any, *, center: Any = 0.0,
                    layers: Sequence[int] | None = None, attributes: Sequence[str] | None = None,
                    covariance: Any = None, decorrelate: bool = True,
                    max_norm: float = DEFAULT_MAX_NORM) -> PreparedRelease:
    """Everything of :func:`privatize` before the draw, for a mechanism already calibrated (:func:`calibrate`).

    Validates the latent, the directions, the split and the dither (each error :func:`privatize` would raise
    before drawing) and draws nothing; :meth:`PreparedRelease.draw` releases. The accounted release
    (:mod:`latentpriv.privacy.release`) charges ``mech.spend()`` and releases with the same object, so the
    record's spend and the ledger's charge come from one derivation; its protection profile comes from the
    prepared directions and split.
    """
    arr = to_numpy(w, "w")
    dirs = orthonormalize(directions)
    if len(dirs) != mech.k:
        raise ConfigError(f"the {mech.name} mechanism was calibrated for {mech.k} direction(s), got {len(dirs)}")
    frame = as_records(arr, dirs.shape[1], layers, release=mech.dithered)
    return _prepare(mech, w, arr, dirs, frame, center=center, attributes=attributes, covariance=covariance,
                    decorrelate=decorrelate, max_norm=max_norm)


def oblique_split(mech: type[Mechanism] | Mechanism, covariance: Any, decorrelate: bool = True) -> bool:
    """Whether a release uses the oblique (decorrelated) split; the seed mechanism refuses it."""
    oblique = covariance is not None and bool(decorrelate)
    if oblique and not mech.dithered:
        raise ConfigError(f"the {mech.name} mechanism reproduces the research notebook's orthogonal step; drop "
                          "covariance (or decorrelate=False)")
    return oblique


@dataclass
class PreparedRelease:
    """A release ready to draw: the calibrated mechanism, the latent's records, the directions ``N``
    (orthonormal float64 ``[k, D]``), the split's basis ``U`` ``[k, D]``, the centres ``[k]`` and the residual
    dither (None: the seed mechanism). Nothing here depends on the noise."""

    mech: Mechanism
    like: Any                     # the input (its array type is the output's)
    arr: np.ndarray
    frame: Records
    dirs: np.ndarray
    u: np.ndarray
    centers: np.ndarray
    oblique: bool
    dither: Dither | None
    attributes: Sequence[str] | None
    covariance: Any

    @property
    def split(self) -> str:
        return "oblique" if self.oblique else "orthogonal"

    def draw(self, source: NoiseSource) -> PrivatizeResult:
        """Draw the release from ``source`` (calibrated for its grid) and describe it."""
        if source.grid_slack() != self.mech.grid_slack:
            raise ConfigError(f"the {self.mech.name} mechanism was calibrated for grid slack "
                              f"{self.mech.grid_slack:g}, the noise source has {source.grid_slack():g}")
        warn = _warnings(self.mech, source)
        out = _draw(self, source)
        return PrivatizeResult(like_input(out, self.like), _record(self, source, warn))


def _prepare(mech: Mechanism, w: Any, arr: np.ndarray, dirs: np.ndarray, frame: Records, *, center: Any,
             attributes: Sequence[str] | None, covariance: Any, decorrelate: bool, max_norm: float) -> PreparedRelease:
    """Phase 1: centres, the split, the residual dither's calibration; refuse what cannot be released."""
    k, dim = dirs.shape
    c = centers_for(center, k)
    if attributes is not None and len(attributes) != k:
        raise ConfigError(f"{len(attributes)} attribute name(s) for {k} direction(s)")
    oblique = oblique_split(mech, covariance, decorrelate)
    u = split_basis(dirs, covariance if oblique else None)
    dither = None
    if mech.dithered:
        n_layers = frame.x.shape[1]
        dither = calibrate_dither(dims=n_layers * dim, k=k, op_norm=float(np.linalg.norm(u, 2)), max_norm=max_norm,
                                  epsilon=mech.dither_epsilon, delta=mech.dither_delta)
        norms = np.sqrt((frame.x ** 2).sum(axis=(1, 2)))
        if (norms > HARD_MAX_NORM).any():
            bad = int(np.argmax(norms))
            raise InputError(f"row {bad} of w has norm {norms[bad]:.6g} > {HARD_MAX_NORM:g}: not a latent of a "
                             "generator (check the file)")
    return PreparedRelease(mech, w, arr, frame, dirs, u, c, oblique, dither, attributes, covariance)


def _warnings(mech: Mechanism, source: NoiseSource) -> list[str]:
    """Phase 2: what the record warns about (the seed mechanism also warns through :mod:`warnings`)."""
    warn: list[str] = []
    if not mech.private:
        # stacklevel: the caller of privatize (or of PreparedRelease.draw)
        warnings.warn(SEED_MECHANISM_WARNING, SeedMechanismWarning, stacklevel=4)
        warn.append(SEED_MECHANISM_WARNING)
    if not source.for_release:
        warn.append(SEEDED_WARNING)
    return warn


def _draw(plan: PreparedRelease, source: NoiseSource) -> np.ndarray:
    """Phase 3: the released latent, built from the released coordinates and the dithered residual only."""
    frame, dirs = plan.frame, plan.dirs
    a, resid = split_records(frame, dirs, plan.u)
    atilde = release_coordinates(a, plan.mech, plan.centers, source)
    if plan.dither is None:
        # the notebook's step exactly: w + (atilde - a) n on every layer, no clamp, no dither; it keeps the
        # input's dtype (it reproduces the notebook bit for bit, with no guarantee to keep)
        out = frame.x + ((atilde - a) @ dirs)[:, None, :]
        dtype = frame.dtype
    else:
        out = dither_residual(resid, dirs, plan.dither, source) + (atilde @ plan.u)[:, None, :]
        dtype = np.float32
    del resid, a, atilde  # never leave this function
    return from_records(frame, out).astype(dtype)


def _record(plan: PreparedRelease, source: NoiseSource, warn: list[str]) -> dict[str, Any]:
    """Phase 4: the JSON record (never the true coordinate or the noise)."""
    mech, frame, dirs, dither, arr = plan.mech, plan.frame, plan.dirs, plan.dither, plan.arr
    n_rows, n_layers, _ = frame.x.shape
    k, dim = dirs.shape
    guarantee = mech.guarantee_record(dither)
    guarantee["scope"] = SCOPE_TEXT
    sampler = source.describe()
    return {
        "format": RECORD_FORMAT,
        **mech.as_dict(),
        "guarantee": guarantee,
        "spend": mech.spend_record(dither),
        "centers": plan.centers.tolist(),
        "post_processing": "released values clipped to [c - B, c + B]" if mech.dithered else None,
        "split": plan.split,
        "residual_release": None if dither is None else dither.as_dict(),
        "residual_r2": _residual_r2(plan.covariance, dirs, plan.u),
        "directions": {
            "count": k,
            "dim": dim,
            "attributes": list(plan.attributes) if plan.attributes is not None else None,
            "sha256_float64": direction_hashes(dirs),
            "split_sha256_float64": split_hash(plan),
        },
        "latent": {"shape": list(arr.shape), "input_dtype": str(np.dtype(frame.dtype)), "dtype": "float32",
                   "rows": int(n_rows), "layers": int(n_layers) if arr.ndim == 3 else None},
        "sampler": sampler,
        "reproducible": bool(source.reproducible),
        "for_release": bool(source.for_release) and mech.private,
        "seed": sampler.get("seed"),
        "versions": _versions(),
        "warnings": warn,
    }

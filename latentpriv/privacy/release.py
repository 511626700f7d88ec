"""One accounted release: the budget check, the draw, the write and the charge, in a crash-safe order.

``latentpriv privatize FILE``, the batch engine (``privatize DIR``, torchrun shards) and ``sweep`` release
through :func:`accounted_release`, so they refuse, warn, count and describe a release the same way:

1. the output folder is probed for writing (a read-only or missing folder fails before anything is charged);
2. one ledger transaction checks every face's prospective total against ``max_epsilon`` and files a
   *pending* charge (:class:`~latentpriv.errors.PrivacyBudgetError` and nothing filed or drawn when a face
   would go over, unless ``force``); pending charges count against the budget;
3. the noise is drawn (:func:`~latentpriv.privacy.mechanisms.privatize`) and the sha256 of the output's
   bytes is recorded with the pending charge;
4. ``commit`` (the caller's atomic writes) runs; then the charge is committed. A failed write (read-only,
   full disk, bad path) or an interruption cancels the charge. After a crash the next run (or
   ``latentpriv ledger recover``) commits the charge if the output exists with the recorded sha256 and
   cancels it otherwise, so no output is visible without its charge and a failed write costs nothing.

The record never holds the true coordinate, the noise or a key of the latent (see docs/PRIVACY.md).
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latentpriv.errors import InputError
from latentpriv.privacy.ledger import (
    Ledger,
    Profile,
    Reservation,
    Spend,
    Total,
    npy_sha256,
    profile_from_record,
    spend_from_calibration,
    spend_from_record,
)
from latentpriv.privacy.mechanisms import DEFAULT_MAX_NORM, Calibration, calibrate, privatize
from latentpriv.privacy.noise import NoiseSource

SEEDED_REASON = "a seeded release (--seed): the record keeps the seed, so the noise can be replayed; not private"


@dataclass(frozen=True)
class ReleaseParams:
    """The mechanism's settings, as the user gave them (validated by :func:`calibrate`)."""

    mechanism: str = "laplace"
    epsilon: float = 1.0
    delta: float = 0.0
    clip_radius: float = 3.0
    epsilon_split: Sequence[float] | None = None
    noise_clip: float = 1.0
    layers: Sequence[int] | None = None
    max_norm: float = DEFAULT_MAX_NORM    # the largest record norm the float-level guarantee covers

    def calibration(self, k: int, noise: NoiseSource) -> Calibration:
        """Calibrate for ``k`` directions and ``noise``'s grid (its slack widens the noise scale)."""
        return calibrate(self.mechanism, epsilon=self.epsilon, delta=self.delta, clip_radius=self.clip_radius, k=k,
                         epsilon_split=self.epsilon_split, noise_clip=self.noise_clip,
                         grid_slack=noise.grid_slack())

    def spend(self, k: int, noise: NoiseSource) -> Spend:
        """What one release costs each face (a seeded release: unbounded)."""
        return spend_from_calibration(self.calibration(k, noise),
                                      unbounded=None if noise.for_release else SEEDED_REASON)

    def privatize(self, latent: np.ndarray, directions: np.ndarray, *, center: Any, noise: NoiseSource | None = None,
                  seed: int | None = None, attributes: Sequence[str] | None = None, covariance: Any = None) -> Any:
        """:func:`~latentpriv.privacy.mechanisms.privatize` with these settings."""
        with warnings.catch_warnings():
            # the seed mechanism's warning is the caller's to give, once per run, not once per file
            warnings.simplefilter("ignore")
            return privatize(latent, directions, epsilon=self.epsilon, delta=self.delta, mechanism=self.mechanism,
                             clip_radius=self.clip_radius, center=center, noise=noise, seed=seed,
                             epsilon_split=self.epsilon_split, layers=self.layers, noise_clip=self.noise_clip,
                             attributes=attributes or None, covariance=covariance, max_norm=self.max_norm)

    def profile(self, latent: np.ndarray, directions: np.ndarray, *, center: Any,
                attributes: Sequence[str] | None = None, covariance: Any = None) -> Profile:
        """The protection profile a release of ``latent`` will have, known before any private draw (a
        seeded dry run on a zero latent of the same layout gives the record's directions, split and layers)."""
        arr = np.asarray(latent)
        dummy = np.zeros_like(arr[:1] if arr.ndim >= 2 else arr, dtype=np.float32)
        rec = self.privatize(dummy, directions, center=center, seed=0, attributes=attributes,
                             covariance=covariance).record
        return profile_from_record(rec)


@dataclass
class Release:
    """``latent``: released latent, the input's shape. ``record``: the JSON record (with ``release_id``).
    ``keys``: each row's face (hex of its primary key), in order. ``totals``: each face's composed spend
    after this release. With ``defer=True`` the charge is still pending: call :meth:`commit` once the output
    is on disk, :meth:`cancel` if writing it failed."""

    latent: np.ndarray
    record: dict[str, Any]
    keys: list[str]
    totals: dict[str, Total]
    ledger: Ledger | None = field(default=None, repr=False)
    reservation: Reservation | None = field(default=None, repr=False)

    @property
    def worst_epsilon(self) -> float | None:
        """The largest total epsilon over the rows (None: some face is unbounded)."""
        eps = [t.epsilon for t in self.totals.values()]
        return None if any(e is None for e in eps) else max(eps)  # type: ignore[type-var]

    def commit(self) -> None:
        if self.ledger is not None and self.reservation is not None:
            self.ledger.commit(self.reservation)

    def cancel(self) -> None:
        if self.ledger is not None and self.reservation is not None:
            self.ledger.cancel(self.reservation)


def probe_writable(folder: str | os.PathLike) -> None:
    """Raise :class:`InputError` unless a file can be created in ``folder`` (created if missing)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".latentpriv-probe.", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise InputError(f"{folder}: cannot write there ({exc.strerror or exc}); choose another output; nothing was "
                         "charged") from exc


def check_ledger_path(ledger: Ledger, *, inputs: Sequence[str | os.PathLike] = (),
                      outputs: Sequence[str | os.PathLike] = (),
                      folders: Sequence[str | os.PathLike] = ()) -> None:
    """Refuse a ledger that is an input or an output of the run (or lies in its input/output folder)."""
    led = {Path(str(ledger.path) + s).resolve() for s in ("", "-wal", "-shm", "-journal")}
    for p in (*inputs, *outputs):
        if Path(p).resolve() in led:
            raise InputError(f"--ledger {ledger.path}: is also an {'input' if p in inputs else 'output'} of this run; "
                             "keep the ledger in a private place of its own (e.g. the default)")
    for d in folders:
        if ledger.path.resolve().parent == Path(d).resolve():
            raise InputError(f"--ledger {ledger.path}: lies in the run's folder {d}, whose files are inputs or "
                             "published outputs; keep the ledger in a private place of its own")


@functools.lru_cache(maxsize=32)
def registered_directions(model: str, family: str, dim: int) -> tuple[np.ndarray, ...]:
    """The boundaries known here for ``model`` in latent family ``family`` (``z`` or ``w``) of dimension ``dim``:
    the public directions the face key removes (see :func:`~latentpriv.privacy.ledger.face_keys`)."""
    from latentpriv.edit.boundaries import list_boundaries, load_boundary

    out = []
    with contextlib.suppress(Exception):   # a listing problem must not stop a release: the key then has fewer views
        for b in list_boundaries():
            if b.get("model") != model or b.get("space") != family or not b.get("present") or not b.get("path"):
                continue
            with contextlib.suppress(Exception):
                vec = np.asarray(load_boundary(b["path"]).vector, dtype=np.float64).reshape(-1)
                if vec.size == dim:
                    out.append(vec)
    return tuple(out)


def key_family(model: str | None, space: str | None) -> tuple[str, str]:
    """``(family text, z|w)`` of a release: keys of other models or latent families never match."""
    fam = "z" if space == "z" else "w"
    return f"{model or 'custom'}:{fam}", fam


def reserve_release(ledger: Ledger, latent: np.ndarray, directions: np.ndarray, *, params: ReleaseParams,
                    spends: Spend | Sequence[Spend], center: Any = 0.0, attributes: Sequence[str] = (),
                    covariance: Any = None, model: str | None = None, space: str | None = None,
                    subject: str | None = None, max_epsilon: float | None = None, force: bool = False,
                    command: str = "privatize", output: str | os.PathLike | None = None, label: str | None = None,
                    info: Mapping[str, Any] | None = None, release_ids: Sequence[str] | None = None) -> Reservation:
    """Key the faces of ``latent``, work out the release's protection profile and file pending charges
    (:meth:`Ledger.reserve`: budget check and charge in one transaction)."""
    arr = np.asarray(latent)
    profile = params.profile(arr, directions, center=center, attributes=attributes, covariance=covariance)
    family, fam = key_family(model, space)
    public = [*registered_directions(model or "custom", fam, int(arr.shape[-1])),
              *np.asarray(directions, dtype=np.float64).reshape(-1, arr.shape[-1])]
    faces, pub = ledger.keys_for(arr, family=family, directions=public,
                                 space="wp" if arr.ndim == 3 or space == "wp" else space, subject=subject)
    return ledger.reserve(faces, spends, profile, max_epsilon=max_epsilon, force=force, command=command,
                          output=None if output is None else str(Path(output).resolve()), label=label,
                          info={**(info or {}), "attributes": list(attributes)}, public=pub, family=family,
                          release_ids=release_ids)


def warn_forced(res: Reservation, max_epsilon: float | None, warn: Callable[[str], None] | None) -> None:
    """The ``--force`` warning when a reservation took faces past ``max_epsilon``."""
    if not res.over or max_epsilon is None:
        return
    msg = f"--force: {len(res.over)} face(s) go past --max-epsilon {max_epsilon:g}"
    reasons = {t.reason for t in res.over if t.reason}
    if reasons:
        msg += f" (unbounded: {sorted(reasons)[0]})"
    warn(msg) if warn is not None else warnings.warn(msg, stacklevel=3)


def accounted_release(latent: np.ndarray, directions: np.ndarray, *, params: ReleaseParams, noise: NoiseSource,
                      ledger: Ledger, center: Any = 0.0, attributes: Sequence[str] = (),
                      max_epsilon: float | None = None, force: bool = False,
                      record_info: Mapping[str, Any] | None = None, ledger_info: Mapping[str, Any] | None = None,
                      commit: Callable[[np.ndarray, dict[str, Any]], None] | None = None,
                      warn: Callable[[str], None] | None = None, covariance: Any = None,
                      model: str | None = None, space: str | None = None, subject: str | None = None,
                      output: str | os.PathLike | None = None, output_shape: Sequence[int] | None = None,
                      label: str | None = None, command: str = "privatize", defer: bool = False) -> Release:
    """Release ``latent`` along ``directions`` and account for it in ``ledger`` (module docstring: the order).

    Args:
        latent: float ``(D,)``, ``(N, D)`` or W+ ``(N, L, D)``; each row (first axis) is one face.
        directions: ``[k, D]`` rows (re-orthonormalised by :func:`privatize`).
        params: mechanism settings; ``noise``: the noise source (OpenDP unless the user asked for a seed;
            a seeded release makes the face unbounded).
        ledger: the ledger; ``max_epsilon``: refuse (before any draw) if a face's total would exceed it;
            ``force``: release anyway, with a warning and ``forced`` in the ledger.
        center: the clamp centre, a number or ``k`` numbers.
        attributes: names of the directions (record, ledger, profile description).
        record_info / ledger_info: extra fields for the record / the ledger's release row.
        commit: ``commit(released_latent, record)``: the caller's atomic writes; the charge is committed
            after it returns and cancelled if it raises.
        warn: where warnings go (the ``--force`` overshoot); None: :func:`warnings.warn`.
        covariance: the model's latent covariance for the oblique split, or None (orthogonal split).
        model, space: the model and latent space (``z``, ``w``, ``wp``): the face key's family.
        subject: key the faces by this person id (``--subject``) instead of by their latents.
        output: the released ``.npy`` file: its folder is probed before anything is charged and the sha256 of
            ``released.reshape(output_shape)`` (as :func:`latentpriv.io.save_npy` writes it) is recorded with
            the pending charge, so a crash after the write still commits it.
        label: free text shown by ``latentpriv ledger show``.
        defer: leave the charge pending (the caller writes later, then calls :meth:`Release.commit`).

    Raises:
        PrivacyBudgetError: a face would exceed ``max_epsilon`` (nothing drawn, written or charged).
        InputError: the output folder is not writable, or writing failed (nothing charged).
    """
    arr = np.asarray(latent)
    attributes = list(attributes)
    if output is not None:
        probe_writable(Path(output).parent)
    spend = params.spend(len(directions), noise)
    release_id = uuid.uuid4().hex
    res = reserve_release(ledger, arr, directions, params=params, spends=spend, center=center, attributes=attributes,
                          covariance=covariance, model=model, space=space, subject=subject, max_epsilon=max_epsilon,
                          force=force, command=command, output=output, label=label, info=ledger_info,
                          release_ids=[release_id])
    try:
        warn_forced(res, max_epsilon, warn)
        result = params.privatize(arr, directions, center=center, noise=noise, attributes=attributes,
                                  covariance=covariance)
        record = dict(result.record)
        if not spend_from_record(record).matches(spend) and noise.for_release:  # pragma: no cover - consistency
            raise RuntimeError("internal error: the record's spend differs from the calibrated one")
        if profile_from_record(record).id != res.profile:  # pragma: no cover - consistency
            raise RuntimeError("internal error: the record's protection profile differs from the one charged")
        record["release_id"] = release_id
        record.update(record_info or {})
        record["ledger"] = str(ledger.path)
        released = np.asarray(result.latent)
        if output is not None:
            shape = tuple(output_shape) if output_shape is not None else released.shape
            ledger.set_output(res, output, npy_sha256(released.reshape(shape)))
        if commit is not None:
            try:
                commit(released, record)
            except OSError as exc:
                raise InputError(f"{getattr(exc, 'filename', None) or output or 'output'}: writing the release "
                                 f"failed ({exc.strerror or exc}); it was cancelled and nothing was charged") from exc
    except BaseException:
        ledger.cancel(res)
        raise
    rel = Release(latent=released, record=record, keys=[f.primary.hex() for f in res.faces], totals=res.totals,
                  ledger=ledger, reservation=res)
    if not defer:
        ledger.commit(res)
    return rel

"""One accounted release: the budget check, the draw, the write and the charge, in a crash-safe order.

``latentpriv privatize FILE``, the batch engine (``privatize DIR``, torchrun shards), ``sweep`` (several
settings in one transaction) and ``attack --ledger`` release through :func:`accounted_release`, so they
refuse, warn, count and describe a release the same way:

1. the output folder is probed for writing (a read-only or missing folder fails before anything is charged);
   the mechanism is calibrated once (:func:`~latentpriv.privacy.mechanisms.calibrate`) and the release prepared
   (:func:`~latentpriv.privacy.mechanisms.prepare_release`: every check before a draw); the charge is that
   mechanism's own spend, the protection profile that of the prepared directions and split;
2. one ledger transaction checks every face's prospective total against ``max_epsilon`` and files a
   *pending* charge (:class:`~latentpriv.errors.PrivacyBudgetError` and nothing filed or drawn when a face
   would go over, unless ``force``); pending charges count against the budget;
3. the same prepared release draws the noise (:meth:`~latentpriv.privacy.mechanisms.PreparedRelease.draw`), so
   the record states the spend that was charged, and the sha256 of the output's bytes is recorded with the
   pending charge;
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
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latentpriv.errors import InputError
from latentpriv.privacy.ledger import (
    SEEDED_REASON,
    Ledger,
    Profile,
    Reservation,
    Spend,
    Total,
    npy_sha256,
    release_profile,
)
from latentpriv.privacy.mechanisms import (
    DEFAULT_MAX_NORM,
    Mechanism,
    PreparedRelease,
    calibrate,
    direction_hashes,
    orthonormalize,
    prepare_release,
    privatize,
    seed_warning_silenced,
    split_hash,
)
from latentpriv.privacy.noise import NoiseSource, SeededNoise


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

    def calibration(self, k: int, noise: NoiseSource) -> Mechanism:
        """The mechanism calibrated for ``k`` directions and ``noise``'s grid (its slack widens the noise
        scale): its spend, guarantee and release are this one object's."""
        return calibrate(self.mechanism, epsilon=self.epsilon, delta=self.delta, clip_radius=self.clip_radius, k=k,
                         epsilon_split=self.epsilon_split, noise_clip=self.noise_clip,
                         grid_slack=noise.grid_slack())

    def spend(self, k: int, noise: NoiseSource) -> Spend:
        """What one release costs each face (a seeded release: unbounded)."""
        return release_spend(self.calibration(k, noise), noise)

    def prepare(self, latent: np.ndarray, directions: Any, *, mech: Mechanism, center: Any,
                attributes: Sequence[str] | None = None, covariance: Any = None) -> PreparedRelease:
        """:func:`~latentpriv.privacy.mechanisms.prepare_release` with these settings (nothing drawn)."""
        return prepare_release(mech, latent, directions, center=center, layers=self.layers,
                               attributes=attributes or None, covariance=covariance, max_norm=self.max_norm)

    def privatize(self, latent: np.ndarray, directions: np.ndarray, *, center: Any, noise: NoiseSource | None = None,
                  seed: int | None = None, attributes: Sequence[str] | None = None, covariance: Any = None) -> Any:
        """:func:`~latentpriv.privacy.mechanisms.privatize` with these settings."""
        with seed_warning_silenced():   # the caller gives it, once per run, not once per file
            return privatize(latent, directions, epsilon=self.epsilon, delta=self.delta, mechanism=self.mechanism,
                             clip_radius=self.clip_radius, center=center, noise=noise, seed=seed,
                             epsilon_split=self.epsilon_split, layers=self.layers, noise_clip=self.noise_clip,
                             attributes=attributes or None, covariance=covariance, max_norm=self.max_norm)

    def profile(self, latent: np.ndarray, directions: np.ndarray, *, center: Any,
                attributes: Sequence[str] | None = None, covariance: Any = None) -> Profile:
        """The protection profile a release of ``latent`` will have, from the settings and the directions
        (nothing is drawn)."""
        noise = SeededNoise(0)   # only its grid matters to the calibration; the profile does not depend on it
        mech = self.calibration(direction_count(directions), noise)
        return prepared_profile(self.prepare(latent, directions, mech=mech, center=center, attributes=attributes,
                                             covariance=covariance))


def release_spend(mech: Mechanism, noise: NoiseSource) -> Spend:
    """The ledger charge of one release by ``mech`` with ``noise``: the mechanism's own spend, unbounded when
    the noise is seeded (:data:`~latentpriv.privacy.ledger.SEEDED_REASON`)."""
    return mech.spend(unbounded=None if noise.for_release else SEEDED_REASON)


def direction_count(directions: Any) -> int:
    """k: the number of directions a release along ``directions`` protects (after re-orthonormalisation)."""
    return len(orthonormalize(directions))


def prepared_profile(plan: PreparedRelease) -> Profile:
    """The protection profile of a prepared release: its directions (float64 sha256), split and relation
    (the same :func:`~latentpriv.privacy.ledger.profile_from_record` reads back from its record)."""
    k, dim = plan.dirs.shape
    return release_profile(relation=plan.mech.relation, directions_sha256=direction_hashes(plan.dirs), k=k,
                           dim=dim, split=plan.split, attributes=plan.attributes, covariance=split_hash(plan))


@dataclass
class Release:
    """One accounted release (or several, a sweep's), its charge pending or committed.

    ``latent``: released latent, the input's shape. ``record``: the JSON record (with ``release_id``).
    ``keys``: each row's face (hex of its primary key), in order. ``totals``: each face's composed spend
    after this release. ``release_id``: the record's id. ``draws``: every release's ``(latent, record)``
    (several with several settings: a sweep). ``spends``: what each release charged each face.
    ``mechanisms``: the calibrated mechanism of each setting, whose spend, guarantee and record these are.
    With ``defer=True`` the charge is still pending: call :meth:`commit` once the output is on disk,
    :meth:`cancel` if writing it failed."""

    latent: np.ndarray
    record: dict[str, Any]
    keys: list[str]
    totals: dict[str, Total]
    ledger: Ledger | None = field(default=None, repr=False)
    reservation: Reservation | None = field(default=None, repr=False)
    release_id: str | None = None
    draws: list[tuple[np.ndarray, dict[str, Any]]] = field(default_factory=list, repr=False)
    spends: list[Spend] = field(default_factory=list)
    mechanisms: list[Mechanism] = field(default_factory=list, repr=False)

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
    """Raise :class:`InputError` unless files can be created in ``folder`` (or, while it does not exist, in its
    nearest existing parent: the write creates it): :func:`latentpriv.outputs.check_writable`, whose message
    adds that nothing was charged."""
    from latentpriv.outputs import check_writable

    try:
        check_writable(folder, option="output")
    except InputError as exc:
        raise InputError(f"{exc}; nothing was charged") from exc


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


def reserve_release(ledger: Ledger, latent: np.ndarray, directions: np.ndarray, *, profile: Profile,
                    spends: Spend | Sequence[Spend], attributes: Sequence[str] = (), model: str | None = None,
                    space: str | None = None, subject: str | None = None, max_epsilon: float | None = None,
                    force: bool = False, command: str = "privatize", output: str | os.PathLike | None = None,
                    label: str | None = None, info: Mapping[str, Any] | None = None,
                    release_ids: Sequence[str] | None = None) -> Reservation:
    """Key the faces of ``latent`` and file pending charges of ``spends`` under ``profile``
    (:meth:`Ledger.reserve`: budget check and charge in one transaction)."""
    arr = np.asarray(latent)
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


def _draw(plan: PreparedRelease, noise: NoiseSource, *, release_id: str, record_info: Mapping[str, Any] | None,
          ledger: Ledger) -> tuple[np.ndarray, dict[str, Any]]:
    """Step 3 of :func:`accounted_release` for one prepared release: ``(released latent, record)``, the record
    carrying the release id, the caller's fields and the ledger's path."""
    with seed_warning_silenced():   # the caller gives it, once per run, not once per release
        result = plan.draw(noise)
    record = {**result.record, "release_id": release_id, **(record_info or {}), "ledger": str(ledger.path)}
    return np.asarray(result.latent), record


def accounted_release(latent: np.ndarray, directions: np.ndarray, *,
                      params: ReleaseParams | Sequence[ReleaseParams], noise: NoiseSource,
                      ledger: Ledger, center: Any = 0.0, attributes: Sequence[str] = (),
                      max_epsilon: float | None = None, force: bool = False,
                      record_info: Mapping[str, Any] | None = None, ledger_info: Mapping[str, Any] | None = None,
                      commit: Callable[[np.ndarray, dict[str, Any]], None] | None = None,
                      warn: Callable[[str], None] | None = None, covariance: Any = None,
                      model: str | None = None, space: str | None = None, subject: str | None = None,
                      output: str | os.PathLike | None = None, output_shape: Sequence[int] | None = None,
                      label: str | None = None, command: str = "privatize", defer: bool = False,
                      repeats: int = 1, release_id: str | None = None) -> Release:
    """Release ``latent`` along ``directions`` and account for it in ``ledger`` (module docstring: the order).

    Each release's spend is derived once, from its calibrated mechanism: the ledger is charged
    ``mechanism.spend()`` and the same object draws the release and writes the record's ``spend``.

    Args:
        latent: float ``(D,)``, ``(N, D)`` or W+ ``(N, L, D)``; each row (first axis) is one face.
        directions: ``[k, D]`` rows (re-orthonormalised as :func:`privatize` does).
        params: mechanism settings; several (a sweep): one release per entry and per ``repeats``, every one
            charged to each face in one ledger transaction (release ids ``ID-0``, ``ID-1``, ...).
        noise: the noise source (OpenDP unless the user asked for a seed; a seeded release makes the face
            unbounded).
        ledger: the ledger; ``max_epsilon``: refuse (before any draw) if a face's total would exceed it;
            ``force``: release anyway, with a warning and ``forced`` in the ledger.
        center: the clamp centre, a number or ``k`` numbers.
        attributes: names of the directions (record, ledger, profile description).
        record_info / ledger_info: extra fields for the record / the ledger's release row.
        commit: ``commit(released_latent, record)``: the caller's atomic writes; the charge is committed
            after it returns and cancelled if it raises (one ``params`` only; several: use ``defer``).
        warn: where warnings go (the ``--force`` overshoot); None: :func:`warnings.warn`.
        covariance: the model's latent covariance for the oblique split, or None (orthogonal split).
        model, space: the model and latent space (``z``, ``w``, ``wp``): the face key's family.
        subject: key the faces by this person id (``--subject``) instead of by their latents.
        output: the released ``.npy`` file (one ``params``): its folder is probed before anything is charged
            and the sha256 of ``released.reshape(output_shape)`` (as :func:`latentpriv.io.save_npy` writes it)
            is recorded with the pending charge, so a crash after the write still commits it. With several
            ``params`` (a picture of them): recorded in the ledger, no sha256.
        label: free text shown by ``latentpriv ledger show``.
        defer: leave the charge pending (the caller writes later, then calls :meth:`Release.commit`).
        repeats: independent releases of every face per ``params`` (rows ``i * repeats + j``).
        release_id: the record's ``release_id`` (default: a new random one).

    Returns:
        :class:`Release`; with several ``params``, ``Release.draws`` holds each one's ``(latent, record)``
        and ``latent``/``record`` are the first's.

    Raises:
        PrivacyBudgetError: a face would exceed ``max_epsilon`` (nothing drawn, written or charged).
        InputError: the output folder is not writable, or writing failed (nothing charged).
        ConfigError: invalid settings (nothing charged).
    """
    arr = np.asarray(latent)
    attributes = list(attributes)
    several = not isinstance(params, ReleaseParams)
    plist = list(params) if several else [params]
    if not plist or (several and commit is not None):
        raise ValueError("accounted_release: give at least one ReleaseParams; several take defer=True, not commit")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats = {repeats!r} must be an integer >= 1")
    if output is not None:
        probe_writable(Path(output).parent)
    k = direction_count(directions)
    mechs = [p.calibration(k, noise) for p in plist]
    drawn = arr if repeats == 1 else np.repeat(arr, repeats, axis=0)   # each copy is one release of the face
    plans = [p.prepare(drawn, directions, mech=m, center=center, attributes=attributes, covariance=covariance)
             for p, m in zip(plist, mechs, strict=True)]
    spends = [release_spend(m, noise) for m in mechs for _ in range(repeats)]   # the only derivation
    release_id = release_id or uuid.uuid4().hex
    ids = [f"{release_id}-{i}" for i in range(len(spends))] if several or repeats > 1 else [release_id]
    res = reserve_release(ledger, arr, directions, profile=prepared_profile(plans[0]), spends=spends,
                          attributes=attributes, model=model, space=space, subject=subject, max_epsilon=max_epsilon,
                          force=force, command=command, output=output, label=label, info=ledger_info,
                          release_ids=ids)
    try:
        warn_forced(res, max_epsilon, warn)
        draws = [_draw(plan, noise, release_id=release_id, record_info=record_info, ledger=ledger) for plan in plans]
        released, record = draws[0]
        if output is not None and not several:
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
                  ledger=ledger, reservation=res, release_id=release_id, draws=draws, spends=spends,
                  mechanisms=mechs)
    if not defer:
        ledger.commit(res)
    return rel

"""The privacy ledger: what each face has spent, in one SQLite database (stdlib :mod:`sqlite3`).

Releasing many noisy versions of one face and averaging them removes the noise, so spending composes
across releases. The ledger records every release of every face and refuses a release that would bring a
face past ``--max-epsilon``. Design (docs/PRIVACY.md, "The privacy ledger"):

**Storage.** One SQLite file (WAL journal, ``synchronous=FULL``), one ``BEGIN IMMEDIATE`` transaction per
step, so concurrent processes on one machine serialise on SQLite's lock (``busy_timeout``) and never
double-spend. CHECK constraints keep every stored epsilon and rho finite and non-negative and every delta
in ``[0, 1)``. Tables: ``releases`` (one per release: spend, state, profile, output digest), ``charges``
(one per released row), ``charge_keys`` (the face keys each charge is filed under, indexed),
``profiles``, ``public_sets`` (public direction sets the face key removes) and ``meta`` (the secret).

**Release protocol** (:meth:`Ledger.reserve`, :meth:`Ledger.set_output`, :meth:`Ledger.commit`,
:meth:`Ledger.cancel`): the budget check and a *pending* charge happen in one transaction, before any
noise is drawn; pending charges count against the budget, so two processes cannot both spend the last of
it. After the draw the output's sha256 is recorded with the pending charge, the output is written
atomically, then the charge is committed. A failed write cancels it. After a crash, :meth:`Ledger.recover`
(run automatically by the next reservation, or by ``latentpriv ledger recover``) commits the pending charges
of dead processes whose output exists with the recorded digest and cancels the others.

**Composition.** Per face: pure-DP spends add; Gaussian spends compose in zCDP (Bun & Steinke 2016,
converted with CKS20 Cor 13) or by basic composition when that is smaller; the residual dither's
``(dither_epsilon, dither_delta)`` adds by basic composition. Only releases with the same *protection
profile* (directions actually used, split, layers, neighbouring relation) compose: a release with another
profile publishes exactly what the earlier one protected, so a face with two profiles is unbounded. A face
with a seeded or ``seed``-mechanism release is unbounded too.

**Face keys** (:func:`face_keys`): HMAC-SHA256 (secret random key in the database) of a coarse
quantisation of the latent's projections onto fixed pseudo-random directions, after removing a public
direction set, probing neighbouring cells near a cell boundary; never invertible, robust to bit flips,
dtype, shape and W+ tiling. ``--subject ID`` keys by person instead.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import hmac
import itertools
import json
import math
import os
import signal
import socket
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latentpriv.errors import InputError, PrivacyBudgetError
from latentpriv.io import npy_bytes
from latentpriv.privacy.accounting import zcdp_to_dp

__all__ = ["FaceKey", "Ledger", "Profile", "Reservation", "Spend", "Total", "default_ledger_path", "face_keys",
           "latent_key", "legacy_ledger_path", "npy_sha256", "profile_from_record", "row_keys",
           "spend_from_calibration", "spend_from_record", "total_of"]

SCHEMA_VERSION = 2
SQLITE_MAGIC = b"SQLite format 3\x00"
_MAX_REAL = "1.7976931348623157e308"   # CHECK (x <= this) rejects +inf; SQLite stores NaN as NULL (checked in Python)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS profiles (
    id TEXT PRIMARY KEY,
    relation TEXT NOT NULL CHECK (relation IN ('coordinate', 'label', 'legacy')),
    description TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS releases (
    release_id TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('pending', 'committed', 'cancelled')),
    time TEXT NOT NULL,
    updated TEXT NOT NULL,
    command TEXT,
    mechanism TEXT NOT NULL,
    epsilon REAL CHECK (epsilon IS NULL OR (epsilon >= 0 AND epsilon <= {_MAX_REAL})),
    delta REAL NOT NULL CHECK (delta >= 0 AND delta < 1),
    rho REAL CHECK (rho IS NULL OR (rho >= 0 AND rho <= {_MAX_REAL})),
    dither_epsilon REAL NOT NULL DEFAULT 0 CHECK (dither_epsilon >= 0 AND dither_epsilon <= {_MAX_REAL}),
    dither_delta REAL NOT NULL DEFAULT 0 CHECK (dither_delta >= 0 AND dither_delta < 1),
    unbounded TEXT,
    profile TEXT NOT NULL REFERENCES profiles(id),
    forced INTEGER NOT NULL CHECK (forced IN (0, 1)),
    output TEXT,
    output_sha256 TEXT,
    pid INTEGER,
    host TEXT,
    proc_start TEXT,
    label TEXT,
    info TEXT NOT NULL DEFAULT '{{}}',
    CHECK (epsilon IS NOT NULL OR unbounded IS NOT NULL)
);
CREATE INDEX IF NOT EXISTS releases_pending ON releases(state) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS charges (
    id INTEGER PRIMARY KEY,
    release_id TEXT NOT NULL REFERENCES releases(release_id),
    row INTEGER NOT NULL CHECK (row >= 0),
    face BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS charges_release ON charges(release_id);
CREATE TABLE IF NOT EXISTS charge_keys (
    key BLOB NOT NULL,
    charge INTEGER NOT NULL REFERENCES charges(id),
    PRIMARY KEY (key, charge)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS public_sets (
    id TEXT PRIMARY KEY,
    family TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vectors BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS public_sets_family ON public_sets(family, dim);
"""


# ------------------------------------------------------------------------------------------------ paths


def _data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "latentpriv"


def default_ledger_path() -> Path:
    """``$LATENTPRIV_LEDGER`` if set, else ``$XDG_DATA_HOME/latentpriv/ledger.sqlite`` (~/.local/share)."""
    env = os.environ.get("LATENTPRIV_LEDGER")
    if env:
        return Path(env).expanduser()
    return _data_dir() / "ledger.sqlite"


def legacy_ledger_path() -> Path:
    """Where latentpriv 0.1 kept its JSONL ledger by default."""
    return _data_dir() / "ledger.jsonl"


# ------------------------------------------------------------------------------------------------ spends


#: Why a face is unbounded after a release without a guarantee (the seed mechanism) or with seeded noise.
SEED_UNBOUNDED = "the seed mechanism gives no guarantee"
SEEDED_REASON = "a seeded release (--seed): the record keeps the seed, so the noise can be replayed; not private"


@dataclass(frozen=True)
class Spend:
    """What one release costs one face.

    ``epsilon``/``delta`` are the totals of one release including the residual dither's
    ``dither_epsilon``/``dither_delta``; ``rho`` the zCDP parameter of a gaussian release's coordinate
    noise; ``epsilon`` None (or ``unbounded`` set): no guarantee.
    """

    mechanism: str
    epsilon: float | None
    delta: float = 0.0
    rho: float | None = None
    dither_epsilon: float = 0.0
    dither_delta: float = 0.0
    unbounded: str | None = None

    @property
    def kind(self) -> str:
        if self.epsilon is None or self.unbounded is not None:
            return "none"
        return "zcdp" if self.rho is not None else "pure"

    def matches(self, other: Spend) -> bool:
        """The same kind and (up to float rounding) the same epsilon, delta and rho."""
        def eq(x: float | None, y: float | None) -> bool:
            return (x is None and y is None) or (x is not None and y is not None
                                                 and math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-15))
        return (self.kind == other.kind and eq(self.epsilon, other.epsilon) and eq(self.delta, other.delta)
                and eq(self.rho, other.rho))

    def validate(self) -> Spend:
        """Raise :class:`InputError` for a NaN, infinite or negative number (SQLite would store NaN as NULL)."""
        for name in ("epsilon", "rho", "dither_epsilon"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise InputError(f"spend {name}={v!r}: must be a finite number >= 0")
        for name in ("delta", "dither_delta"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v < 1):
                raise InputError(f"spend {name}={v!r}: must be in [0, 1)")
        return self


def spend_from_calibration(calib: Any, *, unbounded: str | None = None) -> Spend:
    """The :class:`Spend` of a calibrated mechanism (dither included): its own privacy map,
    :meth:`~latentpriv.privacy.coordinate_mechanisms.Mechanism.spend`."""
    return calib.spend(unbounded=unbounded)


def _registered(name: Any) -> Any:
    """The mechanism class a record names (None: not one of :data:`~latentpriv.privacy.mechanisms.MECHANISMS`)."""
    from latentpriv.privacy.coordinate_mechanisms import REGISTRY  # it imports this module

    return REGISTRY.get(name) if isinstance(name, str) else None


def spend_from_record(record: Mapping[str, Any]) -> Spend:
    """The :class:`Spend` of a privatize record (``record["spend"]``: the total per row, dither included)."""
    g = record["guarantee"]["type"]
    mech = record["mechanism"]
    d_eps = float(record.get("dither_epsilon") or 0.0)
    d_delta = float(record.get("dither_delta") or 0.0)
    spend = record.get("spend")
    unbounded = None
    registered = _registered(mech)
    if g == "none" or (registered is not None and registered.guarantee == "none"):
        unbounded = SEED_UNBOUNDED
    elif record.get("for_release") is False:
        unbounded = SEEDED_REASON
    if isinstance(spend, Mapping):
        eps = spend.get("epsilon")
        rho = spend.get("rho")
        return Spend(mech, None if eps is None else float(eps), min(float(spend.get("delta") or 0.0), 1.0 - 1e-16),
                     None if rho is None else float(rho), d_eps, d_delta, unbounded)
    if g == "none":
        return Spend(mech, None, float(record.get("delta") or 0.0), None, d_eps, d_delta, unbounded)
    rho = float(record["noise"]["rho_zcdp"]) if g == "approx-dp" else None
    delta = float(record["delta"]) if g == "approx-dp" else 0.0
    return Spend(mech, float(record["epsilon"]) + d_eps, delta + d_delta, rho, d_eps, d_delta, unbounded)


# ------------------------------------------------------------------------------------------------ profiles


@dataclass(frozen=True)
class Profile:
    """What a release protects: only releases with equal ``id`` compose.

    ``data``: the protected subspace (sha256 of the float64 directions actually used, their count and
    dimension, the split, the covariance behind an oblique split) and the edited layers;
    ``relation``: ``coordinate`` (neighbours differ along the directions) or ``label`` (``rr``: only the
    side of each hyperplane is protected); ``description``: for people (attribute names).
    """

    id: str
    relation: str
    description: str
    data: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def make(cls, relation: str, data: Mapping[str, Any], description: str) -> Profile:
        canon = json.dumps({"relation": relation, **data}, sort_keys=True, separators=(",", ":"))
        return cls(hashlib.sha256(canon.encode()).hexdigest()[:16], relation, description, dict(data))


def release_profile(*, relation: str, directions_sha256: Sequence[str] | str | None, k: int | None,
                    dim: int | None, split: Any = "orthogonal", attributes: Sequence[str] | None = None,
                    covariance: str | None = None, layers: Sequence[int] | None = None) -> Profile:
    """The :class:`Profile` of a release along directions (``directions_sha256``: each float64 row's sha256,
    as a privatize record lists them), with the ``split`` and the ``relation`` of its mechanism
    (``coordinate``, or ``label`` for ``rr``)."""
    sha = directions_sha256
    if isinstance(sha, (list, tuple)):
        sha = hashlib.sha256("".join(sha).encode()).hexdigest()
    data = {"directions_sha256": sha, "k": k, "dim": dim,
            "split": split if isinstance(split, str) else json.dumps(split, sort_keys=True, default=str),
            "covariance": covariance, "layers": None if layers is None else list(layers)}
    names = attributes or [f"direction {i + 1}" for i in range(int(k or 0))]
    desc = "+".join(str(n) for n in names)
    desc += f" ({data['split']}{', layers ' + _layers_text(data['layers']) if layers is not None else ''}"
    desc += ", label only)" if relation == "label" else ")"
    return Profile.make(relation, data, desc)


def profile_from_record(record: Mapping[str, Any]) -> Profile:
    """The :class:`Profile` of a privatize record (``latentpriv.privatize``)."""
    dirs = record.get("directions") or {}
    # the oblique split's basis U names the covariance it was decorrelated under (None: orthogonal split)
    cov_id = dirs.get("split_sha256_float64")
    lat = record.get("latent") or {}
    layers = lat.get("edited_layers", lat.get("layers"))
    if not isinstance(layers, (list, tuple)):
        layers = None   # every layer of a W+ latent is released (a count, not a subset): W and W+ compose
    mech = _registered(record.get("mechanism"))
    return release_profile(relation="coordinate" if mech is None else mech.relation,
                           directions_sha256=dirs.get("sha256_float64"), k=dirs.get("count"), dim=dirs.get("dim"),
                           split=record.get("split", "orthogonal"), attributes=dirs.get("attributes"),
                           covariance=cov_id, layers=layers)


def _layers_text(layers: Sequence[int] | int) -> str:
    if isinstance(layers, int):
        return f"all {layers}"
    layers = list(layers)
    if layers and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(map(str, layers))


LEGACY_PROFILE = Profile.make("legacy", {"format": "latentpriv 0.1 JSONL"},
                              "imported from a 0.1 JSONL ledger (directions not recorded)")


# ------------------------------------------------------------------------------------------------ totals


@dataclass(frozen=True)
class Total:
    """Composed spend of one face: ``epsilon`` None means unbounded, and ``reason`` says why."""

    key: str
    releases: int
    epsilon: float | None
    delta: float
    epsilon_pure: float
    rho: float
    unbounded_releases: int
    reason: str | None = None
    profiles: tuple[tuple[str, int], ...] = ()     # (profile description, releases)
    pending: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"face": self.key, "releases": self.releases, "pending": self.pending, "epsilon": self.epsilon,
                "delta": self.delta, "epsilon_pure": self.epsilon_pure, "rho_zcdp": self.rho,
                "releases_without_guarantee": self.unbounded_releases, "unbounded_reason": self.reason,
                "profiles": [{"profile": d, "releases": n} for d, n in self.profiles]}


def total_of(key: str, spends: Iterable[Spend]) -> Total:
    """Compose ``spends`` of one face that all share one profile (see the module docstring)."""
    n = unbounded = 0
    pure: list[float] = []
    rhos: list[float] = []
    g_eps: list[float] = []
    g_deltas: list[float] = []
    g_dither: list[float] = []
    deltas: list[float] = []
    reason = None
    for s in spends:
        n += 1
        deltas.append(float(s.delta))
        if s.kind == "none":
            unbounded += 1
            reason = reason or s.unbounded or f"a {s.mechanism} release has no guarantee"
        elif s.kind == "zcdp":
            rhos.append(float(s.rho))  # type: ignore[arg-type]
            g_eps.append(float(s.epsilon))  # type: ignore[arg-type]
            g_deltas.append(float(s.delta) - float(s.dither_delta))
            g_dither.append(float(s.dither_epsilon))
        else:
            pure.append(float(s.epsilon))  # type: ignore[arg-type]
    eps_pure = math.fsum(pure)
    rho = math.fsum(rhos)
    delta = min(math.fsum(deltas), 1.0)
    if rhos:
        basic = math.fsum(g_eps)
        d_g = math.fsum(g_deltas)
        eps_g = min(basic, zcdp_to_dp(rho, d_g) + math.fsum(g_dither)) if 0.0 < d_g < 1.0 else basic
    else:
        eps_g = 0.0
    eps = None if unbounded else eps_pure + eps_g
    return Total(key, n, eps, delta, eps_pure, rho, unbounded, reason if unbounded else None)


@dataclass(frozen=True)
class _Charge:
    charge_id: int
    spend: Spend
    profile: str
    profile_desc: str
    state: str
    release_id: str


def _compose(key: str, charges: Sequence[_Charge]) -> Total:
    """Totals per face over its charges: one profile composes; two or more make the face unbounded."""
    by_profile: dict[str, list[_Charge]] = {}
    for c in charges:
        by_profile.setdefault(c.profile, []).append(c)
    base = total_of(key, [c.spend for c in charges])
    profiles = tuple((cs[0].profile_desc, len(cs)) for cs in by_profile.values())
    pending = sum(c.state == "pending" for c in charges)
    reason = base.reason
    eps = base.epsilon
    if len(by_profile) > 1:
        eps = None
        shown = "; ".join(f"{d} ({n} release{'s' if n > 1 else ''})" for d, n in profiles)
        reason = (f"releases with different protection profiles: {shown}; each release publishes exactly what the "
                  "other protects, so nothing bounds what the face has leaked")
    return Total(key, base.releases, eps, base.delta, base.epsilon_pure, base.rho, base.unbounded_releases,
                 reason if eps is None else None, profiles, pending)


# ------------------------------------------------------------------------------------------------ face keys

#: the key's quantiser: M public pseudo-random unit directions, cells of STEP, probes within MARGIN of a cell
#: boundary (at most MAX_PROBED coordinates, the ones nearest a boundary). Changing any of these changes
#: every key: they are part of the key version (KEY_VERSION).
KEY_VERSION = b"latentpriv-face/2"
KEY_PROJECTIONS = 24
KEY_STEP = 0.5
KEY_MARGIN = 0.02
KEY_MAX_PROBED = 8
_KEY_SEED = 0x1A7E_47F1


@dataclass(frozen=True)
class FaceKey:
    """The keys of one face (one row of a release): ``store`` are filed with its charge, ``lookup`` are probed
    when checking its budget (``store`` plus neighbouring cells and the other views). ``primary`` names the
    face in ``ledger show``."""

    primary: bytes
    store: tuple[bytes, ...]
    lookup: tuple[bytes, ...]


_PROJ_CACHE: dict[int, np.ndarray] = {}


def _projections(dim: int) -> np.ndarray:
    """``[M, dim]`` fixed public pseudo-random unit rows (a function of ``dim`` only)."""
    if dim not in _PROJ_CACHE:
        rng = np.random.Generator(np.random.PCG64([_KEY_SEED, dim]))
        r = rng.standard_normal((KEY_PROJECTIONS, dim))
        _PROJ_CACHE[dim] = r / np.linalg.norm(r, axis=1, keepdims=True)
    return _PROJ_CACHE[dim]


def _orthonormal(rows: np.ndarray) -> np.ndarray:
    """Orthonormal float64 basis of the span of ``rows`` (QR; rank-deficient rows dropped)."""
    rows = np.asarray(rows, dtype=np.float64)
    if rows.size == 0:
        return rows.reshape(0, rows.shape[-1] if rows.ndim else 0)
    q, r = np.linalg.qr(rows.T)
    keep = np.abs(np.diag(r)) > 1e-9 * max(1.0, float(np.abs(r).max()))
    return np.ascontiguousarray(q[:, keep].T)


def public_set(directions: Sequence[np.ndarray] | np.ndarray) -> tuple[str, np.ndarray]:
    """``(id, orthonormal basis)`` of a public direction set; the id depends on the set, not its order."""
    rows = [np.asarray(d, dtype=np.float64).reshape(-1) for d in directions]
    rows.sort(key=lambda v: hashlib.sha256(v.tobytes()).digest())
    basis = _orthonormal(np.stack(rows)) if rows else np.zeros((0, 0))
    sid = hashlib.sha256(b"".join(np.round(v, 12).tobytes() for v in rows)).hexdigest()[:16]
    return sid, basis


def _face_vectors(latent: np.ndarray, space: str | None) -> tuple[np.ndarray, list[np.ndarray]]:
    """``(V [N, D] float64 per face, raw rows)``: W+ rows ``(L, D)`` become their layer mean."""
    arr = np.asarray(latent)
    if arr.ndim == 0:
        raise InputError("a latent must have at least one dimension")
    rows = [arr] if arr.ndim == 1 or (arr.ndim == 2 and space == "wp") else list(arr)
    vecs = np.stack([np.asarray(r, dtype=np.float64).reshape(-1, np.shape(r)[-1]).mean(axis=0) for r in rows])
    return vecs, rows


def _cells(p: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The primary cell of projections ``p`` and the alternative cells to probe."""
    x = p / KEY_STEP
    cell = np.floor(x).astype(np.int64)
    frac = x - cell
    near_lo = frac * KEY_STEP < KEY_MARGIN
    near_hi = (1.0 - frac) * KEY_STEP < KEY_MARGIN
    dist = np.where(near_lo, frac, np.where(near_hi, 1.0 - frac, np.inf))
    near = [int(i) for i in np.argsort(dist, kind="stable")[:KEY_MAX_PROBED] if np.isfinite(dist[i])]
    alts = []
    for combo in itertools.product((0, 1), repeat=len(near)):
        if not any(combo):
            continue
        c = cell.copy()
        for i, on in zip(near, combo, strict=True):
            if on:
                c[i] += -1 if near_lo[i] else 1
        alts.append(c)
    return cell, alts


def _mac(secret: bytes, *parts: bytes) -> bytes:
    return hmac.new(secret, b"|".join((KEY_VERSION, *parts)), "sha256").digest()


def face_keys(latent: np.ndarray, *, secret: bytes, family: str, public_sets: Sequence[tuple[str, np.ndarray]] = (),
              store_set: str | None = None, space: str | None = None, subject: str | None = None) -> list[FaceKey]:
    """The :class:`FaceKey` of every face (row) of ``latent``.

    Args:
        latent: ``(D,)``, ``(N, D)`` or W+ ``(N, L, D)`` (``(L, D)`` with ``space="wp"``); any float dtype.
            A W+ face is keyed by its layer mean, so a W latent tiled over the layers keys like the W latent.
        secret: the ledger's HMAC key.
        family: model and latent family (``"stylegan_ffhq:w"``): keys of other families never match.
        public_sets: ``(id, orthonormal basis [k, D])`` public direction sets; each is one *view* of the face:
            the latent with its components along the set removed, so two latents that differ only along
            the set (neighbours of a release along those directions) share that view's keys. The
            ``"full"`` view (nothing removed) is always included.
        store_set: the id of the set whose view (with ``"full"``) the charge is filed under.
        subject: key by this person id instead (``--subject``): one key, no views.

    Each view's key is ``HMAC(secret, version | family | view | cells)`` where ``cells`` quantises the
    view's projections on :data:`KEY_PROJECTIONS` fixed pseudo-random unit directions into cells of
    :data:`KEY_STEP`; projections within :data:`KEY_MARGIN` of a cell boundary also probe the neighbouring
    cell, so any perturbation moving every projection by less than the margin (bit flips, +1e-7, float16
    rounding, dtype, shape) finds the earlier charges. Legacy (0.1 JSONL) keys are probed as well.
    """
    fam = family.encode()
    vecs, rows = _face_vectors(latent, space)
    if subject is not None:
        k = _mac(secret, fam, b"subject", str(subject).encode())
        return [FaceKey(k, (k,), (k,)) for _ in rows]
    dim = vecs.shape[1]
    proj = _projections(dim)
    views: list[tuple[bytes, np.ndarray | None]] = [(b"full", None)]
    views += [(b"set:" + sid.encode(), basis) for sid, basis in public_sets if basis.shape[-1] == dim]
    out = []
    for v, raw in zip(vecs, rows, strict=True):
        store: list[bytes] = []
        lookup: list[bytes] = []
        for tag, basis in views:
            r = v if basis is None or len(basis) == 0 else v - (v @ basis.T) @ basis
            cell, alts = _cells(proj @ r)
            k = _mac(secret, fam, tag, cell.tobytes())
            if basis is None or tag == b"set:" + (store_set or "").encode():
                store.append(k)
            lookup.append(k)
            lookup += [_mac(secret, fam, tag, c.tobytes()) for c in alts]
        legacy = legacy_key(secret, latent_key(raw))   # links this charge to imported 0.1 entries of these bytes
        store.append(legacy)
        lookup.append(legacy)
        out.append(FaceKey(store[0], tuple(dict.fromkeys(store)), tuple(dict.fromkeys(lookup))))
    return out


def legacy_key(secret: bytes, sha256_hex: str) -> bytes:
    """The key under which an imported 0.1 entry (keyed by the sha256 of the float32 bytes) is filed."""
    return _mac(secret, b"legacy", sha256_hex.encode())


def latent_key(row: np.ndarray) -> str:
    """latentpriv 0.1's key: sha256 of one row's bytes as little-endian float32, C order."""
    return hashlib.sha256(np.ascontiguousarray(row, dtype="<f4").tobytes()).hexdigest()


def row_keys(latent: np.ndarray, *, space: str | None = None) -> list[str]:
    """0.1 keys per record: ``(D,)`` -> 1; ``(N, D)`` -> N; W+ ``(N, L, D)`` -> N (for imports)."""
    return [latent_key(r) for r in _face_vectors(latent, space)[1]]


def npy_sha256(array: np.ndarray) -> str:
    """sha256 of the bytes :func:`latentpriv.io.save_npy` writes for ``array``."""
    return hashlib.sha256(npy_bytes(array)).hexdigest()


# ------------------------------------------------------------------------------------------------ processes


def _proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` (Linux /proc), to tell a live process from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
        return data[data.rindex(b")") + 2:].split()[19].decode()
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int | None, start: str | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now = _proc_start(pid)
    return start is None or now is None or now == start


_HOST = socket.gethostname()


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Defer SIGTERM/SIGINT while a ledger step runs (a transaction, a request to rank 0), then deliver them:
    the step is never cut in half. Only the main thread can change handlers; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, lambda signum, frame: got.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        if got:
            handler = previous[got[0]]
            if callable(handler):
                handler(got[0], None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(got[0])


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


# ------------------------------------------------------------------------------------------------ the ledger


@dataclass
class Reservation:
    """Pending charges of one or several releases made by :meth:`Ledger.reserve`."""

    release_ids: list[str]
    totals: dict[str, Total]           # per face (primary key hex) after these releases
    faces: list[FaceKey]
    over: list[Total] = field(default_factory=list)   # faces past max_epsilon (only when forced)
    state: str = "pending"
    profile: str = ""


@dataclass
class RecoverReport:
    committed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    live: list[str] = field(default_factory=list)        # pending charges of running processes (left alone)


class Ledger:
    """The SQLite privacy ledger at ``path`` (created on first write, mode 0600).

    Typical use is :func:`latentpriv.privacy.release.accounted_release`; the steps are :meth:`reserve`
    (budget check + pending charge, one transaction), :meth:`set_output`, :meth:`commit` / :meth:`cancel`.
    The ledger holds keyed hashes of *true* latents and a secret: keep it private, on a local disk
    (SQLite's WAL is not safe on network filesystems).
    """

    def __init__(self, path: str | os.PathLike | None = None, *, busy_timeout_s: float = 120.0,
                 migrating: bool = False) -> None:
        self.is_default = path is None and not migrating
        self.path = Path(path).expanduser() if path is not None else default_ledger_path()
        self.busy_timeout_s = float(busy_timeout_s)
        self._con: sqlite3.Connection | None = None
        self._secret: bytes | None = None
        self._recovered = False

    # -- connection
    def _check_file(self) -> None:
        p = self.path
        if p.is_dir():
            raise InputError(f"{p}: is a folder; --ledger takes a file (e.g. ledger.sqlite)")
        if p.is_file() and p.stat().st_size > 0:
            with open(p, "rb") as fh:
                head = fh.read(16)
            if head != SQLITE_MAGIC:
                if head.lstrip()[:1] == b"{":
                    raise InputError(f"{p}: a latentpriv 0.1 JSONL ledger; import it into a SQLite ledger with "
                                     f"`latentpriv ledger import {p} --ledger {p.with_suffix('.sqlite')}` and pass "
                                     "that file as --ledger")
                raise InputError(f"{p}: not a latentpriv ledger (not a SQLite database); pass another --ledger")
        elif self.is_default and legacy_ledger_path().is_file() and not p.exists():
            old = legacy_ledger_path()
            raise InputError(f"{old}: a latentpriv 0.1 ledger exists at the old default location; import it first "
                             f"with `latentpriv ledger import {old}` (it goes to {p}), so the faces it lists keep "
                             "their spend")

    def connect(self) -> sqlite3.Connection:
        """Open (and if needed create) the database; idempotent."""
        if self._con is not None:
            return self._con
        self._check_file()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        try:
            con = sqlite3.connect(str(self.path), timeout=self.busy_timeout_s, isolation_level=None,
                                  check_same_thread=False)
            con.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise InputError(f"{self.path}: SQLite could not switch to WAL mode ({mode}); put the ledger on a "
                                 "local disk")
            con.execute("PRAGMA synchronous = FULL")
            con.execute("PRAGMA foreign_keys = ON")
            con.execute("BEGIN IMMEDIATE")
            try:
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        con.execute(stmt)
                con.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                con.execute("INSERT OR IGNORE INTO meta VALUES ('secret', ?)", (os.urandom(32),))
                con.execute("INSERT OR IGNORE INTO meta VALUES ('created', ?)", (_now(),))
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            raise InputError(f"{self.path}: cannot open the ledger ({exc}); check the path and permissions, or "
                             "run `latentpriv ledger verify`") from exc
        schema = con.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()[0]
        if int(schema) != SCHEMA_VERSION:
            con.close()
            raise InputError(f"{self.path}: ledger schema {schema}, this latentpriv reads {SCHEMA_VERSION}; upgrade")
        self._secret = bytes(con.execute("SELECT value FROM meta WHERE name = 'secret'").fetchone()[0])
        self._con = con
        return con

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def secret(self) -> bytes:
        self.connect()
        assert self._secret is not None
        return self._secret

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction (waits up to ``busy_timeout_s`` for other writers), shielded
        from SIGTERM/SIGINT: a signal that arrives meanwhile takes effect once it has committed or rolled back."""
        con = self.connect()
        with shielded():
            if con.in_transaction:   # left open by an exception between BEGIN and the block (never committed)
                con.execute("ROLLBACK")
            try:
                con.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                raise InputError(f"{self.path}: the ledger is locked by another process ({exc}) for more than "
                                 f"{self.busy_timeout_s:g} s; retry") from exc
            try:
                yield con
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    con.execute("ROLLBACK")
                raise
            else:
                con.execute("COMMIT")

    # -- keys and public sets
    def public_sets(self, family: str, dim: int, con: sqlite3.Connection | None = None) -> list[tuple[str, np.ndarray]]:
        """Every public direction set stored for ``family`` and ``dim``."""
        con = con or self.connect()
        rows = con.execute("SELECT id, vectors FROM public_sets WHERE family = ? AND dim = ? ORDER BY id",
                           (family, dim)).fetchall()
        return [(sid, np.frombuffer(blob, dtype="<f8").reshape(-1, dim)) for sid, blob in rows]

    def keys_for(self, latent: np.ndarray, *, family: str, directions: Sequence[np.ndarray] | np.ndarray = (),
                 space: str | None = None, subject: str | None = None,
                 con: sqlite3.Connection | None = None) -> tuple[list[FaceKey], tuple[str, np.ndarray] | None]:
        """Face keys of ``latent`` for a release along the public set ``directions`` (plus every stored set)."""
        arr = np.asarray(latent)
        dim = int(arr.shape[-1])
        cur = public_set(directions) if len(directions) else None
        sets = self.public_sets(family, dim, con)
        if cur is not None and all(sid != cur[0] for sid, _ in sets):
            sets.append(cur)
        keys = face_keys(arr, secret=self.secret, family=family, public_sets=sets,
                         store_set=cur[0] if cur else None, space=space, subject=subject)
        return keys, cur

    # -- reading
    def charges(self, keys: Sequence[bytes], con: sqlite3.Connection | None = None) -> list[_Charge]:
        """The charges (pending and committed) filed under any of ``keys``."""
        con = con or self.connect()
        out: dict[int, _Charge] = {}
        for i in range(0, len(keys), 500):
            chunk = list(keys[i:i + 500])
            q = ("SELECT c.id, r.mechanism, r.epsilon, r.delta, r.rho, r.dither_epsilon, r.dither_delta, r.unbounded, "
                 "r.profile, p.description, r.state, r.release_id FROM charge_keys k "
                 "JOIN charges c ON c.id = k.charge JOIN releases r ON r.release_id = c.release_id "
                 "JOIN profiles p ON p.id = r.profile "
                 f"WHERE k.key IN ({','.join('?' * len(chunk))}) AND r.state != 'cancelled'")
            for row in con.execute(q, chunk):
                out[row[0]] = _Charge(row[0], Spend(row[1], row[2], row[3], row[4], row[5], row[6], row[7]),
                                      row[8], row[9], row[10], row[11])
        return list(out.values())

    def totals_for(self, faces: Sequence[FaceKey], con: sqlite3.Connection | None = None) -> dict[str, Total]:
        """Composed totals (committed and pending charges) per face, keyed by the primary key's hex."""
        con = con or self.connect()
        return {f.primary.hex(): _compose(f.primary.hex(), self.charges(f.lookup, con)) for f in faces}

    def totals(self, latent: np.ndarray | None = None, **kwargs: Any) -> dict[str, Total]:
        """Totals of the faces of ``latent`` (``keys_for``'s keyword arguments), or of every face."""
        if latent is not None:
            keys, _ = self.keys_for(latent, **kwargs)
            return self.totals_for(keys)
        return {t.key: t for t in self.faces()}

    def faces(self) -> list[Total]:
        """Every face in the ledger: charges linked by shared keys form one face (union-find)."""
        return [t for t, _ in self.face_groups()]

    def face_groups(self) -> list[tuple[Total, list[int]]]:
        """Every face with the ids of its charges: charges linked by shared keys form one face."""
        con = self.connect()
        parent: dict[int, int] = {}

        def find(x: int) -> int:
            while parent.setdefault(x, x) != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        last: tuple[bytes, int] | None = None
        for key, charge in con.execute("SELECT key, charge FROM charge_keys ORDER BY key"):
            find(charge)
            if last is not None and last[0] == key:
                a, b = find(last[1]), find(charge)
                if a != b:
                    parent[max(a, b)] = min(a, b)
            last = (key, charge)
        groups: dict[int, list[int]] = {}
        for c in list(parent):
            groups.setdefault(find(c), []).append(c)
        info = {}
        for row in con.execute(
                "SELECT c.id, c.face, r.mechanism, r.epsilon, r.delta, r.rho, r.dither_epsilon, r.dither_delta, "
                "r.unbounded, r.profile, p.description, r.state, r.release_id FROM charges c "
                "JOIN releases r ON r.release_id = c.release_id JOIN profiles p ON p.id = r.profile "
                "WHERE r.state != 'cancelled'"):
            info[row[0]] = row
        out = []
        for members in groups.values():
            rows = [info[c] for c in sorted(members) if c in info]
            if not rows:
                continue
            key = bytes(rows[0][1]).hex()
            charges = [_Charge(r[0], Spend(r[2], r[3], r[4], r[5], r[6], r[7], r[8]), r[9], r[10], r[11], r[12])
                       for r in rows]
            out.append((_compose(key, charges), [r[0] for r in rows]))
        out.sort(key=lambda tc: tc[0].key)
        return out

    def releases(self, charge_ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """Release rows (dicts), all or those holding ``charge_ids``, oldest first."""
        con = self.connect()
        cols = ["release_id", "state", "time", "updated", "command", "mechanism", "epsilon", "delta", "rho",
                "dither_epsilon", "dither_delta", "unbounded", "profile", "forced", "output", "output_sha256",
                "pid", "host", "label", "info"]
        if charge_ids is None:
            rows = con.execute(f"SELECT {', '.join(cols)} FROM releases ORDER BY time, release_id").fetchall()
        else:
            ids = list(charge_ids)
            rows = []
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                rows += con.execute(
                    f"SELECT DISTINCT {', '.join('r.' + c for c in cols)} FROM releases r JOIN charges c "
                    f"ON c.release_id = r.release_id WHERE c.id IN ({','.join('?' * len(chunk))})", chunk).fetchall()
            rows.sort(key=lambda r: (r[2], r[0]))
        out = []
        for r in rows:
            d = dict(zip(cols, r, strict=True))
            d["info"] = json.loads(d["info"] or "{}")
            d["forced"] = bool(d["forced"])
            out.append(d)
        return out

    def profiles(self) -> dict[str, dict[str, Any]]:
        con = self.connect()
        return {r[0]: {"relation": r[1], "description": r[2], "data": json.loads(r[3])}
                for r in con.execute("SELECT id, relation, description, data FROM profiles")}

    def entries(self) -> list[dict[str, Any]]:
        """Every charge (one per released row) with its release's fields, oldest first: what ``export`` writes."""
        if not self.path.exists():
            return []
        con = self.connect()
        rel = {r["release_id"]: r for r in self.releases()}
        prof = self.profiles()
        out = []
        for cid, rid, row, face in con.execute("SELECT id, release_id, row, face FROM charges ORDER BY id"):
            r = rel[rid]
            keys = [bytes(k).hex() for (k,) in con.execute("SELECT key FROM charge_keys WHERE charge = ?", (cid,))]
            out.append({"v": SCHEMA_VERSION, "charge": cid, "face": bytes(face).hex(), "keys": keys, "row": row,
                        **{k: v for k, v in r.items() if k != "info"}, "profile_description":
                        prof[r["profile"]]["description"], "info": r["info"]})
        return out

    # -- the release protocol
    def reserve(self, faces: Sequence[FaceKey], spends: Spend | Sequence[Spend], profile: Profile, *,
                max_epsilon: float | None = None, force: bool = False, command: str = "privatize",
                output: str | None = None, label: str | None = None, info: Mapping[str, Any] | None = None,
                public: tuple[str, np.ndarray] | None = None, family: str | None = None,
                release_ids: Sequence[str] | None = None) -> Reservation:
        """Check the budget and file pending charges, in one transaction; nothing is filed on refusal.

        ``spends``: one spend per release (several: a sweep); every face is charged each of them.
        Raises :class:`PrivacyBudgetError` when a face would go past ``max_epsilon`` (unless ``force``).
        """
        spend_list = [spends] if isinstance(spends, Spend) else list(spends)
        for s in spend_list:
            s.validate()
        ids = list(release_ids) if release_ids is not None else [os.urandom(16).hex() for _ in spend_list]
        if max_epsilon is not None and not (math.isfinite(max_epsilon) and max_epsilon >= 0):
            raise InputError(f"--max-epsilon {max_epsilon}: must be a finite number >= 0")
        self.recover(only_once=True)
        with self._write() as con:
            known = {f.primary.hex(): self.charges(f.lookup, con) for f in faces}
            after: dict[str, Total] = {}
            for f in faces:
                # rows of this release that are the same face (the same latent twice, or within the margin)
                twins = sum(1 for g in faces if set(g.store) & set(f.lookup)) or 1
                extra = [_Charge(-1 - j, s, profile.id, profile.description, "pending", "new")
                         for j, s in enumerate(spend_list * twins)]
                after[f.primary.hex()] = _compose(f.primary.hex(), known[f.primary.hex()] + extra)
            over = [t for t in after.values() if t.epsilon is None or t.epsilon > max_epsilon + 1e-12] \
                if max_epsilon is not None else []
            if over and not force:
                t = over[0]
                now = _compose(t.key, known[t.key])
                spent = "unbounded" if now.epsilon is None else f"{now.epsilon:.4g}"
                would = f"unbounded ({t.reason})" if t.epsilon is None else f"{t.epsilon:.4g}"
                raise PrivacyBudgetError(
                    f"release refused: face {t.key[:12]} has spent epsilon {spent} in {now.releases} release(s) and "
                    f"this would bring it to {would} > --max-epsilon {max_epsilon:g}"
                    + (f" ({len(over)} of {len(after)} rows over)" if len(after) > 1 else "")
                    + f"; ledger {self.path}; use --force to release anyway")
            now = _now()
            con.execute("INSERT OR IGNORE INTO profiles VALUES (?, ?, ?, ?)",
                        (profile.id, profile.relation, profile.description, json.dumps(dict(profile.data),
                                                                                         sort_keys=True)))
            if public is not None and family is not None and len(public[1]):
                basis = np.ascontiguousarray(public[1], dtype="<f8")
                con.execute("INSERT OR IGNORE INTO public_sets VALUES (?, ?, ?, ?)",
                            (public[0], family, int(basis.shape[1]), basis.tobytes()))
            pid = os.getpid()
            info_text = json.dumps(dict(info or {}), sort_keys=False, allow_nan=False, default=str)
            for rid, s in zip(ids, spend_list, strict=True):
                con.execute(
                    "INSERT INTO releases (release_id, state, time, updated, command, mechanism, epsilon, delta, rho, "
                    "dither_epsilon, dither_delta, unbounded, profile, forced, output, pid, host, proc_start, label, "
                    "info) VALUES (?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (rid, now, now, command, s.mechanism, s.epsilon, s.delta, s.rho, s.dither_epsilon, s.dither_delta,
                     s.unbounded, profile.id, int(bool(force)), output, pid, _HOST, _proc_start(pid), label,
                     info_text))
                for row, f in enumerate(faces):
                    cur = con.execute("INSERT INTO charges (release_id, row, face) VALUES (?, ?, ?)",
                                      (rid, row, f.primary))
                    con.executemany("INSERT OR IGNORE INTO charge_keys VALUES (?, ?)",
                                    [(k, cur.lastrowid) for k in f.store])
        return Reservation(ids, after, list(faces), over, profile=profile.id)

    def set_output(self, res: Reservation, output: str | os.PathLike, sha256: str) -> None:
        """Record the output path and the sha256 of its bytes with the pending charges (before writing it)."""
        with self._write() as con:
            con.executemany("UPDATE releases SET output = ?, output_sha256 = ?, updated = ? "
                            "WHERE release_id = ? AND state = 'pending'",
                            [(str(Path(output).resolve()), sha256, _now(), rid) for rid in res.release_ids])

    def _finish(self, res: Reservation, state: str) -> None:
        if res.state != "pending":
            return
        with self._write() as con:
            con.executemany("UPDATE releases SET state = ?, updated = ? WHERE release_id = ? AND state = 'pending'",
                            [(state, _now(), rid) for rid in res.release_ids])
        res.state = state

    def commit(self, res: Reservation) -> None:
        """The output is on disk: the pending charges become committed."""
        self._finish(res, "committed")

    def cancel(self, res: Reservation) -> None:
        """Nothing was released (refused write, error, interruption): the pending charges are cancelled."""
        self._finish(res, "cancelled")

    def recover(self, *, only_once: bool = False, include_live: bool = False,
                own: bool = False) -> RecoverReport:
        """Resolve pending charges: commit those whose output exists with the recorded sha256, cancel the rest.

        By default only the pending charges of processes that are no longer running on this host are
        resolved (a running process may be between its draw and its write). ``own``: also this process's
        (at the end of a run); ``include_live``: every pending charge (only when no release is running).
        """
        if only_once and self._recovered:
            return RecoverReport()
        self._recovered = True
        if not self.path.exists():
            return RecoverReport()
        con = self.connect()
        report = RecoverReport()
        if con.execute("SELECT 1 FROM releases WHERE state = 'pending' LIMIT 1").fetchone() is None:
            return report
        with self._write() as con:
            rows = con.execute("SELECT release_id, output, output_sha256, pid, host, proc_start FROM releases "
                               "WHERE state = 'pending'").fetchall()
            me = os.getpid()
            for rid, output, digest, pid, host, start in rows:
                mine = pid == me and host == _HOST
                if not include_live and not (own and mine) and (host != _HOST or mine or _alive(pid, start)):
                    report.live.append(rid)
                    continue
                ok = False
                if output and digest:
                    from latentpriv.io import sha256_file

                    with contextlib.suppress(OSError):
                        ok = Path(output).is_file() and sha256_file(output) == digest
                state = "committed" if ok else "cancelled"
                con.execute("UPDATE releases SET state = ?, updated = ? WHERE release_id = ?", (state, _now(), rid))
                (report.committed if ok else report.cancelled).append(rid)
        return report

    # -- maintenance
    def verify(self) -> list[str]:
        """Problems found (empty: fine): SQLite's integrity check, constraint violations, dangling rows."""
        con = self.connect()
        problems = [r[0] for r in con.execute("PRAGMA integrity_check") if r[0] != "ok"]
        problems += [f"foreign key violation in {r[0]} (rowid {r[1]})" for r in con.execute("PRAGMA foreign_key_check")]
        for rid, eps, delta, rho in con.execute("SELECT release_id, epsilon, delta, rho FROM releases"):
            for name, v in (("epsilon", eps), ("rho", rho)):
                if v is not None and not (math.isfinite(v) and v >= 0):
                    problems.append(f"release {rid}: {name} {v}")
            if not (delta is not None and 0 <= delta < 1):
                problems.append(f"release {rid}: delta {delta}")
        n = con.execute("SELECT COUNT(*) FROM charges c LEFT JOIN charge_keys k ON k.charge = c.id "
                        "WHERE k.charge IS NULL").fetchone()[0]
        if n:
            problems.append(f"{n} charge(s) filed under no key")
        pend = con.execute("SELECT COUNT(*) FROM releases WHERE state = 'pending'").fetchone()[0]
        if pend:
            problems.append(f"{pend} pending release(s): run `latentpriv ledger recover` once no release is running")
        return problems

    def import_jsonl(self, source: str | os.PathLike, *, skip_invalid: bool = False) -> dict[str, Any]:
        """Migrate a latentpriv 0.1 JSONL ledger; every line becomes one committed legacy release.

        A torn or invalid line (not JSON, no key, NaN/negative/infinite epsilon, delta outside [0, 1)) is an
        :class:`InputError` naming its line number; with ``skip_invalid`` it is skipped and, when its key can
        be read, that face is marked unbounded (its true spend is unknown).
        """
        import re

        source = Path(source)
        try:
            text = source.read_bytes().decode("utf-8", errors="replace")
        except OSError as exc:
            raise InputError(f"{source}: cannot read ({exc.strerror or exc})") from exc
        good: list[tuple[int, dict[str, Any], Spend]] = []
        bad: list[tuple[int, str, str | None]] = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                e = json.loads(line)
                if not isinstance(e, dict) or not isinstance(e.get("input_sha256"), str):
                    raise ValueError("not a ledger entry (no input_sha256)")
                spend = _legacy_spend(e)
            except (ValueError, TypeError, InputError) as exc:
                m = re.search(r'"input_sha256"\s*:\s*"([0-9a-f]{64})"', line)
                bad.append((i, str(exc).splitlines()[0][:120], m.group(1) if m else None))
                continue
            good.append((i, e, spend))
        if bad and not skip_invalid:
            i, why, _ = bad[0]
            raise InputError(f"{source}:{i}: invalid ledger line ({why})" +
                             (f" and {len(bad) - 1} more" if len(bad) > 1 else "") +
                             "; fix it, or pass --skip-invalid to skip it and mark its face unbounded")
        secret = self.secret
        now = _now()
        with self._write() as con:
            con.execute("INSERT OR IGNORE INTO profiles VALUES (?, ?, ?, ?)",
                        (LEGACY_PROFILE.id, LEGACY_PROFILE.relation, LEGACY_PROFILE.description,
                         json.dumps(dict(LEGACY_PROFILE.data))))
            items = [(i, e, s) for i, e, s in good]
            items += [(i, {"input_sha256": k, "mechanism": "import-invalid"},
                       Spend("import-invalid", None, 0.0, None,
                             unbounded=f"{source.name}:{i} was invalid ({why}) and skipped at import: spend unknown"))
                      for i, why, k in bad if k is not None]
            for i, e, s in items:
                rid = f"import-{hashlib.sha256(f'{source.resolve()}:{i}'.encode()).hexdigest()[:24]}"
                if con.execute("SELECT 1 FROM releases WHERE release_id = ?", (rid,)).fetchone():
                    continue   # imported before
                extra = {k: v for k, v in e.items() if k not in ("epsilon", "delta", "rho_zcdp", "input_sha256")}
                con.execute(
                    "INSERT INTO releases (release_id, state, time, updated, command, mechanism, epsilon, delta, rho, "
                    "unbounded, profile, forced, output, label, info) "
                    "VALUES (?, 'committed', ?, ?, 'import', ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)",
                    (rid, str(e.get("time") or now), now, s.mechanism, s.epsilon, s.delta, s.rho, s.unbounded,
                     LEGACY_PROFILE.id, int(bool(e.get("forced"))), e.get("output"),
                     json.dumps({"imported_from": f"{source}:{i}", **extra}, default=str)))
                key = legacy_key(secret, e["input_sha256"])
                cur = con.execute("INSERT INTO charges (release_id, row, face) VALUES (?, ?, ?)",
                                  (rid, int(e.get("row") or 0), key))
                con.execute("INSERT OR IGNORE INTO charge_keys VALUES (?, ?)", (key, cur.lastrowid))
            con.execute("INSERT OR REPLACE INTO meta VALUES ('imported', ?)", (f"{source.resolve()} at {now}",))
        return {"imported": len(good), "invalid": [{"line": i, "reason": why, "face_marked_unbounded": k is not None}
                                                    for i, why, k in bad]}

    def export_jsonl(self, fh: Any) -> int:
        """Write every charge as one JSON line (what auditors read); returns the number of lines."""
        n = 0
        for e in self.entries():
            fh.write(json.dumps(e, allow_nan=False, default=str) + "\n")
            n += 1
        return n


def _legacy_spend(e: Mapping[str, Any]) -> Spend:
    mech = str(e.get("mechanism", "?"))
    eps, delta, rho = e.get("epsilon"), e.get("delta") or 0.0, e.get("rho_zcdp")
    registered = _registered(mech)
    if e.get("guarantee") == "none" or (eps is None and registered is not None and not registered.private):
        return Spend(mech, None, 0.0, None, unbounded="a seed-mechanism release (no guarantee)").validate()
    if eps is None:
        raise ValueError("epsilon missing")
    for name, v in (("epsilon", eps), ("delta", delta)) + ((("rho_zcdp", rho),) if rho is not None else ()):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"{name} {v!r} is not a number")
    return Spend(mech, float(eps), float(delta), None if rho is None else float(rho)).validate()

"""Artifact audit: attack the saved ``.npy`` bytes of a release, not just the released coordinate.

:mod:`latentpriv.privacy.audit` tests the mechanism on the coordinate. A user publishes a *file*, and the
file carries more than the coordinate: the float rounding of the rest of the latent, its dtype, the layers
that were left alone. This module runs the real release (:func:`latentpriv.privatize` with OpenDP's
samplers, or the CLI's read-release-write path) on both members of a neighbour pair, serialises each
output exactly as ``latentpriv privatize`` writes it (``numpy.save`` of the released array, the bytes of
:func:`latentpriv.io.save_npy`), and lets attackers look only at those bytes, the public parameters and -
in the DP game - both candidate inputs:

* ``coordinate``: the released coordinate ``<out, n>`` (W+: mean over layers), rounded to the noise grid;
* ``sieve``: output-only lattice sieve. For each hypothesis ``a_h`` (the candidates' coordinates) undo the
  shift, ``v = fl_in(out - (atilde^ - a_h) n)``, redo it, ``fl_out(v + (atilde^ - a_h) n)``, and count the
  elements that land exactly on the file's values;
* ``replay``: knows both inputs; replays "input + shift along the directions" from each and counts exact
  matches with the file (the leak of a write-back construction ``out = fl(w + (atilde - a) n)``);
* ``residual``: knows both inputs; which candidate's residual (the part orthogonal to the directions) is
  the output's nearer to - the likelihood ratio of a Gaussian dither of the residual;
* ``grid``: reconstructs the released coordinates under each hypothesis from the directions as given
  and measures their distance to OpenDP's output grid (catches directions that are not exactly
  orthonormal; not run on W+);
* ``lowbits``: the mean number of trailing zero bits of the stored elements (input-lattice remnants).

Each attacker gives a score per release; :func:`latentpriv.privacy.audit.empirical_epsilon` turns the
two samples into an epsilon lower bound (threshold and point events chosen on one half and tested on the
other, Clopper-Pearson intervals, delta-aware), with a Bonferroni correction over every attacker x pair
tested. A pair whose input the release refuses (an :class:`~latentpriv.errors.InputError` or
:class:`~latentpriv.errors.ConfigError`) is reported as ``refused``: refusing is a valid answer.
"""

from __future__ import annotations

import io
import math
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from latentpriv.errors import ConfigError, InputError
from latentpriv.io import npy_bytes
from latentpriv.privacy.audit import empirical_epsilon
from latentpriv.privacy.float_release import orthonormalize

__all__ = [
    "ATTACKERS",
    "ArtifactAuditResult",
    "AttackResult",
    "NeighbourPair",
    "PairAudit",
    "audit_artifact",
    "default_pairs",
    "file_reader",
    "make_pair",
    "npy_bytes",
    "privatize_release",
]

ATTACKERS = ("coordinate", "sieve", "replay", "residual", "grid", "lowbits")
#: attackers that run on the first ``lattice_trials`` releases (per element work); the rest on all ``trials``
LATTICE_ATTACKERS = ("sieve", "replay", "grid")
#: elements processed per chunk by the per-element attackers (bounds memory to ~100 MB)
_CHUNK_ELEMENTS = 2_000_000

Release = Callable[[np.ndarray, "NeighbourPair", Any], tuple[np.ndarray, dict]]
Reader = Callable[[np.ndarray, str], np.ndarray]


def file_reader(x: np.ndarray, space: str, *, warn: Callable[[str], None] | None = None) -> np.ndarray:
    """A :data:`Reader`: ``x`` as ``latentpriv privatize FILE --space SPACE`` reads it from a file and hands it to
    the release (:func:`latentpriv.io.load_latent_input`; dcgan64 for Z, stylegan_ffhq otherwise)."""
    import tempfile
    from pathlib import Path

    from latentpriv.errors import LatentprivError
    from latentpriv.io import load_latent_input

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "latent.npy"
        np.save(path, x)
        try:
            return load_latent_input(path, space=space, model="dcgan64" if space == "z" else "stylegan_ffhq",
                                     warn=warn).latent
        except LatentprivError as exc:  # name the file as a user would see it, not the temp path
            raise type(exc)(str(exc).replace(str(path), "INPUT.npy")) from None


@dataclass(frozen=True)
class NeighbourPair:
    """Two inputs that differ only along direction ``moved`` (up to their own float rounding).

    ``x0``/``x1`` are the latents as the user holds them (a file's array: ``(D,)`` for Z/W, ``(L, D)``
    for W+, in their own dtype). ``surface``: ``"api"`` releases the array with :func:`latentpriv.privatize`
    as it is; ``"cli"`` goes through the CLI's reader first (dtype conversion) like ``latentpriv privatize
    FILE``. ``directions`` is what the user passes (rows, possibly only nearly orthonormal).
    ``role``: ``"worst"`` marks the worst-case pair ``(c - B, c + B)`` used for the tightness check.
    """

    name: str
    x0: np.ndarray
    x1: np.ndarray
    directions: np.ndarray
    moved: int = 0
    space: str = "w"
    surface: str = "cli"
    center: float = 0.0
    layers: tuple[int, ...] | None = None
    mechanism: str = "laplace"
    epsilon: float = 1.0
    delta: float = 0.0
    clip_radius: float = 3.0
    max_trials: int | None = None
    role: str = ""
    note: str = ""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": str(self.x0.dtype), "shape": list(self.x0.shape), "space": self.space,
                "surface": self.surface, "k": int(np.shape(self.directions)[0]), "moved": self.moved,
                "center": self.center, "layers": list(self.layers) if self.layers is not None else None,
                "mechanism": self.mechanism, "epsilon": self.epsilon, "delta": self.delta,
                "clip_radius": self.clip_radius, "note": self.note}


@dataclass(frozen=True)
class AttackResult:
    attacker: str
    epsilon_lb: float
    event: str
    p: float
    q: float
    trials: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class PairAudit:
    """One pair's outcome. ``status``: ``audited`` | ``refused`` (the release refused both inputs: the message
    is in ``refusal``) | ``refused-one-side`` (one input refused, the other released: the refusal itself
    tells the neighbours apart, so the pair fails). ``claimed_epsilon``/``claimed_delta``: the release's total spend from its record."""

    pair: dict[str, Any]
    status: str
    refusal: str = ""
    claimed_epsilon: float | None = None
    claimed_delta: float = 0.0
    coordinate_epsilon: float | None = None
    trials: int = 0
    lattice_trials: int = 0
    out_dtype: str = ""
    header: str = ""
    attacks: tuple[AttackResult, ...] = ()
    checks: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def epsilon_lb(self) -> float:
        return max((a.epsilon_lb for a in self.attacks), default=0.0)

    @property
    def best(self) -> AttackResult | None:
        return max(self.attacks, key=lambda a: a.epsilon_lb) if self.attacks else None

    def summary(self) -> str:
        """One line: the pair, its best attacker's bound against the claim, the trials."""
        name = self.pair["name"]
        if self.status == "refused":
            return f"{name}: refused ({self.refusal})"
        if self.status == "refused-one-side":
            return f"{name}: FAIL: one input refused, the other released ({self.refusal})"
        b = self.best
        claim = "none" if self.claimed_epsilon is None else f"{self.claimed_epsilon:g}"
        return (f"{name}: epsilon_lb {self.epsilon_lb:.3f} ({b.attacker if b else '-'}) vs claimed {claim}, "
                f"{self.trials} trials/side ({self.lattice_trials} lattice), {self.out_dtype}, "
                f"{'PASS' if self.passed else 'FAIL'}")

    @property
    def passed(self) -> bool:
        return self.status == "refused" or (self.claimed_epsilon is not None
                                            and self.epsilon_lb <= self.claimed_epsilon)

    def as_dict(self) -> dict[str, Any]:
        return {"pair": self.pair, "status": self.status, "refusal": self.refusal,
                "claimed_epsilon": self.claimed_epsilon, "claimed_delta": self.claimed_delta,
                "coordinate_epsilon": self.coordinate_epsilon, "trials": self.trials,
                "lattice_trials": self.lattice_trials, "out_dtype": self.out_dtype, "header": self.header,
                "epsilon_lb": self.epsilon_lb, "best_attacker": self.best.attacker if self.best else None,
                "result": "PASS" if self.passed else "FAIL", "attacks": [a.as_dict() for a in self.attacks],
                "checks": self.checks, "seconds": round(self.seconds, 2)}


@dataclass(frozen=True)
class ArtifactAuditResult:
    """``passed``: every audited pair's lower bound <= its claimed (total) epsilon. ``tightness``: the
    coordinate attacker at the worst-case pair with its own 95 % confidence (not Bonferroni-corrected
    over the other tests), and its ratio to the coordinate's epsilon."""

    pairs: tuple[PairAudit, ...]
    confidence: float
    n_tests: int
    tightness: dict[str, Any]
    sampler: dict[str, Any]

    @property
    def epsilon_lb(self) -> float:
        return max((p.epsilon_lb for p in self.pairs), default=0.0)

    @property
    def passed(self) -> bool:
        return all(p.passed for p in self.pairs)

    def as_dict(self) -> dict[str, Any]:
        return {"result": "PASS" if self.passed else "FAIL", "epsilon_lb": self.epsilon_lb,
                "confidence": self.confidence, "bonferroni_tests": self.n_tests, "tightness": self.tightness,
                "sampler": self.sampler, "pairs": [p.as_dict() for p in self.pairs]}


# ------------------------------------------------------------------------------------- pairs


def make_pair(name: str, rng: np.random.Generator, *, dim: int = 512, a0: float = -1.0, a1: float = 1.0,
              dtype: Any = np.float32, k: int = 1, moved: int = 0, center: float = 0.0, space: str = "w",
              num_layers: int | None = None, mixed_layers: bool = False, layers: Sequence[int] | None = None,
              near_orthonormal: float = 0.0, surface: str = "cli", scale: float = 1.0, **kw: Any) -> NeighbourPair:
    """A neighbour pair on random directions: ``x_b = fl_dtype(w + a_b n_moved + sum_j o_j n_j)``.

    ``w`` is a random N(0, scale^2) vector with its component along the directions removed, the other
    directions' coordinates ``o_j`` are fixed random values, so the two inputs differ only along
    ``n_moved`` (by ``a1 - a0``) up to the rounding of their own dtype. W+ (``num_layers``): the same row
    tiled over the layers, or (``mixed_layers``) a different residual and coordinate offset per layer,
    with the same difference ``a1 - a0`` on every layer. ``near_orthonormal``: the directions handed to the
    release have pairwise cosines of about this size instead of 0.
    """
    basis = np.linalg.qr(rng.normal(size=(dim, k)))[0].T  # [k, D] orthonormal
    given = basis
    if near_orthonormal:
        s = np.triu(rng.choice([-1.0, 1.0], size=(k, k)), 1)
        given = basis + 0.5 * near_orthonormal * (s + s.T) @ basis
        given = given / np.linalg.norm(given, axis=1, keepdims=True)
    others = rng.uniform(-1.0, 1.0, size=k)
    n_rows = num_layers or 1
    rows0, rows1 = [], []
    base = rng.normal(scale=scale, size=dim)
    for layer in range(n_rows):
        w = rng.normal(scale=scale, size=dim) if (mixed_layers and layer) else base
        w = w - (w @ basis.T) @ basis
        jitter = rng.uniform(-0.5, 0.5) if (mixed_layers and layer) else 0.0
        offs = others.copy()
        offs[moved] = 0.0
        common = w + offs @ basis
        rows0.append(common + (a0 + jitter) * basis[moved])
        rows1.append(common + (a1 + jitter) * basis[moved])
    x0, x1 = np.stack(rows0), np.stack(rows1)
    if num_layers is None:
        x0, x1 = x0[0], x1[0]
    dt = np.dtype(dtype)
    return NeighbourPair(name=name, x0=x0.astype(dt), x1=x1.astype(dt), directions=given, moved=moved,
                         space=space, surface=surface, center=center,
                         layers=tuple(int(i) for i in layers) if layers is not None else None, **kw)


def default_pairs(*, quick: bool = False, seed: int = 0, epsilon: float = 1.0, trials_cap: int | None = None,
             wp_cap: int | None = 2_000) -> list[NeighbourPair]:
    """The neighbour-pair search of issue 11: dtypes, magnitudes inside and outside the clamp, c != 0,
    k = 3, near-orthonormal directions, W+ tiled / mixed / layer subsets, dcgan64 Z.

    ``quick``: a few small pairs (D = 64, 4 W+ layers) for tests and ``latentpriv audit artifact --quick``.
    ``trials_cap`` caps the releases per side of every pair but the worst-case one (role ``"worst"``, the
    tightness check); ``wp_cap`` those of the W+ pairs (a W+ release dithers L*D numbers). The latents are
    synthetic (random residuals) on random orthonormal directions, deterministic given ``seed`` (the
    releases themselves use OpenDP's unseeded samplers).
    """

    def pair(name: str, **kw: Any) -> NeighbourPair:
        # each pair's latents depend only on (seed, name): adding or reordering pairs changes no other pair
        return make_pair(name, np.random.default_rng([seed, zlib.crc32(name.encode())]), **kw)

    e: dict[str, Any] = {"epsilon": epsilon, "max_trials": trials_cap}
    if quick:
        d, L = 64, 4
        return [
            pair("W float32, a = +-3 (worst case)", dim=d, a0=-3.0, a1=3.0, role="worst", epsilon=epsilon),
            pair("W float32, a = 10 vs 50 (outside the clamp)", dim=d, a0=10.0, a1=50.0, **e),
            pair("W float16 file via the CLI, a = +-1", dim=d, dtype=np.float16, **e),
            pair("k = 3 near-orthonormal (5e-6) float64 API, along n_2", dim=d, k=3, moved=1,
                 dtype=np.float64, near_orthonormal=5e-6, surface="api", **e),
            pair("W+ mixed layers, --layers 0-1", dim=d, space="wp", num_layers=L, mixed_layers=True,
                 layers=(0, 1), **e),
        ]
    D, L = 512, 18
    wp = {"epsilon": epsilon, "max_trials": min((c for c in (trials_cap, wp_cap) if c), default=None)}
    return [
        pair("dcgan64 Z (100) float32, a = +-3 (worst case)", dim=100, a0=-3.0, a1=3.0, space="z",
             role="worst", epsilon=epsilon),
        pair("W float32, a = +-1", dim=D, **e),
        pair("W float32, a = 10 vs 50 (outside the clamp)", dim=D, a0=10.0, a1=50.0, **e),
        pair("W float16 file via the CLI, a = +-1", dim=D, dtype=np.float16, **e),
        pair("W float16 array via the API, a = +-1", dim=D, dtype=np.float16, surface="api", **e),
        pair("W float64 array via the API, a = +-1", dim=D, dtype=np.float64, surface="api", **e),
        pair("k = 3 near-orthonormal (5e-6) float64 API, along n_2", dim=D, k=3, moved=1,
             dtype=np.float64, near_orthonormal=5e-6, surface="api", **e),
        pair("W+ 18x512 mixed layers, --layers 0-7", dim=D, space="wp", num_layers=L, mixed_layers=True,
             layers=tuple(range(8)), **wp),
        pair("W float32, a = +-2.9", dim=D, a0=-2.9, a1=2.9, **e),
        pair("dcgan64 Z (100) float32, a = +-1", dim=100, space="z", **e),
        pair("W float64 file via the CLI, a = +-1", dim=D, dtype=np.float64, **e),
        pair("W float32, c = 1.5, a = 0.5 vs 2.5", dim=D, a0=0.5, a1=2.5, center=1.5, **e),
        pair("k = 3 float32, along n_2", dim=D, k=3, moved=1, **e),
        pair("W gaussian (delta 1e-5) float32, a = +-1", dim=D, mechanism="gaussian", delta=1e-5,
             **e),
        pair("W float32, a = 10 vs 600 (record norm above max_norm)", dim=D, a0=10.0, a1=600.0, **e),
        pair("W+ 18x512 tiled float32, a = +-1", dim=D, space="wp", num_layers=L, **wp),
        pair("W+ 18x512 mixed layers float32, a = +-1", dim=D, space="wp", num_layers=L,
             mixed_layers=True, **wp),
    ]


# ------------------------------------------------------------------------------------- the release


def privatize_release(batch: np.ndarray, pair: NeighbourPair, noise: Any) -> tuple[np.ndarray, dict]:
    """The library's release of ``batch`` (each row one record) with ``pair``'s parameters."""
    from latentpriv.privacy.mechanisms import privatize

    res = privatize(batch, pair.directions, epsilon=pair.epsilon, delta=pair.delta, mechanism=pair.mechanism,
                    clip_radius=pair.clip_radius, center=pair.center, layers=pair.layers, noise=noise)
    return np.asarray(res.latent), res.record


class _ZeroNoise:
    """A noise source that adds no noise (grid rounding only): checks that a batched release gives each
    row the same bytes as a release of that row alone."""

    name = "zero"
    reproducible = True
    for_release = False

    def __init__(self, grid_k: int = -20) -> None:
        self.grid_k = grid_k

    def _grid(self, values) -> np.ndarray:
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        return np.ldexp(np.rint(np.ldexp(v, -self.grid_k)), self.grid_k)

    def laplace(self, values, scale):
        return self._grid(values)

    def gaussian(self, values, sigma, grid_k=None):
        return self._grid(values)

    def normal(self, sigma, size):
        return np.zeros(int(size))

    def bernoulli(self, p, size):
        return np.ones(int(size), dtype=bool)

    def keep_sign(self, epsilon, size):
        return np.ones(int(size), dtype=bool)

    def grid_slack(self) -> float:
        return math.ldexp(1.0, self.grid_k)

    def describe(self) -> dict:
        return {"sampler": self.name, "grid": f"2^{self.grid_k}", "reproducible": True, "for_release": False,
                "seed": None}


@dataclass
class _Files:
    """The released files of one side, parsed back: ``out [T, L, D]`` in the stored dtype, ``payload``
    the raw data bytes ``[T, nbytes]``, ``header`` the .npy header (identical for every trial)."""

    out: np.ndarray
    payload: np.ndarray
    header: bytes
    record: dict


def _release_files(pair: NeighbourPair, x: np.ndarray, trials: int, *, release: Release, noise: Any,
                   read_input: Reader | None, chunk: int) -> _Files:
    """Release ``x`` ``trials`` times (batched, one record per row) and return the parsed files."""
    if pair.surface == "cli":
        if read_input is None:
            raise ConfigError("a CLI-surface pair needs read_input (the CLI's latent reader)")
        lat = read_input(x, pair.space)        # (1, ...) as the CLI hands it to the release
        row = lat[0]
    else:
        row = x
    headers: set[bytes] = set()
    outs, payloads, record = [], [], {}
    done = 0
    while done < trials:
        m = min(chunk, trials - done)
        released, record = release(np.repeat(row[None], m, axis=0), pair, noise)
        for i in range(m):
            b = npy_bytes(np.asarray(released[i]).reshape(x.shape))
            f = io.BytesIO(b)
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(f)
            start = f.tell()
            headers.add(b[:start])
            payloads.append(np.frombuffer(b, dtype=np.uint8, offset=start))
            outs.append(np.frombuffer(b, dtype=dtype, offset=start).reshape(shape))
        done += m
    if len(headers) != 1:
        raise RuntimeError(f"{pair.name}: the .npy header differs between releases of one input")
    out = np.stack(outs)
    L = x.shape[0] if x.ndim == 2 else 1
    return _Files(out.reshape(trials, L, -1), np.stack(payloads), headers.pop(), record)


def _batch_consistent(pair: NeighbourPair, x: np.ndarray, release: Release, read_input: Reader | None) -> Any:
    """True when a batch of 3 identical rows gives each row the bytes of a single-row release (no noise)."""
    try:
        zero = _ZeroNoise()
        batch = _release_files(pair, x, 3, release=release, noise=zero, read_input=read_input, chunk=3)
        single = _release_files(pair, x, 1, release=release, noise=zero, read_input=read_input, chunk=1)
    except Exception as exc:  # the check is advisory: report why it could not run
        return f"not run: {type(exc).__name__}: {exc}"
    return bool(all(np.array_equal(batch.payload[i], single.payload[0]) for i in range(3)))


# ------------------------------------------------------------------------------------- attackers


@dataclass
class _Knowledge:
    """What the attackers know: both candidate inputs (float64, ``[L, D]``), the input lattice, the
    directions as given (normalised) and the orthonormal basis, the moved direction and the noise grid."""

    x: tuple[np.ndarray, np.ndarray]
    in_dtype: np.dtype
    given: np.ndarray
    basis: np.ndarray
    moved: int
    grid: float


def _grid_round(v: np.ndarray, grid: float) -> np.ndarray:
    return np.rint(v / grid) * grid


def _chunks(n: int, per: int):
    step = max(1, _CHUNK_ELEMENTS // max(per, 1))
    for s in range(0, n, step):
        yield slice(s, min(n, s + step))


def _attack_coordinate(files: _Files, kn: _Knowledge, n: int) -> np.ndarray:
    a = (files.out[:n].astype(np.float64) @ kn.basis[kn.moved]).mean(axis=1)
    return _grid_round(a, kn.grid)  # float32 write-back smears OpenDP's grid values (atoms) by ~1e-7


def _match_counts(files: _Files, kn: _Knowledge, n: int, *, sieve: bool) -> np.ndarray:
    """Score = exact matches under hypothesis 1 minus under hypothesis 0 (per release)."""
    N = kn.basis
    counts = np.zeros((2, n))
    per = files.out.shape[1] * files.out.shape[2]
    for sl in _chunks(n, per):
        out = files.out[sl]
        out64 = out.astype(np.float64)
        for h in (0, 1):
            xh = kn.x[h]
            if sieve:  # output only: undo the shift under the hypothesis, snap to the input's lattice, redo
                s = out64 @ N.T - xh @ N.T              # [t, L, k] atilde^ - a_h
                v = (out64 - s @ N).astype(kn.in_dtype).astype(np.float64)
            else:      # replay from the known input
                s = (out64 - xh) @ N.T
                v = xh
            pred = (v + s @ N).astype(out.dtype)
            counts[h, sl] = (pred == out).sum(axis=(1, 2))
    return counts[1] - counts[0]


def _attack_residual(files: _Files, kn: _Knowledge, n: int) -> np.ndarray:
    N = kn.basis
    r = [x - (x @ N.T) @ N for x in kn.x]
    score = np.empty(n)
    per = files.out.shape[1] * files.out.shape[2]
    for sl in _chunks(n, per):
        out64 = files.out[sl].astype(np.float64)
        ro = out64 - (out64 @ N.T) @ N
        score[sl] = ((ro - r[0]) ** 2).sum(axis=(1, 2)) - ((ro - r[1]) ** 2).sum(axis=(1, 2))
    return score


def _attack_grid(files: _Files, kn: _Knowledge, n: int) -> np.ndarray:
    G = kn.given
    pinv = np.linalg.pinv(G.T)                      # [k, D]: coefficients in the given (oblique) basis
    dist = np.zeros((2, n))
    for sl in _chunks(n, files.out.shape[1] * files.out.shape[2]):
        out64 = files.out[sl].astype(np.float64)
        for h in (0, 1):
            xh = kn.x[h]
            a_hat = ((out64 - xh) @ pinv.T).mean(axis=1) + (xh @ G.T).mean(axis=0)  # [t, k]
            frac = a_hat / kn.grid
            dist[h, sl] = np.abs(frac - np.rint(frac)).sum(axis=1)
    return dist[0] - dist[1]


def _attack_lowbits(files: _Files, kn: _Knowledge, n: int) -> np.ndarray:
    item = files.out.dtype.itemsize
    bits = 8 * item
    u = np.ascontiguousarray(files.payload[:n]).view(f"<u{item}")
    low = u & (~u + np.array(1, dtype=u.dtype))      # lowest set bit
    tz = np.where(low == 0, bits, np.log2(np.maximum(low, 1).astype(np.float64)))
    return tz.mean(axis=1)


def _run_attacker(name: str, files: _Files, kn: _Knowledge, n: int) -> np.ndarray:
    if name == "coordinate":
        return _attack_coordinate(files, kn, n)
    if name == "sieve":
        return _match_counts(files, kn, n, sieve=True)
    if name == "replay":
        return _match_counts(files, kn, n, sieve=False)
    if name == "residual":
        return _attack_residual(files, kn, n)
    if name == "grid":
        return _attack_grid(files, kn, n)
    if name == "lowbits":
        return _attack_lowbits(files, kn, n)
    raise ValueError(f"unknown attacker {name!r}")


def _applicable(name: str, pair: NeighbourPair) -> bool:
    return not (name == "grid" and pair.space == "wp")


# ------------------------------------------------------------------------------------- the audit


def _claim(record: dict) -> tuple[float | None, float, float | None]:
    """(total epsilon, total delta, coordinate epsilon) of a release from its record."""
    spend = record.get("spend")
    coord = record.get("epsilon")
    if isinstance(spend, dict) and "epsilon" in spend:
        eps = spend.get("epsilon")
        return (None if eps is None else float(eps)), float(spend.get("delta") or 0.0), coord
    guarantee = record.get("guarantee", {})
    if guarantee.get("type") == "none":
        return None, 0.0, None
    return float(record["epsilon"]), float(record.get("delta") or 0.0), coord


def audit_artifact(pairs: Sequence[NeighbourPair] | None = None, *, trials: int = 20_000,
                   lattice_trials: int = 2_000, confidence: float = 0.95, attackers: Sequence[str] = ATTACKERS,
                   release: Release | None = None, read_input: Reader | None = None, noise: Any = None,
                   chunk: int = 1_000, progress: Callable[[PairAudit], None] | None = None,
                   family: Sequence[NeighbourPair] | None = None) -> ArtifactAuditResult:
    """Audit the saved bytes of releases over ``pairs`` (default :func:`default_pairs`).

    Args:
        pairs: neighbour pairs; each pair's ``max_trials`` caps its releases per side.
        trials: releases per side for the scalar attackers (>= 40).
        lattice_trials: the first this many releases per side go to the per-element attackers
            (``sieve``, ``replay``, ``grid``).
        confidence: simultaneous confidence over all attackers x pairs (Bonferroni).
        attackers: subset of :data:`ATTACKERS`.
        release: ``release(batch, pair, noise) -> (released batch, record)``; default
            :func:`privatize_release` (:func:`latentpriv.privatize`).
        read_input: the CLI's latent reader ``(array as in the file, space) -> (1, ...) latent`` for
            ``surface="cli"`` pairs (:func:`file_reader`).
        noise: the noise source; default OpenDP's samplers (what a release uses).
        chunk: rows per release call, when a batch gives each row the bytes of a one-row release (checked per
            pair with a noiseless source; otherwise every file is released alone, as the CLI does).
        progress: called with each pair's :class:`PairAudit` as soon as it is done.
        family: the pairs the Bonferroni correction counts (default ``pairs``): give the whole search when
            auditing part of it, so that its bounds can stand beside the others'.

    Returns:
        :class:`ArtifactAuditResult`.
    """
    _check_audit_args(trials, lattice_trials, confidence, attackers)
    pairs = list(default_pairs() if pairs is None else pairs)
    release = release or privatize_release
    if noise is None:
        from latentpriv.privacy.noise import make_noise_source

        noise = make_noise_source(None)
    grid = noise.grid_slack() if hasattr(noise, "grid_slack") else 2.0 ** -20
    # the number of tests is fixed by the configuration (not by the data): every applicable attacker x pair
    n_tests = sum(1 for p in (pairs if family is None else family) for a in attackers if _applicable(a, p))
    ctx = _AuditContext(trials, lattice_trials, 1.0 - confidence, n_tests, tuple(attackers), release, read_input,
                        noise, chunk, grid)
    results: list[PairAudit] = []
    tightness: dict[str, Any] = {}
    for pair in pairs:
        pa = _audit_pair(pair, ctx, tightness)
        results.append(pa)
        if progress:
            progress(pa)
    sampler = noise.describe() if hasattr(noise, "describe") else {"sampler": type(noise).__name__}
    return ArtifactAuditResult(tuple(results), confidence, n_tests, tightness, sampler)


def _check_audit_args(trials: Any, lattice_trials: Any, confidence: float, attackers: Sequence[str]) -> None:
    for name, value in (("trials", trials), ("lattice_trials", lattice_trials)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 40:
            raise ConfigError(f"{name} = {value!r} must be an integer >= 40")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence = {confidence!r} must be in (0, 1)")
    unknown = sorted(set(attackers) - set(ATTACKERS))
    if unknown:
        raise ConfigError(f"unknown attacker(s) {unknown}; choose from {ATTACKERS}")


@dataclass(frozen=True)
class _AuditContext:
    """The settings every pair of one audit shares (``alpha``: 1 - confidence, before Bonferroni over
    ``n_tests``; ``grid``: the noise source's grid slack)."""

    trials: int
    lattice_trials: int
    alpha: float
    n_tests: int
    attackers: tuple[str, ...]
    release: Release
    read_input: Reader | None
    noise: Any
    chunk: int
    grid: float


def _audit_pair(pair: NeighbourPair, ctx: _AuditContext, tightness: dict[str, Any]) -> PairAudit:
    """Release both sides of ``pair``, then run every applicable attacker on the saved bytes. Fills
    ``tightness`` from the first worst-case pair's coordinate attacker."""
    t0 = time.perf_counter()
    n_rel = min(ctx.trials, pair.max_trials) if pair.max_trials else ctx.trials
    n_lat = min(ctx.lattice_trials, n_rel)
    # a batched release is only used when it gives each row the bytes of a one-row release (BLAS may sum
    # a batch's dot products in another order than a single row's, which moves last bits)
    consistent = _batch_consistent(pair, pair.x0, ctx.release, ctx.read_input)
    rows = ctx.chunk if consistent is True else 1
    files, refusals = [], []
    for x in (pair.x0, pair.x1):
        try:
            files.append(_release_files(pair, x, n_rel, release=ctx.release, noise=ctx.noise,
                                        read_input=ctx.read_input, chunk=rows))
        except (InputError, ConfigError) as exc:
            refusals.append(str(exc))
    if refusals:
        # refusing both is a valid answer; refusing one only publishes which side of the check the private
        # input was on (a distinguishing event of probability 1)
        status = "refused" if len(refusals) == 2 else "refused-one-side"
        return PairAudit(pair.describe(), status, refusal=refusals[0], seconds=time.perf_counter() - t0)
    eps, delta, coord_eps = _claim(files[0].record)
    x64 = tuple(np.asarray(x, dtype=np.float64).reshape(files[0].out.shape[1:]) for x in (pair.x0, pair.x1))
    given = np.asarray(pair.directions, dtype=np.float64)
    given = given / np.linalg.norm(given, axis=1, keepdims=True)
    # the library is public: the attacker computes the release's own basis, to the bit (a private copy of
    # Gram-Schmidt differs in the last bits for about a third of the direction sets, which blunts the
    # exact-match attackers)
    kn = _Knowledge(x64, pair.x0.dtype, given, orthonormalize(pair.directions), pair.moved, ctx.grid)
    attacks = []
    for name in ctx.attackers:
        if not _applicable(name, pair):
            continue
        n = n_lat if name in LATTICE_ATTACKERS else n_rel
        s0, s1 = (_run_attacker(name, f, kn, n) for f in files)
        r = empirical_epsilon(s0, s1, delta=delta, alpha=ctx.alpha, n_tests=ctx.n_tests)
        attacks.append(AttackResult(name, r["epsilon_lb"], r["event"], r["p"], r["q"], n))
        if name == "coordinate" and pair.role == "worst" and not tightness:
            own = empirical_epsilon(s0, s1, delta=delta, alpha=ctx.alpha)
            tightness.update({"pair": pair.name, "epsilon_lb": own["epsilon_lb"], "event": own["event"],
                              "coordinate_epsilon": coord_eps, "trials": n,
                              "ratio": own["epsilon_lb"] / coord_eps if coord_eps else None})
    checks = {
        "records_equal": _comparable(files[0].record) == _comparable(files[1].record),
        "headers_equal": files[0].header == files[1].header,
        "batch_consistent": consistent,
        "rows_per_release": rows,
    }
    if tightness.get("pair") == pair.name:
        checks["tightness"] = tightness
    return PairAudit(pair.describe(), "audited", claimed_epsilon=eps, claimed_delta=delta,
                     coordinate_epsilon=coord_eps, trials=n_rel, lattice_trials=n_lat,
                     out_dtype=str(files[0].out.dtype), header=files[0].header[10:].decode("latin1").strip(),
                     attacks=tuple(attacks), checks=checks, seconds=time.perf_counter() - t0)


_VOLATILE = ("release_id", "versions", "latent", "warnings")


def _comparable(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in _VOLATILE}



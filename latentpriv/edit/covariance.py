"""A generator's latent covariance Sigma, estimated from its own samples, cached, and what it is for.

``privatize`` releases the coordinates ``a = w @ N.T`` of a latent along protected directions ``N``
and keeps a residual ``r = w - a @ U``. With the orthogonal InterFaceGAN split (``U = N``) the residual
is uncorrelated with ``a`` only when the latent distribution is isotropic; StyleGAN's W is not, so a
linear regression can predict ``a`` from ``r``. The oblique split ``U = (N Sigma N^T)^{-1} N Sigma``
(``latentpriv.privacy.mechanisms.split_basis``) makes ``Cov(r, a) = 0`` under ``Sigma``. This module
provides ``Sigma`` and the measurement of what is left:

* :func:`estimate_covariance`: mean and covariance of a model's latents (Z: ``sample_z``; W: the mapping
  of those codes, before truncation, as ``generate``/``invert`` produce W latents; W+ layers equal W, so
  W+ uses W's statistics) from ``num`` samples, plus a separate held-out sample summarised by its own
  mean and covariance. Float64 accumulation, batches merged with Chan et al.'s pairwise update.
* a cache of ``.npz`` files (no pickles) under ``<asset dir>/covariance/`` keyed by the model file's
  sha256, the space, ``num``, ``heldout_num`` and the sampler seed (:func:`save_covariance`,
  :func:`load_covariance`, :func:`covariance_for`, :func:`cached_entries`);
* :func:`residual_r2`: the held-out R^2 of each protected coordinate from the residual, for any split,
  computed analytically from the stored moments (no samples kept).

R^2 here is the *linear* predictability of a coordinate from the residual; a zero value does not rule
out non-linear dependence (exactly zero dependence only holds for Gaussian latents).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from latentpriv.errors import AssetError, InputError

if TYPE_CHECKING:
    from latentpriv.models.protocol import Generator

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_HELDOUT_NUM",
    "DEFAULT_NUM",
    "DEFAULT_SEED",
    "FORMAT",
    "LatentCovariance",
    "cache_dir_for_write",
    "cache_path",
    "cached_entries",
    "covariance_for",
    "estimate_covariance",
    "load_covariance",
    "model_sha256",
    "moments",
    "read_covariance",
    "residual_r2",
    "save_covariance",
    "spectrum_summary",
]

#: Samples for Sigma by default: the standard error of a covariance entry is ~ sigma_i sigma_j / sqrt(N),
#: and the mapping network is cheap (a few seconds per 100k on a CPU).
DEFAULT_NUM = 100_000
DEFAULT_HELDOUT_NUM = 20_000
DEFAULT_SEED = 0
DEFAULT_BATCH_SIZE = 4096
FORMAT = "latentpriv.covariance/1"
_ARRAYS = ("mean", "cov", "heldout_mean", "heldout_cov")
_SHA_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, eq=False)
class LatentCovariance:
    """Moments of a model's latent distribution in one space (arrays float64, read-only).

    ``mean [D]`` and ``cov [D, D]`` (unbiased, symmetric) come from ``num`` samples; ``heldout_mean``
    and ``heldout_cov`` from ``heldout_num`` further, independent samples (used only to evaluate).
    ``space`` is ``"z"`` or ``"w"`` (W+ uses W's). ``seed`` is the torch sampler seed (None if unknown);
    ``path`` the cache file it was read from or written to, if any.
    """

    model: str
    model_sha256: str | None
    space: str
    num: int
    dim: int
    mean: np.ndarray
    cov: np.ndarray
    heldout_mean: np.ndarray
    heldout_cov: np.ndarray
    heldout_num: int
    seed: int | None = None
    path: str | None = None

    def __post_init__(self) -> None:
        for name in _ARRAYS:
            arr = np.array(getattr(self, name), dtype=np.float64, copy=True)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        _check_moments(self, where=self.path or "covariance")

    @property
    def cov_sha256(self) -> str:
        """sha256 of ``cov``'s float64 little-endian bytes (names the Sigma a release used)."""
        return hashlib.sha256(np.ascontiguousarray(self.cov, dtype="<f8").tobytes()).hexdigest()

    def describe(self) -> dict[str, Any]:
        """Provenance for records (no arrays)."""
        return {"model": self.model, "model_sha256": self.model_sha256, "space": self.space, "num": self.num,
                "heldout_num": self.heldout_num, "dim": self.dim, "seed": self.seed,
                "cov_sha256": self.cov_sha256, "path": self.path}

    def with_path(self, path: str | os.PathLike | None) -> LatentCovariance:
        return dataclasses.replace(self, path=None if path is None else str(path))


def _check_moments(s: LatentCovariance, *, where: str) -> None:
    """Shapes, finiteness, symmetry and positive semi-definiteness; raises AssetError naming ``where``."""
    D = s.dim
    if s.space not in ("z", "w"):
        raise AssetError(f"{where}: space {s.space!r} is not z or w")
    if D < 1 or s.num < 2 or s.heldout_num < 2:
        raise AssetError(f"{where}: dim {D}, num {s.num}, heldout_num {s.heldout_num} (need dim >= 1, nums >= 2)")
    for name, shape in (("mean", (D,)), ("cov", (D, D)), ("heldout_mean", (D,)), ("heldout_cov", (D, D))):
        arr = getattr(s, name)
        if arr.shape != shape:
            raise AssetError(f"{where}: {name} has shape {arr.shape}, expected {shape}; delete the file and "
                             "re-estimate (`latentpriv boundary covariance --force`)")
        if not np.isfinite(arr).all():
            raise AssetError(f"{where}: {name} holds NaN or inf; delete the file and re-estimate")
    for name in ("cov", "heldout_cov"):
        c = getattr(s, name)
        scale = float(np.max(np.abs(c))) or 1.0
        if not np.allclose(c, c.T, rtol=0.0, atol=1e-12 * scale):
            raise AssetError(f"{where}: {name} is not symmetric; delete the file and re-estimate")
        try:  # positive semi-definite up to rounding (Cholesky is ~10x cheaper than eigenvalues)
            np.linalg.cholesky(c + np.eye(D) * (1e-9 * scale))
        except np.linalg.LinAlgError:
            raise AssetError(f"{where}: {name} is not positive semi-definite; delete the file and "
                             "re-estimate") from None


# ------------------------------------------------------------------------------------------ moments


class _Moments:
    """Running count, mean and scatter matrix (float64), merged per batch (Chan, Golub & LeVeque 1979).

    Centring each batch on its own mean before the outer product avoids the cancellation of
    ``E[x x^T] - m m^T`` when the mean is large compared to the spread (StyleGAN's W is).
    """

    def __init__(self) -> None:
        self.n = 0
        self.mean: Any = None
        self.m2: Any = None

    def update(self, x) -> None:
        """``x [b, D]``: a numpy array or a torch tensor (accumulated on its device in float64)."""
        import torch

        x = x.to(torch.float64) if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x, np.float64))
        b = int(x.shape[0])
        if b == 0:
            return
        mean_b = x.mean(dim=0)
        xc = x - mean_b
        m2_b = xc.T @ xc
        if self.n == 0:
            self.n, self.mean, self.m2 = b, mean_b, m2_b
            return
        n = self.n + b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (b / n)
        self.m2 = self.m2 + m2_b + torch.outer(delta, delta) * (self.n * b / n)
        self.n = n

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mean [D], unbiased covariance [D, D])`` as float64 numpy, the covariance exactly symmetric."""
        mean = self.mean.cpu().numpy()
        cov = self.m2.cpu().numpy() / (self.n - 1)
        return mean, 0.5 * (cov + cov.T)


def moments(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(mean [D], unbiased covariance [D, D])`` of ``samples [n, D]`` in float64 (same maths as the estimator)."""
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise InputError(f"samples have shape {x.shape}, expected (n >= 2, D)")
    acc = _Moments()
    acc.update(x)
    return acc.result()


def _space_of(G: Generator, space: str | None) -> str:
    s = _norm_space(space if space is not None else G.default_space)
    if s not in G.latent_spaces:
        raise InputError(f"model {G.name!r} has no {s.upper()} space (it has {', '.join(G.latent_spaces)})")
    return s


def _latents(G: Generator, z, space: str):
    """Latents privatize would see for codes ``z``: Z as drawn, or W before truncation."""
    if space == "z":
        return z
    # not in the contract: StyleGAN's official Z normalisation, so W matches its synthesize(z) to the bit
    pre = getattr(G, "preprocess_z", None)
    return G.mapping(pre(z) if pre is not None else z)


def estimate_covariance(G: Generator, *, space: str | None = None, num: int = DEFAULT_NUM, heldout_num: int = DEFAULT_HELDOUT_NUM,
                        generator, device=None, batch_size: int = DEFAULT_BATCH_SIZE,
                        progress: Callable[[int], None] | None = None) -> LatentCovariance:
    """Estimate the moments of ``G``'s latents in ``space`` from its own samples.

    Args:
        G: a generator (:class:`latentpriv.models.protocol.Generator`: ``sample_z``, ``mapping``, ``info``).
        space: ``"z"``, ``"w"`` or ``"wp"`` (same as W); default the model's default space.
        num: samples for ``mean``/``cov`` (>= 2); heldout_num: further samples for the held-out moments.
        generator: the ``torch.Generator`` the codes are drawn from (first ``num``, then ``heldout_num``).
        device: where the float64 sums run (default the model's device).
        batch_size: codes per mapping call.
        progress: called with the number of samples done after each batch.
    """
    import torch

    space = _space_of(G, space)
    for name, v in (("num", num), ("heldout_num", heldout_num), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (1 if name == "batch_size" else 2):
            raise InputError(f"{name} = {v!r}: must be an integer >= {1 if name == 'batch_size' else 2}")
    dev = torch.device(device) if device is not None else None
    parts = []
    for total in (int(num), int(heldout_num)):
        acc = _Moments()
        done = 0
        with torch.no_grad():
            while done < total:
                b = min(int(batch_size), total - done)
                x = _latents(G, G.sample_z(b, generator), space)
                if dev is not None:
                    x = x.to(dev)
                acc.update(x)
                done += b
                if progress is not None:
                    progress(b)
        parts.append(acc.result())
    (mean, cov), (h_mean, h_cov) = parts
    return LatentCovariance(model=str(G.name), model_sha256=G.info().get("sha256"), space=space,
                            num=int(num), dim=int(mean.shape[0]), mean=mean, cov=cov, heldout_mean=h_mean,
                            heldout_cov=h_cov, heldout_num=int(heldout_num), seed=_seed_of(generator))


def _seed_of(generator) -> int | None:
    try:
        return int(generator.initial_seed())
    except (AttributeError, RuntimeError):
        return None


# ------------------------------------------------------------------------------------------ R^2


def residual_r2(stats: LatentCovariance, directions, U) -> list[float]:
    """Held-out R^2 of each coordinate ``a_i = <w, n_i>`` predicted linearly from ``r = w - (w @ N.T) @ U``.

    The regression (with intercept) is fitted on the moments of the ``num`` sample (ordinary least
    squares: ``beta = Cov(r)^+ Cov(r, a_i)``; ``Cov(r)`` is singular, rank ``D - k`` for a split with
    ``U @ N.T = I``, so the pseudo-inverse drops its numerically-zero eigenvalues) and evaluated on the
    held-out moments: ``1 - E_h[(a_i - beta^T r - b0)^2] / Var_h(a_i)``, with the population (1/n)
    held-out moments, i.e. exactly ``sklearn.metrics.r2_score`` on the held-out sample. Values near 0
    (or slightly below) mean the residual carries no linear information about the coordinate.

    Args:
        stats: the moments (see :func:`estimate_covariance`).
        directions: ``N [k, D]`` (or ``[D]``), the protected directions.
        U: ``[k, D]`` (or ``[D]``), the split basis the release uses (``U = N``: orthogonal split).
    Returns:
        ``k`` floats.
    """
    N = np.atleast_2d(np.asarray(directions, dtype=np.float64))
    Ub = np.atleast_2d(np.asarray(U, dtype=np.float64))
    D = stats.dim
    if N.ndim != 2 or N.shape[1] != D or Ub.shape != N.shape:
        raise InputError(f"directions {N.shape} and U {Ub.shape} must both be (k, {D})")
    if not (np.isfinite(N).all() and np.isfinite(Ub).all()):
        raise InputError("directions and U must be finite")
    P = np.eye(D) - N.T @ Ub                       # r = w @ P
    S, mu = stats.cov, stats.mean
    c_rr = P.T @ S @ P
    c_ra = P.T @ S @ N.T                           # [D, k]
    vals, vecs = np.linalg.eigh(0.5 * (c_rr + c_rr.T))
    keep = vals > 1e-10 * max(float(vals[-1]), 1e-300)
    beta = vecs[:, keep] @ ((vecs[:, keep].T @ c_ra) / vals[keep][:, None])   # [D, k]
    b0 = mu @ N.T - (mu @ P) @ beta                                           # [k]
    n_h = stats.heldout_num
    S_h = stats.heldout_cov * ((n_h - 1) / n_h)
    C = N.T - P @ beta                             # a_i - beta_i^T r = w @ C[:, i]
    out = []
    for i in range(N.shape[0]):
        c = C[:, i]
        var = float(N[i] @ S_h @ N[i])
        err = float(c @ S_h @ c) + float(stats.heldout_mean @ c - b0[i]) ** 2
        out.append(1.0 - err / var if var > 0 else float("nan"))
    return out


# ------------------------------------------------------------------------------------------ cache


#: a folder that replaces every covariance cache location (tests, or keeping estimates apart)
COVARIANCE_DIR_ENV = "LATENTPRIV_COVARIANCE_DIR"


def cache_dir_for_write() -> Path:
    """``$LATENTPRIV_COVARIANCE_DIR`` if set, else ``<asset fetch dir>/covariance`` (``$LATENTPRIV_HOME`` if
    set, else the user cache dir)."""
    from latentpriv import assets

    env = os.environ.get(COVARIANCE_DIR_ENV)
    return Path(env).expanduser() if env else assets.fetch_dir() / "covariance"


def _cache_dirs() -> list[Path]:
    from latentpriv import assets

    env = os.environ.get(COVARIANCE_DIR_ENV)
    if env:
        return [Path(env).expanduser()]
    return [d / "covariance" for d in assets.search_dirs()]


def cache_path(sha256: str, space: str, num: int, heldout_num: int, seed: int | None,
               folder: str | os.PathLike | None = None) -> Path:
    """The cache file of one estimate (in ``folder``, default :func:`cache_dir_for_write`)."""
    seed_part = "na" if seed is None else str(int(seed))
    name = f"{sha256[:16]}_{space}_n{int(num)}_h{int(heldout_num)}_seed{seed_part}.npz"
    return Path(folder if folder is not None else cache_dir_for_write()) / name


def save_covariance(stats: LatentCovariance, path: str | os.PathLike | None = None) -> LatentCovariance:
    """Write ``stats`` atomically as ``.npz`` (float64 arrays + a JSON ``meta`` string); returns it with ``path``.

    The default path is :func:`cache_path` (needs ``stats.model_sha256``).
    """
    from latentpriv.io import atomic_write

    if path is None:
        if not stats.model_sha256:
            raise InputError(f"model {stats.model!r} has no weights file sha256, so its covariance cannot be "
                             "cached; pass an explicit path")
        path = cache_path(stats.model_sha256, stats.space, stats.num, stats.heldout_num, stats.seed)
    path = Path(path)
    meta = {"format": FORMAT, "model": stats.model, "model_sha256": stats.model_sha256, "space": stats.space,
            "num": stats.num, "heldout_num": stats.heldout_num, "dim": stats.dim, "seed": stats.seed,
            "cov_sha256": stats.cov_sha256}
    with atomic_write(path) as fh:
        np.savez(fh, meta=np.array(json.dumps(meta)), **{k: getattr(stats, k) for k in _ARRAYS})
    return stats.with_path(path)


def read_covariance(path: str | os.PathLike, *, model_sha256: str | None = None) -> LatentCovariance:
    """Read and verify one cache file (no pickles); ``model_sha256``, if given, must match its record."""
    path = Path(path)
    remedy = "delete it and re-run `latentpriv boundary covariance --model M --force`"
    try:
        with np.load(path, allow_pickle=False) as z:
            if set(z.files) != {"meta", *_ARRAYS}:
                raise AssetError(f"{path}: holds {sorted(z.files)}, not a latentpriv covariance file; {remedy}")
            meta = json.loads(str(z["meta"][()]))
            arrays = {k: z[k] for k in _ARRAYS}
    except AssetError:
        raise
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AssetError(f"{path}: unreadable covariance file ({msg}); {remedy}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise AssetError(f"{path}: format {meta.get('format') if isinstance(meta, dict) else None!r} is not "
                         f"{FORMAT}; {remedy}")
    for k, v in arrays.items():
        if v.dtype != np.float64:
            raise AssetError(f"{path}: {k} has dtype {v.dtype}, expected float64; {remedy}")
    if model_sha256 is not None and meta.get("model_sha256") != model_sha256:
        raise AssetError(f"{path}: computed for model sha256 {meta.get('model_sha256')}, not {model_sha256}; "
                         f"{remedy}")
    try:
        stats = LatentCovariance(model=str(meta["model"]), model_sha256=meta["model_sha256"], space=meta["space"],
                                 num=int(meta["num"]), dim=int(meta["dim"]), heldout_num=int(meta["heldout_num"]),
                                 seed=meta.get("seed"), path=str(path), **arrays)
    except (KeyError, TypeError, ValueError) as exc:
        raise AssetError(f"{path}: bad metadata ({exc}); {remedy}") from None
    if meta.get("cov_sha256") != stats.cov_sha256:
        raise AssetError(f"{path}: cov does not match its recorded sha256; {remedy}")
    return stats


_NAME_RE = re.compile(r"(?P<sha>[0-9a-f]{16})_(?P<space>[zw])_n(?P<num>\d+)_h(?P<h>\d+)_seed(?P<seed>na|\d+)\.npz")


def _candidates(sha256: str | None = None) -> Iterator[tuple[Path, dict]]:
    seen: set[Path] = set()
    for d in _cache_dirs():
        if not d.is_dir():
            continue
        for p in sorted(d.glob("*.npz")):
            m = _NAME_RE.fullmatch(p.name)
            if m is None or p.resolve() in seen or (sha256 is not None and m["sha"] != sha256[:16]):
                continue
            seen.add(p.resolve())
            yield p, {"space": m["space"], "num": int(m["num"]), "heldout_num": int(m["h"]),
                      "seed": None if m["seed"] == "na" else int(m["seed"])}


def cached_entries() -> list[dict]:
    """Every cache file on the search path: its path and the key parsed from its name (not verified)."""
    return [{"path": str(p), "sha256_prefix": p.name[:16], **key} for p, key in _candidates()]


def load_covariance(model, *, space: str, num: int | None = None, heldout_num: int | None = None,
                    seed: int | None = None) -> LatentCovariance | None:
    """The cached moments of ``model`` in ``space`` (``wp`` means ``w``), or None if none is cached.

    ``model``: a registered model name, a weights file, a loaded generator or a sha256. ``num``,
    ``heldout_num`` and ``seed`` narrow the choice; otherwise the largest ``num`` wins. The file is
    verified (shapes, finiteness, symmetry, the model's sha256); a corrupt one is an AssetError.
    """
    sha = model_sha256(model)
    s = _norm_space(space)
    best: tuple[Path, dict] | None = None
    for p, key in _candidates(sha):
        if key["space"] != s or any(want is not None and key[k] != want for k, want in
                                    (("num", num), ("heldout_num", heldout_num), ("seed", seed))):
            continue
        if best is None or (key["num"], key["heldout_num"]) > (best[1]["num"], best[1]["heldout_num"]):
            best = (p, key)
    return None if best is None else read_covariance(best[0], model_sha256=sha)


def _norm_space(space: str) -> str:
    """``"z"`` or ``"w"``: W+ latents share W's covariance (every layer is a W vector)."""
    from latentpriv.models.protocol import canonical_space

    s = canonical_space(space)
    return "w" if s == "wp" else s


def model_sha256(model) -> str:
    """sha256 of a model's weights file: ``model`` is a sha256, a registered name, a file or a generator."""
    from latentpriv.models.protocol import Generator

    if isinstance(model, Generator):
        sha = model.info().get("sha256")
        if not sha:
            raise InputError(f"model {model.name!r} was not loaded from a weights file, so its "
                             "covariance cannot be cached; call estimate_covariance directly")
        return str(sha)
    value = str(model)
    if _SHA_RE.fullmatch(value):
        return value
    from latentpriv.io import sha256_file

    path = Path(value).expanduser()
    if path.is_file():
        return sha256_file(path)
    from latentpriv import assets
    from latentpriv.models.registry import model_names

    if value in model_names():
        return sha256_file(assets.locate(value))
    raise InputError(f"--model {value}: neither a file nor a registered model ({', '.join(model_names())})")


def covariance_for(model, space: str, *, num: int | None = None, heldout_num: int | None = None,
                   seed: int | None = None, estimate: bool = False, force: bool = False, device="auto",
                   batch_size: int = DEFAULT_BATCH_SIZE,
                   progress: Callable[[int], None] | None = None) -> LatentCovariance | None:
    """Cached moments of ``model`` in ``space``; estimated and cached when asked (``estimate=True``).

    Returns None only when nothing matching is cached and ``estimate`` is False. ``force`` re-estimates
    even if cached. Estimation uses ``num`` (default :data:`DEFAULT_NUM`), ``heldout_num`` (default
    :data:`DEFAULT_HELDOUT_NUM`) and a CPU ``torch.Generator`` seeded with ``seed`` (default
    :data:`DEFAULT_SEED`), so the same key always means the same samples.
    """
    if not force:
        found = load_covariance(model, space=space, num=num, heldout_num=heldout_num, seed=seed)
        if found is not None or not estimate:
            return found
    import torch

    from latentpriv.models.protocol import Generator
    from latentpriv.outputs import check_writable

    # an unwritable cache fails now, not after 100,000 samples
    check_writable(cache_dir_for_write(), option="LATENTPRIV_COVARIANCE_DIR (or LATENTPRIV_HOME)")
    if isinstance(model, Generator):
        G = model
    else:
        from latentpriv.models.registry import load_generator

        G = load_generator(model, device=device)
    n = DEFAULT_NUM if num is None else num
    h = DEFAULT_HELDOUT_NUM if heldout_num is None else heldout_num
    s = DEFAULT_SEED if seed is None else seed
    stats = estimate_covariance(G, space=space, num=n, heldout_num=h, generator=torch.Generator().manual_seed(s),
                                batch_size=batch_size, progress=progress)
    if not stats.model_sha256:
        stats = dataclasses.replace(stats, model_sha256=model_sha256(model))
    return save_covariance(stats)


def spectrum_summary(stats: LatentCovariance) -> dict[str, float]:
    """A few numbers describing Sigma: trace, eigenvalue range, condition number, effective rank."""
    ev = np.linalg.eigvalsh(stats.cov)
    p = np.clip(ev, 0, None) / max(float(ev.sum()), 1e-300)
    eff = math.exp(-float(np.sum(p[p > 0] * np.log(p[p > 0]))))
    return {"trace": float(ev.sum()), "eig_min": float(ev[0]), "eig_max": float(ev[-1]),
            "condition": float(ev[-1] / ev[0]) if ev[0] > 0 else float("inf"), "effective_rank": eff,
            "mean_norm": float(np.linalg.norm(stats.mean))}

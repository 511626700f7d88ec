"""Attribute boundaries: loading, verification, conditioning and orthogonalisation.

A *boundary* is the unit normal ``n`` of a hyperplane through the origin in a latent space that separates
an attribute (InterFaceGAN, spec section 6): ``<w, n>`` is the attribute coordinate. Files are ``.npy``
arrays of shape ``(1, D)`` or ``(D,)``, finite, unit L2 norm.

Naming convention (any model): ``{model}_{attr}_boundary.npy`` is a **Z-space** boundary,
``{model}_{attr}_w_boundary.npy`` a **W-space** one (valid for W and W+ latents). InterFaceGAN's released
``stylegan_ffhq_*`` files are registered assets (pinned URL + sha256, ``latentpriv weights fetch NAME``) and
found on the asset search path; boundaries trained by the project (``latentpriv boundary train``) are
looked up, first hit wins, in ``$LATENTPRIV_HOME``, ``./boundaries``, the ``boundaries/`` folder beside
the installed package, ``latentpriv/data/boundaries`` and the user cache. A ``.json`` file beside a
``.npy`` may state ``space``, ``model`` and ``attribute``.

Pure helpers (:func:`verify_direction`, :func:`project_boundary`, :func:`gram_schmidt`) take and return
arrays; only :func:`load_boundary` / :func:`resolve_attr` / :func:`list_boundaries` touch files.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from latentpriv.errors import AssetError, InputError
from latentpriv.io import read_sidecar

__all__ = [
    "ATTRIBUTES",
    "Boundary",
    "boundary_asset_name",
    "boundary_search_dirs",
    "check_space",
    "gram_schmidt",
    "list_boundaries",
    "load_boundary",
    "project_boundary",
    "resolve_attr",
    "resolve_directions",
    "verify_direction",
]

#: InterFaceGAN's released attributes for stylegan_ffhq.
ATTRIBUTES = ("age", "eyeglasses", "gender", "pose", "smile")
SPACES = ("z", "w", "wp")
NORM_TOL = 1e-3


# ------------------------------------------------------------------------------------- pure helpers


def verify_direction(vec: Any, *, name: str = "boundary", dim: int | None = None, tol: float = NORM_TOL) -> np.ndarray:
    """Check a boundary array and return it as a unit float64 vector ``(D,)``.

    Accepts shape ``(1, D)`` or ``(D,)``; rejects non-numeric dtypes, NaN/inf, a norm more than ``tol``
    away from 1 (the file is then not a unit normal: wrong file or corrupted) and, if ``dim`` is given, a
    dimension mismatch. The result is renormalised to norm 1 in float64.
    """
    arr = vec if isinstance(vec, np.ndarray) else np.asarray(vec)
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise InputError(f"{name}: dtype {arr.dtype} is not a real number type")
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 1 or arr.size == 0:
        raise InputError(f"{name}: shape {tuple(np.shape(vec))}, expected (1, D) or (D,)")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise InputError(f"{name}: contains NaN/inf values; re-fetch or retrain it")
    if dim is not None and arr.size != dim:
        raise InputError(f"{name}: dimension {arr.size} does not match the latent's {dim} "
                         "(a boundary for another model or latent space?)")
    norm = float(np.linalg.norm(arr))
    if abs(norm - 1.0) > tol:
        raise InputError(f"{name}: L2 norm {norm:.6g} is not 1 (tolerance {tol:g}); a boundary must be a unit "
                         "normal - wrong file, or normalise it with n / np.linalg.norm(n)")
    return arr / norm


def project_boundary(primal: np.ndarray, *conditions: np.ndarray) -> np.ndarray:
    """InterFaceGAN's ``project_boundary`` (spec section 7.2): remove the condition directions from ``primal``.

    Inputs are unit vectors ``(1, D)`` or ``(D,)``. 0 conditions: ``primal`` unchanged; 1: ``p - (p.c)c``;
    2: the closed form with InterFaceGAN's ``1e-8`` regulariser; >= 3: solve ``(C C^T) x = C p``.
    The result is normalised and has ``primal``'s shape (float64).
    """
    p = np.asarray(primal, dtype=np.float64)
    shape = p.shape
    p = p.reshape(-1)
    conds = [np.asarray(c, dtype=np.float64).reshape(-1) for c in conditions]
    for i, c in enumerate(conds):
        if c.shape != p.shape:
            raise InputError(f"condition {i}: dimension {c.size} != primal's {p.size}")
    if not conds:
        return p.reshape(shape).copy()
    if len(conds) == 1:
        c = conds[0]
        out = p - (p @ c) * c
    elif len(conds) == 2:
        c1, c2 = conds
        c1c2 = c1 @ c2
        denom = 1.0 - c1c2 ** 2 + 1e-8
        alpha = (p @ c1 - (p @ c2) * c1c2) / denom
        beta = (p @ c2 - (p @ c1) * c1c2) / denom
        out = p - alpha * c1 - beta * c2
    else:
        C = np.stack(conds)
        x = np.linalg.solve(C @ C.T, C @ p)
        out = p - x @ C
    norm = np.linalg.norm(out)
    if norm < 1e-8:
        raise InputError("project_boundary: the primal direction lies in the span of the conditions; "
                         "nothing is left after conditioning")
    return (out / norm).reshape(shape)


def gram_schmidt(rows: np.ndarray, *, names: Sequence[str] | None = None) -> np.ndarray:
    """Orthonormalise the rows of ``[k, D]`` in order (classical Gram-Schmidt, as the research notebook).

    Row 0 is kept (renormalised); row i loses its projections on rows 0..i-1. A row (nearly) in the
    span of the previous ones (residual norm < 1e-6) is an error naming it.
    """
    a = np.asarray(rows, dtype=np.float64)
    if a.ndim != 2:
        raise InputError(f"gram_schmidt: expected a (k, D) array, got shape {a.shape}")
    out = np.empty_like(a)
    for i in range(a.shape[0]):
        v = a[i] - out[:i].T @ (out[:i] @ a[i]) if i else a[i].copy()
        norm = np.linalg.norm(v)
        if norm < 1e-6:
            label = names[i] if names is not None else f"direction {i}"
            raise InputError(f"{label} is (nearly) parallel to the directions before it; drop it or reorder")
        out[i] = v / norm
    return out


# ------------------------------------------------------------------------------------- files


@dataclass(frozen=True)
class Boundary:
    """A verified boundary: ``vector`` is a unit float64 ``(D,)`` array."""

    name: str
    vector: np.ndarray
    space: str | None            # "z", "w" (also valid for W+), or None if unknown
    path: Path | None = None
    sha256: str | None = None
    model: str | None = None
    attribute: str | None = None
    source: str = "file"         # "asset" | "project" | "file" | "array"
    conditions: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.vector.size)

    def info(self) -> dict[str, Any]:
        """Provenance for records (no vector)."""
        return {"name": self.name, "attribute": self.attribute, "model": self.model, "space": self.space,
                "source": self.source, "path": str(self.path) if self.path else None, "sha256": self.sha256,
                "conditions": list(self.conditions)}


def _space_from_name(stem: str) -> str | None:
    if stem.endswith("_w_boundary"):
        return "w"
    if stem.endswith("_boundary"):
        return "z"
    return None


def _norm_space(value: Any, where: str) -> str | None:
    """``z``/``w`` (W+ counts as W); None for a missing or unrecognised value such as ``"unknown"``
    (then the file-name convention decides)."""
    from latentpriv.models.protocol import canonical_space

    if value is None:
        return None
    try:
        v = canonical_space(value)
    except InputError:
        return None
    return "w" if v == "wp" else v


def load_boundary(path: str | os.PathLike, *, name: str | None = None, source: str = "file",
                  space: str | None = None) -> Boundary:
    """Load and verify a boundary ``.npy`` (never unpickles). Space: ``space`` argument, else the
    sidecar ``.json``, else the file-name convention, else unknown."""
    from latentpriv.io import load_npy, sha256_file

    path = Path(path)
    arr = load_npy(path)
    vec = verify_direction(arr, name=str(path))
    meta = read_sidecar(path)
    sp = (_norm_space(space, str(path)) or _norm_space(meta.get("space", meta.get("latent_space")), str(path))
          or _space_from_name(path.stem))
    return Boundary(name=name or path.stem, vector=vec, space=sp, path=path, sha256=sha256_file(path),
                    model=meta.get("model"), attribute=meta.get("attribute"), source=source, meta=meta)


def boundary_asset_name(model: str, attr: str, space: str) -> str:
    """File stem by convention: ``{model}_{attr}_w_boundary`` for W/W+, ``{model}_{attr}_boundary`` for Z."""
    if space not in SPACES:
        raise InputError(f"unknown latent space {space!r}; choose z, w or wp")
    return f"{model}_{attr}_w_boundary" if space in ("w", "wp") else f"{model}_{attr}_boundary"


def boundary_search_dirs() -> list[Path]:
    """Folders searched for project-trained boundaries, in priority order."""
    import latentpriv
    from latentpriv.assets import cache_dir

    dirs: list[Path] = []
    home = os.environ.get("LATENTPRIV_HOME")
    if home:
        dirs.append(Path(home).expanduser())
    dirs.append(Path.cwd() / "boundaries")
    pkg = Path(latentpriv.__file__).resolve().parent
    dirs.append(pkg.parent / "boundaries")
    dirs.append(pkg / "data" / "boundaries")
    dirs.append(cache_dir())
    seen: list[Path] = []
    for d in dirs:
        if d not in seen:
            seen.append(d)
    return seen


def _registered(name: str) -> bool:
    from latentpriv.assets import get_asset

    try:
        return get_asset(name).group == "boundary"
    except AssetError:
        return False


def resolve_attr(attr: str, *, model: str = "stylegan_ffhq", space: str = "w") -> Boundary:
    """Find, load and verify the boundary of attribute ``attr`` for ``model`` in latent ``space``.

    Registered assets go through :func:`latentpriv.assets.locate` (search path, "fetch it with ..."
    errors); other names are looked up in :func:`boundary_search_dirs`.
    """
    if not isinstance(attr, str) or not attr or os.sep in attr:
        raise InputError(f"attribute {attr!r}: give a name such as {', '.join(ATTRIBUTES)}")
    name = boundary_asset_name(model, attr, space)
    want = "w" if space in ("w", "wp") else "z"
    if _registered(name):
        from latentpriv.assets import locate

        b = load_boundary(locate(name), name=name, source="asset", space=want)
    else:
        for d in boundary_search_dirs():
            p = d / f"{name}.npy"
            if p.is_file():
                b = load_boundary(p, name=name, source="project")
                break
        else:
            other = boundary_asset_name(model, attr, "z" if want == "w" else "w")
            hint = ""
            if _registered(other) or any((d / f"{other}.npy").is_file() for d in boundary_search_dirs()):
                hint = f" (a {'Z' if want == 'w' else 'W'}-space boundary {other} exists: is --space right?)"
            searched = ", ".join(str(d) for d in boundary_search_dirs())
            raise AssetError(f"no boundary {name}.npy for attribute {attr!r} of model {model!r} in {space.upper()} "
                             f"space{hint}; searched {searched}; train one with `latentpriv boundary train` or "
                             "pass --boundary FILE")
    if b.space is not None and b.space != want:
        raise InputError(f"{b.path}: a {b.space.upper()}-space boundary, but the latent is {space.upper()}")
    return replace(b, attribute=attr, model=b.model or model)


def check_space(b: Boundary, space: str | None, dim: int) -> None:
    """Error if boundary ``b`` cannot edit a latent of ``space`` (z/w/wp or None) and dimension ``dim``."""
    where = str(b.path) if b.path else b.name
    if b.dim != dim:
        raise InputError(f"{where}: boundary dimension {b.dim} does not match the latent's {dim} "
                         "(a boundary of another model? check --model and --space)")
    if space is not None and b.space is not None:
        want = "z" if space == "z" else "w"
        if b.space != want:
            raise InputError(f"{where}: a {b.space.upper()}-space boundary cannot edit a {space.upper()} latent; "
                             f"use the {'_w_boundary' if want == 'w' else 'Z-space _boundary'} file or --space")


def resolve_directions(*, attrs: Sequence[str] = (), boundary_files: Sequence[str | os.PathLike] = (),
                       conditions: Sequence[str] = (), model: str = "stylegan_ffhq", space: str = "w",
                       dim: int | None = None) -> tuple[np.ndarray, list[Boundary]]:
    """The CLI's direction set: ``--attr`` boundaries then ``--boundary`` files, each conditioned on
    ``--condition`` attributes (:func:`project_boundary`), then Gram-Schmidt in that order.

    Returns ``(directions [k, D] orthonormal float64, boundaries)``; the boundaries carry provenance.
    """
    chosen: list[Boundary] = [resolve_attr(a, model=model, space=space) for a in attrs]
    chosen += [load_boundary(f) for f in boundary_files]
    if not chosen:
        raise InputError("no direction given; use --attr NAME (e.g. smile) or --boundary FILE")
    d = dim if dim is not None else chosen[0].dim
    for b in chosen:
        check_space(b, space, d)
    names = [b.attribute or b.name for b in chosen]
    if len(set(names)) != len(names):
        raise InputError(f"a direction is given twice: {', '.join(names)}")
    conds = [resolve_attr(c, model=model, space=space) for c in conditions]
    for c in conds:
        check_space(c, space, d)
    if conds:
        chosen = [replace(b, vector=project_boundary(b.vector, *[c.vector for c in conds]),
                          conditions=tuple(conditions)) for b in chosen]
    dirs = gram_schmidt(np.stack([b.vector for b in chosen]), names=names)
    return dirs, chosen


def list_boundaries() -> list[dict[str, Any]]:
    """Every known boundary: the registered InterFaceGAN assets (present or not) and the ``.npy`` files in
    :func:`boundary_search_dirs` that follow the naming convention. Dicts with name, model, attribute,
    space, source, present, path."""
    from latentpriv.assets import find, list_assets

    out: dict[str, dict[str, Any]] = {}
    for asset in list_assets():
        if asset.group != "boundary":
            continue
        path = find(asset.name)
        stem = asset.name
        model, attr = _split_name(stem)
        out[stem] = {"name": stem, "model": model, "attribute": attr, "space": _space_from_name(stem),
                     "source": "asset", "present": path is not None, "path": str(path) if path else None}
    for d in boundary_search_dirs():
        if not d.is_dir():
            continue
        for p in sorted(d.glob("*_boundary.npy")):
            if p.stem in out:
                continue
            meta = {}
            with contextlib.suppress(InputError):
                meta = read_sidecar(p)
            model, attr = _split_name(p.stem)
            out[p.stem] = {"name": p.stem, "model": meta.get("model", model),
                           "attribute": meta.get("attribute", attr),
                           "space": _norm_space(meta.get("space"), str(p)) or _space_from_name(p.stem),
                           "source": "project", "present": True, "path": str(p)}
    return [out[k] for k in sorted(out)]


def _split_name(stem: str) -> tuple[str | None, str | None]:
    """``stylegan_ffhq_smile_w_boundary`` -> ("stylegan_ffhq", "smile") using the registered model names."""
    from latentpriv.models.registry import model_names

    core = stem[: -len("_w_boundary")] if stem.endswith("_w_boundary") else stem[: -len("_boundary")]
    for model in sorted(model_names(), key=len, reverse=True):  # longest first: a name may prefix another
        if core.startswith(model + "_"):
            return model, core[len(model) + 1:]
    head, _, tail = core.rpartition("_")
    return (head or None), (tail or None)

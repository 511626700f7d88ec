"""Files in and out: latents, images, JSON records, all validated on read and written atomically.

Every writer goes through :func:`atomic_write` (temp file in the destination folder, fsync, ``os.replace``)
so that a crash never leaves a half-written output and a reader never sees one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from latentpriv.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temp file beside ``path``; on success fsync and rename it over ``path``.

    On any exception the temp file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as a plain (non-pickled) ``.npy`` file, atomically."""
    with atomic_write(path) as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_write(path, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=False, default=json_default)
        fh.write("\n")


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` for records: numpy scalars/arrays, paths, sets/tuples, dataclasses."""
    import dataclasses

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    # anything else (a torch.device, an enum, ...) by its text: a record must never fail after the work is done
    return str(obj)


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """Load a ``.npy`` file without ever unpickling; errors name the file and the remedy."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise InputError(
                f"{path}: contains pickled Python objects, which latentpriv refuses to load; "
                "save a plain numeric array with numpy.save(path, array)"
            ) from exc
        raise InputError(f"{path}: not a valid .npy array ({exc})") from exc
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot read as .npy ({exc}); is it a NumPy array file?") from exc


def check_latent(array: np.ndarray, *, name: str, dim: int, num_layers: int | None = None,
                 space: str | None = None) -> np.ndarray:
    """Validate a latent batch and return it as float32.

    Accepted shapes: ``(dim,)``/``(N, dim)`` for Z and W, ``(L, dim)``/``(N, L, dim)`` for W+
    (``L == num_layers``). Non-numeric, NaN and inf values are rejected.
    """
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise InputError(f"{name}: latent dtype {array.dtype} is not a real number type")
    arr = np.asarray(array, dtype=np.float32)
    if space == "wp":
        if arr.ndim == 2 and num_layers is not None and arr.shape == (num_layers, dim):
            arr = arr[None]
        if arr.ndim != 3 or arr.shape[2] != dim or (num_layers is not None and arr.shape[1] != num_layers):
            raise InputError(
                f"{name}: W+ latent has shape {tuple(array.shape)}, expected (N, {num_layers}, {dim})"
            )
    else:
        if arr.ndim == 1:
            arr = arr[None]
        if arr.ndim != 2 or arr.shape[1] != dim:
            hint = " (a W+ latent? pass --space wp)" if arr.ndim == 3 else ""
            raise InputError(f"{name}: latent has shape {tuple(array.shape)}, expected (N, {dim}){hint}")
    if arr.shape[0] == 0:
        raise InputError(f"{name}: latent file holds no rows")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise InputError(f"{name}: latent contains {bad} NaN/inf value(s); regenerate or fix the file")
    return arr


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read any PIL-readable image as RGB ``uint8 [H, W, 3]``.

    RGBA is composited on white, greyscale and palette images are converted. Unreadable, empty or
    truncated files raise :class:`InputError` naming the file.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(background, rgba)
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: not a readable image ({exc}); use a PNG or JPEG file") from exc
    arr = np.asarray(rgb, dtype=np.uint8)
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError(f"{path}: image has no pixels")
    return arr


def save_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write ``uint8 [H, W, 3]`` (or ``[H, W]``) as an image whose format follows the suffix, atomically."""
    from PIL import Image

    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower())
    img = Image.fromarray(np.ascontiguousarray(image))
    with atomic_write(path) as fh:
        img.save(fh, format=fmt or (path.suffix.lstrip(".").upper() or "PNG"))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()

"""Files in and out: latents, images, JSON records, all validated on read and written atomically.

Every writer goes through :func:`atomic_write` (temp file in the destination folder, fsync, ``os.replace``)
so that a crash never leaves a half-written output and a reader never sees one.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import struct
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latentpriv.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temp file beside ``path``; on success fsync and rename it over ``path``.

    On any exception the temp file is removed and ``path`` is left as it was. The file gets the
    permissions a plain ``open()`` would give it (``0o666 & ~umask``, not ``mkstemp``'s ``0600``), and is
    recorded as written in this run (:mod:`latentpriv.outputs`).
    """
    from latentpriv.outputs import file_mode, mark_written

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise InputError(f"{path}: cannot write here ({exc.strerror or exc}); "
                         "choose a writable output folder") from exc
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        mark_written(path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES,
                                                       errno.EPERM, errno.EFBIG):
            raise InputError(f"{path}: cannot write ({exc.strerror or exc}); "
                             "free space or choose another output folder") from exc
        raise


def atomic_write_files(files: Sequence[tuple[str | os.PathLike, bytes]]) -> None:
    """Write several files as one unit: ``[(path, data), ...]``.

    Every file is written to a temp file beside it and fsynced before any is renamed; then they are renamed
    in the given order, so put the file that marks a complete result last. A failure while writing (full
    disk, read-only folder) leaves none of them; only a kill between two renames can leave a prefix.
    """
    with contextlib.ExitStack() as stack:
        # atomic_write renames when its context exits; ExitStack exits last-in first-out, so enter in reverse
        handles = [(stack.enter_context(atomic_write(path)), data) for path, data in reversed(list(files))]
        for fh, data in handles:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def json_bytes(obj: Any) -> bytes:
    """``obj`` as the indented JSON text :func:`write_json` writes, encoded."""
    return (json.dumps(obj, indent=2, sort_keys=False, default=json_default) + "\n").encode()


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` as a plain (non-pickled) ``.npy`` file: exactly the bytes ``np.save`` writes for the contiguous
    array, and what :func:`save_npy` writes (so a sha256 of these bytes is the sha256 of the saved file)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as a plain (non-pickled) ``.npy`` file (:func:`npy_bytes`), atomically."""
    data = npy_bytes(array)
    with atomic_write(path) as fh:
        fh.write(data)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_write(path) as fh:
        fh.write(json_bytes(obj))


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


def read_sidecar(path: str | os.PathLike) -> dict:
    """The JSON record beside ``path`` (``X.json`` for ``X.npy`` or ``X.png``; a ``.json`` path is read itself).

    ``{}`` when there is no such file or it holds JSON that is not an object; :class:`InputError` naming the
    file when it cannot be read or parsed (the cause chained, for callers that warn and go on instead).
    """
    side = Path(path).with_suffix(".json")
    if not side.is_file():
        return {}
    try:
        data = json.loads(side.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{side}: not valid JSON ({exc}); fix or delete it") from exc
    return data if isinstance(data, dict) else {}


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """Load a ``.npy`` file without ever unpickling; errors name the file, what it holds and the remedy."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if not head.startswith(b"\x93NUMPY"):
        if head.startswith(b"PK"):
            what = "a zip archive (.npz?); extract one array and save it with numpy.save"
        elif head[:1] == b"\x80":
            what = "pickled Python objects, which latentpriv refuses to load; save a plain numeric array " \
                   "with numpy.save(path, array)"
        elif not head:
            what = "nothing (the file is empty); regenerate it"
        else:
            what = f"no NumPy header (it starts with {head[:6]!r}); save the array with numpy.save(path, array)"
        raise InputError(f"{path}: not a .npy file: it holds {what}")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise InputError(
                f"{path}: contains pickled Python objects, which latentpriv refuses to load; "
                "save a plain numeric array with numpy.save(path, array)"
            ) from exc
        raise InputError(f"{path}: not a valid .npy array ({str(exc).splitlines()[0] if str(exc) else exc}); "
                         "regenerate it with numpy.save") from exc
    except (OSError, EOFError, MemoryError) as exc:
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


#: Default pixel limit of an input image (width x height); ``LATENTPRIV_MAX_PIXELS`` changes it.
DEFAULT_MAX_PIXELS = 200_000_000   # a 200 MP phone photo; JPEGs decode at 1/8 scale, PNGs need 4 B/pixel
MAX_PIXELS_ENV = "LATENTPRIV_MAX_PIXELS"
#: Formats :func:`load_image` decodes (others, e.g. EPS through Ghostscript, are refused).
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "WEBP", "TIFF", "GIF", "PPM")   # JPEG also opens MPO (phones)
# EXIF orientation -> the transpose that shows the picture as a person sees it (as ImageOps.exif_transpose)
_EXIF_TRANSPOSE = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE",
                   6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"}




@dataclass
class LatentInput:
    """A latent file read for release or rendering (:func:`load_latent_input`).

    Attributes:
        path: the file.
        latent: validated float32 (float64 inputs stay float64): ``(N, D)`` for z/w, ``(N, L, D)`` for wp.
        raw_shape: the array's shape in the file (outputs are written back in it).
        space: ``"z"``, ``"w"`` or ``"wp"``.
    """

    path: Path
    latent: np.ndarray
    raw_shape: tuple
    space: str


def infer_space(arr: np.ndarray, space: str | None, model: str, generator: Any | None = None) -> str:
    """``space`` when given; else ``wp`` for a 3-D array, else the generator's (or ``model``'s) default."""
    if space:
        return space
    if arr.ndim == 3:
        return "wp"
    if generator is not None:
        return str(generator.default_space)
    from latentpriv.models.registry import model_default_space

    return model_default_space(model) or "w"   # a registered model's own; "w" for a checkpoint file


def load_latent_input(path: Path, *, space: str | None, model: str, generator: Any | None = None,
                      warn: Callable[[str], None] | None = None) -> LatentInput:
    """Read and validate a latent ``.npy`` (:func:`load_npy`, :func:`check_latent`) in its latent space.

    A float type finer than float64 is refused (its rounding is not covered by the float-level guarantee);
    with a loaded ``generator`` its dimension is checked. ``warn(message)`` hears about a 2-D array of 14, 16
    or 18 rows read as W latents (probably one W+ latent). Raises InputError.
    """
    arr = load_npy(path)
    if arr.dtype.kind == "f" and np.finfo(arr.dtype).eps > np.finfo(np.float32).eps:
        raise InputError(f"{path}: {arr.dtype} latent: its rounding carries how the coordinate was encoded and is "
                         "not covered by the float-level guarantee (float32/float64 only); save it as float32 from "
                         f"its source (converting this file keeps the {arr.dtype} rounding)")
    sp = infer_space(arr, space, model, generator)
    if space is None and sp == "w" and arr.ndim == 2 and arr.shape[0] in (14, 16, 18) and warn is not None:
        warn(f"{path}: {arr.shape[0]} rows are treated as {arr.shape[0]} separate W latents (faces); "
             "if this is one W+ latent (layers x 512), pass --space wp")
    if sp not in ("z", "w", "wp"):
        raise InputError(f"--space {sp}: choose z, w or wp")
    raw_shape = tuple(arr.shape)
    if sp == "wp" and arr.ndim == 2:
        arr = arr[None]
    dim = arr.shape[-1] if arr.ndim else 0
    if generator is not None and arr.ndim:   # the model knows the dimension: blame the latent, not a boundary
        dim = int(generator.z_dim if sp == "z" else generator.w_dim)
    checked = check_latent(arr, name=str(path), dim=dim,
                           num_layers=arr.shape[1] if sp == "wp" and arr.ndim == 3 else None, space=sp)
    # keep float64 inputs in float64; everything else is float32 (check_latent's canonical form)
    lat = np.asarray(arr, dtype=np.float64).reshape(checked.shape) if arr.dtype == np.float64 else checked
    return LatentInput(Path(path), lat, raw_shape, sp)


def max_pixels_limit() -> int:
    """The input pixel limit: ``$LATENTPRIV_MAX_PIXELS`` (e.g. ``3e8``) or :data:`DEFAULT_MAX_PIXELS` (200 MP)."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(raw))
    except (ValueError, OverflowError):
        value = 0
    if value < 1:
        raise InputError(f"{MAX_PIXELS_ENV}={raw!r}: not a positive number of pixels; "
                         f"set e.g. {MAX_PIXELS_ENV}=200000000 or unset it")
    return value


def load_image(path: str | os.PathLike, *, min_side: int | None = None,
               max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as a person sees it: RGB ``uint8 [H, W, 3]``.

    * EXIF orientation is applied (a phone portrait comes out upright).
    * 16-bit greyscale (and 32-bit integer / float) images are scaled to 8 bits, not clipped; 16-bit RGB
      keeps its high byte; palette images go through their palette; alpha (an alpha band, a palette or
      ``tRNS`` transparency) is composited on white.
    * ``min_side``: the caller needs no more than this many pixels on the short side, so the image is
      reduced by an integer factor *while decoding* (JPEG DCT scaling, then box ``Image.reduce``) as long
      as the short side stays >= ``min_side``; at most one full-size decode exists, never as floats.
    * ``max_pixels`` (default :func:`max_pixels_limit`, 200 MP): larger images are refused before decoding.

    Unreadable, empty, truncated, over-large or unsupported files raise :class:`InputError` naming the file.
    """
    import warnings

    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    limit = max_pixels_limit() if max_pixels is None else int(max_pixels)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")
    too_big = (f"{path}: image is over the pixel limit of {limit:,} ({MAX_PIXELS_ENV}); "
               f"downscale it first or raise the limit, e.g. {MAX_PIXELS_ENV}={max(limit * 4, 400_000_000)}")
    try:
        with warnings.catch_warnings():
            # our own limit replaces Pillow's decompression-bomb guard (which stays in force above it)
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            Image.init()
            if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
                Image.MAX_IMAGE_PIXELS = limit   # a user who raised our limit means it: widen Pillow's guard too
            with Image.open(path, formats=[f for f in IMAGE_FORMATS if f in Image.OPEN]) as img:
                w, h = img.size
                if w < 1 or h < 1:
                    raise InputError(f"{path}: image has no pixels")
                if w * h > limit:
                    raise InputError(f"{path}: {w}x{h} image ({w * h / 1e6:.0f} MP) is over the pixel limit of "
                                     f"{limit:,}; downscale it first or raise the limit with "
                                     f"{MAX_PIXELS_ENV}={w * h}")
                try:
                    orientation = int(img.getexif().get(0x0112, 1) or 1)
                except Exception:  # noqa: BLE001 - a broken EXIF block must not make the photo unreadable
                    orientation = 1
                if min_side and img.format in ("JPEG", "MPO") and min(w, h) // int(min_side) >= 2:
                    img.draft(None, (max(1, w * int(min_side) // min(w, h)),
                                     max(1, h * int(min_side) // min(w, h))))
                img.load()
                out = _to_rgb8(img, min_side, path)
                if out is not img:
                    img.close()   # frees the full-size decode now (leaving ``with`` only closes the file)
    except Image.DecompressionBombError as exc:   # Pillow refused before we saw the size (over 2x the limit)
        import re

        m = re.search(r"\((\d+) pixels\)", str(exc))
        if m is None:
            raise InputError(too_big) from exc
        n = int(m.group(1))
        raise InputError(f"{path}: image ({n / 1e6:.0f} MP) is over the pixel limit of {limit:,}; downscale it "
                         f"first or raise the limit with {MAX_PIXELS_ENV}={n}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, TypeError, EOFError,
            struct.error, MemoryError) as exc:
        if isinstance(exc, InputError):
            raise
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: not a readable image ({first}); use a PNG or JPEG file") from exc
    if w * h * 4 >= _TRIM_AFTER_BYTES:
        _return_freed_memory()   # the full-size decode is gone: give its pages back before the model runs
    method = _EXIF_TRANSPOSE.get(orientation)
    if method is not None:
        out = out.transpose(getattr(Image.Transpose, method))
    arr = np.asarray(out, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError(f"{path}: image has no pixels")
    return arr


_TRIM_AFTER_BYTES = 64 << 20


def _return_freed_memory() -> None:
    """Ask glibc to return freed heap pages to the OS (``malloc_trim``); a no-op elsewhere.

    The ``latentpriv`` command tunes glibc to keep freed memory for torch's reuse (latentpriv.runs.allocator),
    which would otherwise keep a 12000 px photo's decode buffer (~0.6 GB) resident for the whole run.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = getattr(libc, "malloc_trim", None)
        if trim is not None and getattr(libc, "gnu_get_libc_version", None) is not None:
            trim.argtypes = [ctypes.c_size_t]
            trim(0)
    except OSError:
        pass


def _reduce(img: Any, min_side: int | None) -> Any:
    """Box-reduce ``img`` by the largest integer factor that keeps its short side >= ``min_side``."""
    if not min_side:
        return img
    factor = min(img.size) // int(min_side)
    return img.reduce(factor) if factor >= 2 else img


def _to_rgb8(img: Any, min_side: int | None, path: Path) -> Any:
    """A decoded PIL image of any mode -> a (reduced) RGB uint8 PIL image, alpha composited on white."""
    from PIL import Image

    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        # high-bit-depth grey: scale to 8 bits (Pillow's convert("RGB") would clip 99 % of a 16-bit photo to 255)
        if mode.startswith("I;16"):
            img = img.convert("I")
        img = _reduce(img, min_side)
        arr = np.asarray(img, dtype=np.float64)
        arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
        top = float(arr.max(initial=0.0))
        if mode == "F" and top <= 1.0:
            scale = 255.0                  # float images in [0, 1]
        elif mode.startswith("I;16") or 255.0 < top <= 65535.0:
            scale = 255.0 / 65535.0        # 16-bit samples
        elif top > 65535.0:
            scale = 255.0 / top            # wider integers: stretch to the image's own maximum
        else:
            scale = 1.0                    # already 8-bit values
        grey = np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in img.info
    if mode in ("P", "PA", "1") or (has_alpha and mode not in ("RGBA", "LA", "La", "RGBa")):
        img = img.convert("RGBA" if has_alpha else "RGB")   # palette indices must not be averaged
    img = _reduce(img, min_side)
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img if img.mode == "RGB" else img.convert("RGB")


#: Image formats :func:`save_image` writes, by suffix.
IMAGE_WRITE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".webp": "WEBP",
                       ".tif": "TIFF", ".tiff": "TIFF", ".gif": "GIF", ".ppm": "PPM", ".pgm": "PPM"}


def image_format(path: str | os.PathLike, option: str = "the output") -> str:
    """The PIL format that :func:`save_image` uses for ``path``'s suffix; InputError for any other suffix."""
    path = Path(path)
    fmt = IMAGE_WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"{option} {path}: cannot write an image with suffix {path.suffix or '(none)'!r}; "
                         f"use {', '.join(sorted(set(IMAGE_WRITE_FORMATS)))} (e.g. {path.with_suffix('.png')})")
    return fmt


def image_bytes(path: str | os.PathLike, image: np.ndarray) -> bytes:
    """``uint8 [H, W, 3]`` (or ``[H, W]``) encoded in the format ``path``'s suffix names."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format=image_format(Path(path)))
    return buf.getvalue()


def save_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write ``uint8 [H, W, 3]`` (or ``[H, W]``) as an image whose format follows the suffix, atomically."""
    data = image_bytes(path, image)
    with atomic_write(path) as fh:
        fh.write(data)


def float01_to_uint8(images01: Any) -> np.ndarray:
    """Images in [0, 1], a tensor or array ``[N, 3, H, W]`` (inversion targets and reconstructions) ->
    uint8 ``[N, H, W, 3]``: the official postprocess of ``2x - 1``, ``floor(255 x + 0.5)`` clamped.

    Renders in [-1, 1] go through the generator's own ``G.to_uint8`` instead.
    """
    import torch

    x = torch.as_tensor(images01).detach()
    u8 = (x.clamp(0, 1) * 255.0 + 0.5).floor().clamp(0, 255).to(torch.uint8)
    return u8.permute(0, 2, 3, 1).cpu().numpy()


def render_to_float01(images: Any, *, clamp: bool = True) -> Any:
    """A render nominally in [-1, 1] (``G.synthesize``, a tensor ``[N, 3, H, W]``) -> float32 ``(x + 1) / 2``,
    clamped to [0, 1] unless ``clamp=False`` (differentiable: the inversion's loss may see it unclamped)."""
    x01 = (images.float() + 1.0) / 2.0
    return x01.clamp(0, 1) if clamp else x01


def uint8_to_float01(images: np.ndarray) -> Any:
    """uint8 ``[N, H, W, 3]`` -> float32 tensor ``[N, 3, H, W]`` in [0, 1] (``x / 255``), what
    :func:`latentpriv.inversion.optimize.invert` takes as targets."""
    import torch

    # a copy: decoded images may be read-only views, which torch refuses to share
    return torch.from_numpy(np.array(images, dtype=np.uint8, order="C")).permute(0, 3, 1, 2).float() / 255.0


class NullBar:
    """The progress bar of a caller that passed none: a tqdm-like object (``update``, ``close``, a context
    manager) that draws nothing. :func:`no_bar` is the matching factory."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> NullBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def no_bar(**_kwargs: Any) -> NullBar:
    """A tqdm-like factory ``progress(total=, desc=, unit=)`` that draws nothing (the library's default)."""
    return NullBar()


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

"""The ``generate`` task: latent files (or seeded random Z samples) -> images with a generator.

``latentpriv generate`` is :func:`generate`: one latent file (N rows -> N images), every ``.npy`` of a
folder, or ``--num`` samples; the images are exactly the generator's official uint8 postprocess
(``G.to_uint8``) of its raw output. Z/W latents are truncated like InterFaceGAN's wrapper unless told
otherwise; W+ latents never are.
"""

from __future__ import annotations

import logging
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latentpriv.errors import InputError
from latentpriv.io import IMAGE_SUFFIXES

log = logging.getLogger(__name__)


def output_paths(out: str, n: int) -> list[Path]:
    """``-o``: a file (one image), a pattern with ``{i}`` (one per row) or a directory."""
    fields = []
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(out) if f is not None]
    except ValueError as exc:
        raise InputError(f"-o {out}: not a valid pattern ({exc}); use e.g. out_{{i:04d}}.png") from exc
    if fields:
        if any(f.split(":")[0].split("!")[0] != "i" for f in fields):
            raise InputError(f"-o {out}: the only pattern field allowed is {{i}} (e.g. out_{{i:04d}}.png)")
        try:
            paths = [Path(out.format(i=i)) for i in range(n)]
        except (ValueError, KeyError, IndexError) as exc:
            raise InputError(f"-o {out}: cannot format the pattern with an index ({exc})") from exc
        if len(set(paths)) != n:
            raise InputError(f"-o {out}: the pattern does not give a distinct file per image")
    elif Path(out).suffix and not Path(out).is_dir():
        if n != 1:
            raise InputError(f"-o {out}: {n} images need a directory or a pattern such as "
                             f"{Path(out).with_suffix('')}_{{i:04d}}{Path(out).suffix}")
        paths = [Path(out)]
    else:
        width = max(4, len(str(n - 1)))
        paths = [Path(out) / f"{i:0{width}d}.png" for i in range(n)]
    bad = sorted({p.suffix for p in paths if p.suffix.lower() not in IMAGE_SUFFIXES})
    if bad:
        raise InputError(f"-o {out}: unsupported image suffix {', '.join(bad) or '(none)'}; use .png")
    return paths


def load_folder(folder: Path, output: str):
    """Folder mode: every ``*.npy`` in ``folder`` (sorted) checked up front, before anything is loaded or
    written; returns their rows stacked and ``[(file, rows)]``. Files must share one layout."""
    from latentpriv.io import load_npy

    files = sorted(p for p in folder.glob("*.npy") if p.is_file())
    if not files:
        raise InputError(f"{folder}: no .npy latents in this folder")
    if Path(output).suffix:
        raise InputError(f"-o {output}: a folder of latents renders into a folder; give -o OUTDIR")
    arrays = []
    for f in files:
        a = load_npy(f)
        if a.ndim not in (2, 3) or (arrays and a.shape[1:] != arrays[0].shape[1:]):
            want = f"{tuple(arrays[0].shape[1:])} like {files[0].name}" if arrays else "(N, D) or (N, L, D)"
            raise InputError(f"{f}: latent shape {tuple(a.shape)}; every file of the folder needs rows of {want}")
        arrays.append(a)
    return np.concatenate(arrays), [(f, a.shape[0]) for f, a in zip(files, arrays, strict=True)]


def folder_paths(outdir: Path, folder: list[tuple[Path, int]]) -> list[Path]:
    """``OUTDIR/STEM.png`` for a one-row file, ``OUTDIR/STEM_0000.png`` ... for an N-row one."""
    from latentpriv.models.render import row_image_paths

    return [p for f, rows in folder for p in row_image_paths(outdir, f.stem, rows)]


def _truncation(G, space: str, psi: float | None, layers: int | None, off: bool) -> tuple[float | None, int | None]:
    """The truncation to render with: none for W+ (refusing explicit values) or when ``off``, else the given
    values or the generator's own (InterFaceGAN's psi 0.7 on 8 layers for StyleGAN)."""
    if space == "wp":
        if psi is not None or layers is not None:
            raise InputError("W+ latents are never truncated; drop --truncation-psi/--truncation-layers")
        return None, None
    if off:
        return None, None
    psi = psi if psi is not None else getattr(G, "truncation_psi", None)
    layers = layers if layers is not None else getattr(G, "truncation_layers", None)
    if psi is not None and layers is None:
        raise InputError(f"generator {G.name!r} has no truncation; drop --truncation-psi")
    return psi, layers


def _read_latents(latent: Path | None, output: str,
                  space: str | None) -> tuple[np.ndarray | None, list[tuple[Path, int]] | None, str | None]:
    """The latent file or folder (None when sampling), checked before the (slow) generator load: the rows
    (``[N, D]``, ``[N, L, D]`` or a 1-D ``[D]``), in folder mode ``[(file, rows)]`` per latent file (else None),
    and the space (``"wp"`` for a 3-D latent when none is given). Raises InputError for a shape that does not
    fit ``space``."""
    from latentpriv.io import load_npy

    if latent is None:
        return None, None, space
    folder = None
    if latent.is_dir():
        arr, folder = load_folder(latent, output)
    else:
        arr = load_npy(latent)
    if arr.ndim not in (1, 2, 3):
        raise InputError(f"{latent}: latent has shape {tuple(arr.shape)}; expected (N, D) or (N, L, D)")
    if space is None:
        space = "wp" if arr.ndim == 3 else None
    elif space.lower() != "wp" and arr.ndim == 3:
        raise InputError(f"{latent}: a 3-D latent {tuple(arr.shape)} is W+; it does not fit --space {space}")
    elif space.lower() == "wp" and arr.ndim == 1:
        raise InputError(f"{latent}: a 1-D latent {tuple(arr.shape)} is not W+ (expected (N, L, D))")
    return arr, folder, space


def _render(G, lat: np.ndarray, paths: list[Path], *, space: str, psi: float | None, layers: int | None,
            batch_size: int, progress: Callable[..., Any] | None) -> None:
    """Render ``lat`` (``[N, ...]``) ``batch_size`` rows at a time and save row i as ``paths[i]`` (the
    generator's uint8 postprocess); ``progress``: :func:`generate`'s bar factory."""
    import torch

    from latentpriv.io import save_image

    starts = range(0, lat.shape[0], batch_size)
    bar = None if progress is None else progress(total=len(starts), desc="generate", unit="batch")
    try:
        with torch.no_grad():
            for start in starts:
                chunk = torch.from_numpy(np.ascontiguousarray(lat[start:start + batch_size]))
                images = G.to_uint8(G.synthesize(chunk, space, truncation_psi=psi, truncation_layers=layers))
                for j, img in enumerate(images):
                    save_image(paths[start + j], img)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()


@dataclass
class Generated:
    """What :func:`generate` wrote: ``n`` images at ``paths`` from generator ``name`` (``resolution`` px),
    in ``space``, with truncation ``psi`` on ``layers`` layers (None: off)."""

    n: int
    paths: list[Path]
    name: str
    resolution: int
    space: str
    psi: float | None
    layers: int | None


def generate(latent: Path | None, output: str, *, weights: str, space: str | None = None,
             truncation_psi: float | None = None, truncation_layers: int | None = None, no_truncation: bool = False,
             device: str = "auto", batch_size: int = 8, seed: int | None = None, num: int | None = None,
             allow_tf32: bool = False, save_latent: Path | None = None, overwrite: bool = False,
             progress: Callable[..., Any] | None = None) -> Generated:
    """Render ``latent`` (a ``.npy`` file or a folder of them) or ``num`` seeded Z samples to images at
    ``output`` (a file, a ``{i}`` pattern or a folder; see :func:`output_paths`, :func:`folder_paths`).

    The latent files are checked before the generator is loaded, the outputs (the overwrite rule,
    :func:`latentpriv.outputs.check_outputs`) before anything is written; ``save_latent`` also writes the
    rendered latents. ``batch_size`` changes memory and speed only. ``progress``: a tqdm-like factory
    ``progress(total=, desc=, unit=)`` for a bar over the batches (the CLI passes tqdm; None: no bar).
    Raises InputError.
    """
    import torch

    import latentpriv
    from latentpriv.io import check_latent, save_npy
    from latentpriv.outputs import check_outputs

    sampling = seed is not None or num is not None
    arr, folder, space = _read_latents(latent, output, space)

    G = latentpriv.load_generator(weights, device=device)
    if G.device.type == "cuda":
        # PyTorch runs cuDNN convolutions in TF32 by default on Ampere+; the official images are float32.
        torch.backends.cudnn.allow_tf32 = bool(allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = bool(allow_tf32)
    space = (space or ("z" if sampling else G.default_space)).lower()
    if space not in G.latent_spaces:
        raise InputError(f"--space {space}: generator {G.name!r} has latent spaces {', '.join(G.latent_spaces)}")

    if sampling:
        gen = torch.Generator(device="cpu").manual_seed(seed if seed is not None else 0)
        lat = G.sample_z(num or 1, gen).cpu().numpy()
    else:
        dim = G.z_dim if space == "z" else G.w_dim
        lat = check_latent(arr, name=str(latent), dim=dim, num_layers=G.num_layers if space == "wp" else None,
                           space=space)

    psi, layers = _truncation(G, space, truncation_psi, truncation_layers, no_truncation)
    n = lat.shape[0]
    paths = output_paths(output, n) if folder is None else folder_paths(Path(output), folder)
    if save_latent is not None and save_latent.suffix.lower() != ".npy":
        raise InputError(f"--save-latent {save_latent}: latents are written as .npy; "
                         f"use e.g. {save_latent.with_suffix('.npy')}")
    inputs = [p for p in (latent, Path(weights)) if p is not None and p.exists()] + [f for f, _ in folder or []]
    check_outputs(paths, overwrite=overwrite, inputs=inputs)
    check_outputs([save_latent], overwrite=overwrite, inputs=inputs, option="--save-latent")

    _render(G, lat, paths, space=space, psi=psi, layers=layers, batch_size=batch_size, progress=progress)
    if save_latent is not None:
        save_npy(save_latent, lat)
    return Generated(n, paths, G.name, int(G.resolution), space, psi, layers)

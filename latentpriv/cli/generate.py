"""``latentpriv generate``: render latents (or seeded random Z samples) to PNG images.

Thin layer over ``G.synthesize`` + ``G.to_uint8``: the PNG holds exactly the official uint8 postprocess of
the raw generator output. W latents are truncated like InterFaceGAN's wrapper unless told otherwise.
"""

from __future__ import annotations

import logging
import string
from pathlib import Path

import click

from latentpriv.cli.options import model_option, with_threads
from latentpriv.errors import InputError

log = logging.getLogger(__name__)

EPILOG = """\b
Examples:
  latentpriv generate w.npy -o face.png                  # one (1,512) W latent, truncated psi 0.7 / 8 layers
  latentpriv generate ws.npy -o out/ --no-truncation     # N rows -> out/0000.png ... out/NNNN.png
  latentpriv generate wp.npy -o 'edit_{i:03d}.png'       # (N,18,512) W+ latents, never truncated
  latentpriv generate --seed 7 --num 8 -o samples/ --save-latent samples/z.npy
  latentpriv generate --model dcgan64 --seed 7 --num 4 -o samples/ --save-latent samples/z.npy   # offline model
  latentpriv generate samples/ -o renders/ --model dcgan64   # every .npy of a folder -> renders/STEM[_i].png
  latentpriv generate w.npy -o face.png --model synth.pth --device cpu  # any checkpoint file
"""


def _output_paths(out: str, n: int) -> list[Path]:
    """``-o``: a file (one image), a pattern with ``{i}`` (one per row) or a directory."""
    from latentpriv.io import IMAGE_SUFFIXES

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


def _load_folder(folder: Path, output: str):
    """Folder mode: every ``*.npy`` in ``folder`` (sorted) checked up front, before anything is loaded or
    written; returns their rows stacked and ``[(file, rows)]``. Files must share one layout."""
    import numpy as np

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


def _folder_paths(outdir: Path, folder: list[tuple[Path, int]]) -> list[Path]:
    """``OUTDIR/STEM.png`` for a one-row file, ``OUTDIR/STEM_0000.png`` ... for an N-row one."""
    return [outdir / (f"{f.stem}.png" if rows == 1 else f"{f.stem}_{i:04d}.png")
            for f, rows in folder for i in range(rows)]


@click.command(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("latent", required=False, type=click.Path(path_type=Path))
@click.option("-o", "--output", "output", required=True,
              help="Image file (one latent), directory, or pattern with {i} (e.g. 'img_{i:04d}.png').")
@model_option()
@click.option("--space", type=click.Choice(["w", "wp", "z"], case_sensitive=False), default=None,
              help="Latent space. Default: W for 2-D (N,512) latents, W+ for 3-D (N,L,512); Z with --num.")
@click.option("--truncation-psi", type=float, default=None,
              help="Truncation psi for Z/W (default: the generator's, 0.7 for StyleGAN).")
@click.option("--truncation-layers", type=click.IntRange(min=0), default=None,
              help="Number of truncated layers for Z/W (default: the generator's, 8 for StyleGAN).")
@click.option("--no-truncation", is_flag=True, help="Render Z/W without truncation.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images per forward pass (memory vs speed only; results are identical).")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Sample random Z codes with this seed instead of reading LATENT (default 0 with --num).")
@click.option("--num", type=click.IntRange(min=1), default=None, help="Number of random Z samples (with --seed).")
@click.option("--allow-tf32", is_flag=True,
              help="On CUDA, let convolutions run in TF32 (faster on Ampere+, ~1e-3 off the float32 images).")
@click.option("--save-latent", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the rendered latents (e.g. the sampled Z) to this .npy file.")
@click.option("--overwrite", is_flag=True, help="Replace existing output files (never an input).")
@with_threads
def generate(latent: Path | None, output: str, weights: str, space: str | None, truncation_psi: float | None,
             truncation_layers: int | None, no_truncation: bool, device: str, batch_size: int,
             seed: int | None, num: int | None, allow_tf32: bool, save_latent: Path | None,
             overwrite: bool = False) -> None:
    """Render LATENT.npy (N rows -> N images), every .npy of a folder LATENT, or --num random faces to PNG.

    The PNG is exactly the official InterFaceGAN postprocess uint8(clip((x+1)*127.5+0.5, 0, 255)) of the
    raw output. Z and W latents are truncated like InterFaceGAN's wrapper (psi 0.7 on the first 8
    layers) unless --no-truncation or other --truncation-* values are given; W+ latents never are.
    """
    import numpy as np
    import torch

    import latentpriv
    from latentpriv.io import check_latent, load_npy, save_image, save_npy

    sampling = seed is not None or num is not None
    if sampling and latent is not None:
        raise click.UsageError("give either LATENT.npy or --seed/--num, not both")
    if not sampling and latent is None:
        raise click.UsageError("give LATENT.npy, or --seed S --num K to sample random faces")
    if no_truncation and (truncation_psi is not None or truncation_layers is not None):
        raise click.UsageError("--no-truncation conflicts with --truncation-psi/--truncation-layers")
    if truncation_psi is not None and not np.isfinite(truncation_psi):
        raise click.BadParameter(f"{truncation_psi}: must be a finite number", param_hint="--truncation-psi")

    arr = None
    folder: list[tuple[Path, int]] | None = None   # folder mode: (file, rows) per latent file
    if latent is not None and latent.is_dir():
        arr, folder = _load_folder(latent, output)
    elif latent is not None:
        arr = load_npy(latent)  # cheap checks before the (slow) generator load
    if arr is not None:
        if arr.ndim not in (1, 2, 3):
            raise InputError(f"{latent}: latent has shape {tuple(arr.shape)}; expected (N, D) or (N, L, D)")
        if space is None:
            space = "wp" if arr.ndim == 3 else None
        elif space.lower() != "wp" and arr.ndim == 3:
            raise InputError(f"{latent}: a 3-D latent {tuple(arr.shape)} is W+; it does not fit --space {space}")
        elif space.lower() == "wp" and arr.ndim == 1:
            raise InputError(f"{latent}: a 1-D latent {tuple(arr.shape)} is not W+ (expected (N, L, D))")

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

    if space == "wp":
        if truncation_psi is not None or truncation_layers is not None:
            raise InputError("W+ latents are never truncated; drop --truncation-psi/--truncation-layers")
        psi, layers = None, None
    elif no_truncation:
        psi, layers = None, None
    else:
        psi = truncation_psi if truncation_psi is not None else getattr(G, "truncation_psi", None)
        layers = truncation_layers if truncation_layers is not None else getattr(G, "truncation_layers", None)
        if psi is not None and layers is None:
            raise InputError(f"generator {G.name!r} has no truncation; drop --truncation-psi")

    n = lat.shape[0]
    paths = _output_paths(output, n) if folder is None else _folder_paths(Path(output), folder)
    from latentpriv.outputs import check_outputs

    if save_latent is not None and save_latent.suffix.lower() != ".npy":
        raise InputError(f"--save-latent {save_latent}: latents are written as .npy; "
                         f"use e.g. {save_latent.with_suffix('.npy')}")
    inputs = [p for p in (latent, Path(weights)) if p is not None and p.exists()] + [f for f, _ in folder or []]
    check_outputs(paths, overwrite=overwrite, inputs=inputs)
    check_outputs([save_latent], overwrite=overwrite, inputs=inputs, option="--save-latent")

    from tqdm.auto import tqdm

    with torch.no_grad():
        for start in tqdm(range(0, n, batch_size), desc="generate", unit="batch", disable=None, leave=False):
            chunk = torch.from_numpy(np.ascontiguousarray(lat[start:start + batch_size]))
            images = G.to_uint8(G.synthesize(chunk, space, truncation_psi=psi, truncation_layers=layers))
            for j, img in enumerate(images):
                save_image(paths[start + j], img)
    if save_latent is not None:
        save_npy(save_latent, lat)
    where = str(paths[0]) if n == 1 else f"{paths[0].parent}/ ({paths[0].name} .. {paths[-1].name})"
    click.echo(f"wrote {n} image(s) {G.resolution}x{G.resolution} to {where} "
               f"[{G.name}, space {space}, truncation {'off' if psi is None else f'psi {psi} on {layers} layers'}]")

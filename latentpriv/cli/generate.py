"""``latentpriv generate``: render latents (or seeded random Z samples) to PNG images.

Thin layer over :func:`latentpriv.runs.generate.generate` (``G.synthesize`` + ``G.to_uint8``): the PNG holds
exactly the official uint8 postprocess of the raw generator output. W latents are truncated like
InterFaceGAN's wrapper unless told otherwise.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from latentpriv.cli.options import model_option, with_threads

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
    import math

    sampling = seed is not None or num is not None
    if sampling and latent is not None:
        raise click.UsageError("give either LATENT.npy or --seed/--num, not both")
    if not sampling and latent is None:
        raise click.UsageError("give LATENT.npy, or --seed S --num K to sample random faces")
    if no_truncation and (truncation_psi is not None or truncation_layers is not None):
        raise click.UsageError("--no-truncation conflicts with --truncation-psi/--truncation-layers")
    if truncation_psi is not None and not math.isfinite(truncation_psi):
        raise click.BadParameter(f"{truncation_psi}: must be a finite number", param_hint="--truncation-psi")

    from latentpriv.runs.generate import generate as render

    done = render(latent, output, weights=weights, space=space, truncation_psi=truncation_psi,
                  truncation_layers=truncation_layers, no_truncation=no_truncation, device=device,
                  batch_size=batch_size, seed=seed, num=num, allow_tf32=allow_tf32, save_latent=save_latent,
                  overwrite=overwrite, progress=_bar)
    n, paths, psi = done.n, done.paths, done.psi
    where = str(paths[0]) if n == 1 else f"{paths[0].parent}/ ({paths[0].name} .. {paths[-1].name})"
    click.echo(f"wrote {n} image(s) {done.resolution}x{done.resolution} to {where} "
               f"[{done.name}, space {done.space}, truncation {'off' if psi is None else f'psi {psi} on {done.layers} layers'}]")


def _bar(**kwargs: Any) -> Any:
    """The bar over the batches (the library draws none itself); off when stderr is not a terminal."""
    from tqdm.auto import tqdm

    return tqdm(disable=None, leave=False, **kwargs)

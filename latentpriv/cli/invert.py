"""``latentpriv invert``: photos -> latents (W, W+ or Z) with the VGG16 perceptual optimiser.

Thin layer over :mod:`latentpriv.runs.invert`: ``invert FILE...`` is :func:`invert_files`, a folder
:func:`invert_dir` (the batch engine: torchrun shards, verified resume, ``results.jsonl``); both run the
same :class:`~latentpriv.runs.invert.Inverter`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from latentpriv.cli.options import model_option, with_threads
from latentpriv.errors import InputError


@click.command("invert")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Latent .npy for one input; a directory for several inputs or a directory input.")
@click.option("--preset", type=click.Choice(["default", "seed"]), default=None,
              help="default: fast (configs/invert.yaml); seed: the research code exactly (invert_seed.yaml).")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="A YAML config file.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. --set optimizer.lr=0.05 (repeatable).")
@click.option("--space", type=click.Choice(["z", "w", "wp"]), help="Latent space (default: the config's).")
@click.option("--iterations", type=click.IntRange(min=1), help="Optimisation steps (default: the config's).")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Images optimised together (independently) in one batch.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--seed", type=click.IntRange(min=0), help="Seed of the initial latent / noise (default: config's).")
@model_option()
@click.option("--vgg-weights", type=click.Path(path_type=Path), help="VGG16 weights file (default: registry).")
@click.option("--save-image", type=click.Path(path_type=Path),
              help="Write the reconstruction (a file for one input, a directory for several).")
@click.option("--save-every", type=click.IntRange(min=1), help="Also write latent/image every K steps.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option("--align", is_flag=True,
              help="FFHQ-align the largest face first (face extra: dlib 68 landmarks; see `latentpriv align`).")
@click.option("--overwrite", is_flag=True,
              help="Replace existing output files (never an input); folder input: redo images whose "
                   "outputs are already complete (default: skip them).")
@with_threads
def invert(inputs, output, preset, config_file, overrides, space, iterations, batch_size, device, seed, weights,
           vgg_weights, save_image, save_every, quiet, align, overwrite) -> None:
    """Find the latent code(s) of image(s) INPUTS by perceptual-loss optimisation.

    \b
    Examples:
      latentpriv invert face.png -o z_inv.npy --model dcgan64 --iterations 30 --save-image recon.png
      latentpriv invert face.png -o w.npy --save-image recon.png
      latentpriv invert faces/ -o latents/ --batch-size 4 --space wp
      latentpriv invert face.png -o w.npy --preset seed --iterations 2000
      latentpriv invert photo.jpg -o w.npy --align        # unaligned photo: FFHQ alignment first
    Writes float32 (1,512) pre-truncation W, (1,L,512) W+ or (1,z_dim) Z, plus a .json record.
    """
    from latentpriv.inversion.settings import command_config
    from latentpriv.runs.invert import expand_inputs, invert_dir, invert_paths, under_torchrun

    files, multi = expand_inputs(list(inputs))
    config = command_config(preset, config_file, overrides, space=space, iterations=iterations, seed=seed)

    if len(inputs) == 1 and inputs[0].is_dir():
        # a folder: the batch engine (torchrun shards, verified resume, results.jsonl, summary, exit code)
        from latentpriv.cli.folder import folder_bar, folder_run

        with folder_run():
            invert_dir(inputs[0], output, config=config, weights=str(weights), vgg_weights=vgg_weights,
                       device=device, batch_size=batch_size, image_dir=save_image, overwrite=overwrite,
                       progress=None if quiet else folder_bar, save_every=save_every, align=align, echo=click.echo)
        return
    if under_torchrun():
        raise InputError("under torchrun pass one folder as INPUT (each process takes its share of it)")

    results = invert_paths(files, multi, output, config, weights=str(weights), vgg_weights=vgg_weights,
                           device=device, batch_size=batch_size, save_image=save_image, save_every=save_every,
                           progress=None if quiet else _bar, align=align, overwrite=overwrite,
                           report=None if quiet else _report)
    failed = [r for r in results if not r.ok]
    if not quiet and multi:
        click.echo(f"{len(results) - len(failed)} of {len(results)} inputs inverted into {output}", err=True)
    if failed:
        raise InputError(f"{len(failed)} of {len(results)} inputs failed: "
                         + "; ".join(str(r.error) for r in failed[:3]) + (" ..." if len(failed) > 3 else ""))


def _bar(**kwargs: Any) -> Any:
    """A bar over one batch's iterations (the library draws none itself)."""
    from tqdm.auto import tqdm

    return tqdm(leave=False, dynamic_ncols=True, **kwargs)


def _report(line: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(line)   # beside the progress bar, not through it

"""``latentpriv sweep``: the privacy/utility picture - a labelled grid of releases over epsilon."""

from __future__ import annotations

from pathlib import Path

import click

from latentpriv.cli.options import option_errors, parse_epsilons, warn, with_threads
from latentpriv.cli.privatize import privacy_options
from latentpriv.runs.sweep import CONFIRM_EPSILON


@click.command("sweep", epilog="\b\nExamples:\n"
               "  latentpriv generate --model dcgan64 --seed 1 --num 1 -o face.png --save-latent z.npy\n"
               "  latentpriv sweep z.npy --model dcgan64 --attr smile --epsilons 0.5,2,inf --samples 2 -o grid.png\n"
               "  latentpriv sweep w.npy --attr smile -o grid.png --yes   # defaults: 4 x (0.1+0.5+1+2+5)")
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--epsilons", default="0.1,0.5,1,2,5,inf", show_default=True,
              help="Rows of the grid; inf = no noise (clamp only, not private).")
@click.option("--samples", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Independent releases per epsilon (columns).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Grid image (PNG); a record .json is written beside it.")
@click.option("--cell", type=click.IntRange(16, 1024), default=None,
              help="Tile size in pixels (default: min(resolution, 256)).")
@click.option("--yes", is_flag=True,
              help=f"Confirm a sweep that spends more than epsilon {CONFIRM_EPSILON:g} on the face (or give "
                   "--max-epsilon, a budget the ledger enforces).")
@privacy_options
@with_threads
def sweep(input_path: Path, epsilons: str, samples: int, output: Path, cell: int | None, attrs, boundary_files,
          conditions, mechanism, delta, clip_radius, center, epsilon_split, noise_clip, space, layers, model,
          weights, device, ledger_path, max_epsilon, force, subject, label, decorrelate, max_norm, seed,
          overwrite, yes: bool = False) -> None:
    """Render INPUT's privacy/utility grid: rows = epsilon, columns = independent releases.

    The first column is the original (so the picture itself is NOT a private release: it is for
    choosing epsilon). Every finite-epsilon draw spends budget and is appended to the ledger:
    the total is samples x the sum of the finite epsilons.
    """
    from latentpriv.runs.privatize import PrivatizeOptions
    from latentpriv.runs.sweep import sweep_file

    eps_list = parse_epsilons(epsilons, allow_inf=True)
    options = PrivatizeOptions(
        epsilon=1.0, attrs=attrs, boundary_files=boundary_files, conditions=conditions, mechanism=mechanism,
        delta=delta, clip_radius=clip_radius, center=center, epsilon_split=epsilon_split, noise_clip=noise_clip,
        space=space, layers=layers, model=model, weights=weights, device=device, ledger_path=ledger_path,
        max_epsilon=max_epsilon, force=force, seed=seed, decorrelate=decorrelate, max_norm=max_norm,
        subject=subject, label=label)
    done = option_errors(lambda o: sweep_file(o, input_path, epsilons=eps_list, samples=samples, output=output,
                                              cell=cell, yes=yes, overwrite=overwrite, warn=warn,
                                              info=lambda msg: click.echo(msg, err=True)), options)
    click.echo(str(done))

"""``latentpriv evaluate``: privacy/utility numbers (and curves) for reconstructions and private renders.

Two modes (the layout of a run directory is documented in docs/evaluation.md):

* **compare** images with an original photo: ``evaluate RUN_DIR`` or ``evaluate --original photo.png
  --recon recon.png --private p1.png ...``: PSNR, SSIM, LPIPS (VGG), identity distance (dlib same-person
  threshold), landmark attribute scores and their change, and the coordinate of each image's latent along
  each boundary (:func:`latentpriv.evaluate.report.compare_report`);
* **sweep** (``--sweep``): privatize latents over a grid of epsilons x mechanisms with a generator,
  render, measure (:func:`latentpriv.evaluate.report.sweep_report`), and optionally ``--plot`` attribute
  change and identity distance against epsilon (:func:`latentpriv.evaluate.plots.sweep_figure`).

This module parses the options, calls the library and writes/prints what it returns.
"""

from __future__ import annotations

from pathlib import Path

import click

from latentpriv.cli.options import DEFAULT_SPACES, parse_epsilons, warn, with_threads
from latentpriv.faces.identity import SAME_PERSON_THRESHOLD
from latentpriv.privacy.coordinate_mechanisms import MECHANISMS


def _names(value: str, option: str, allowed: tuple[str, ...]) -> list[str]:
    out = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in out if v not in allowed]
    if not out or bad:
        raise click.BadParameter(f"{value!r}: choose from {', '.join(allowed)}", param_hint=option)
    return out


# click's help is given as text (not the docstring) so that the threshold comes from the library
HELP = f"""Measure reconstructions and private renders against the original face.

    \b
    Compare:
      latentpriv evaluate RUN_DIR                      # original.png, recon.png, private renders
      latentpriv evaluate --original face.png --recon recon.png --private p1.png --private p2.png
      latentpriv evaluate --original face.png --recon recon.png --private private.png --no-faces   # dcgan64 files
    Sweep (privacy/utility curves):
      latentpriv evaluate --sweep --model dcgan64 --attr smile --samples 8 \\
          --epsilons 0.5,2,8 --mechanisms laplace,gaussian --plot curve.png --csv sweep.csv

    Reports PSNR, SSIM, LPIPS (VGG), identity distance (dlib; same person below {SAME_PERSON_THRESHOLD:g}), landmark
    attribute scores and their change, and latent coordinates along boundaries. See docs/evaluation.md.
    """


@click.command("evaluate", help=HELP)
@click.argument("run_dir", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--original", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The photo (aligned as for inversion) everything is compared with.")
@click.option("--recon", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Its reconstruction (the inverted latent rendered).")
@click.option("--private", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A privatized render; repeatable. X.npy / X.json beside X.png are its latent / record.")
@click.option("--attr", "attrs", multiple=True, metavar="NAME",
              help="Boundary whose coordinate to report (sweep: to privatize); repeatable.")
@click.option("--boundary", "boundary_files", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A boundary .npy file; repeatable.")
@click.option("--model", default="stylegan_ffhq", show_default=True,
              help="Model whose boundaries --attr names (and, with --sweep, the generator).")
@click.option("--space", type=click.Choice(["z", "w", "wp"]), default=None,
              help=f"Latent space (default: the model's: {DEFAULT_SPACES}).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write everything as JSON here.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write one CSV row per image (sweep: per latent x mechanism x epsilon x repeat).")
@click.option("--lpips/--no-lpips", default=True, show_default=True, help="Compute LPIPS (VGG).")
@click.option("--lpips-size", type=click.IntRange(16, 4096), default=None,
              help="Resize to this side before LPIPS (e.g. 256 for 1024 px faces); default native.")
@click.option("--faces/--no-faces", default=True, show_default=True,
              help="Identity distance and landmark attributes (needs the face extra; 68-point landmark "
                   "model: iBUG 300-W, non-commercial).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda[:N].")
@click.option("--sweep", is_flag=True, help="Privacy/utility sweep over epsilons x mechanisms (needs a generator).")
@click.option("--weights", default=None, metavar="FILE|NAME", help="Sweep: generator weights (default: --model's).")
@click.option("--latents", "latents_files", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Sweep: latents to privatize (e.g. from `latentpriv invert`); repeatable.")
@click.option("--samples", type=click.IntRange(1, 100000), default=None,
              help="Sweep without --latents: sample this many faces from the generator [default 8].")
@click.option("--sample-seed", type=click.IntRange(0), default=0, show_default=True, help="Sweep: seed of --samples.")
@click.option("--epsilons", default="0.5,1,2,4,8", show_default=True, help="Sweep: comma-separated epsilons.")
@click.option("--mechanisms", default="laplace,gaussian", show_default=True,
              help="Sweep: comma-separated from laplace, gaussian, rr, seed.")
@click.option("--delta", type=float, default=1e-5, show_default=True, help="Sweep: delta of gaussian / seed.")
@click.option("--clip-radius", type=float, default=3.0, show_default=True, help="Sweep: clamp radius B.")
@click.option("--center", default="0", show_default=True, help="Sweep: c, a number or 'auto'.")
@click.option("--layers", default=None, metavar="0-7|0,1,..", help="Sweep, W+ only: edited layers.")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True,
              help="Sweep: seeded noise (reproducible experiment, not a release).")
@click.option("--secure-noise", is_flag=True, help="Sweep: OpenDP's samplers instead of --seed.")
@click.option("--repeats", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="Sweep: draws per latent and grid point.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Sweep: write the privacy/utility figure (PNG) here.")
@click.option("--overwrite", is_flag=True, help="Replace existing --json/--csv/--plot files (never an input).")
@with_threads
def evaluate(run_dir, original, recon, private, attrs, boundary_files, model, space, json_path, csv_path, lpips,
             lpips_size, faces, device, sweep, weights, latents_files, samples, sample_seed, epsilons, mechanisms,
             delta, clip_radius, center, layers, seed, secure_noise, repeats, plot_path,
             overwrite=False) -> None:
    """Measure reconstructions and private renders (the help is :data:`HELP`)."""
    from latentpriv.evaluate import report

    report.check_mode(sweep, run_dir=run_dir, original=original, recon=recon, private=private, attrs=attrs,
                      boundary_files=boundary_files, latents_files=latents_files, samples=samples,
                      plot_path=plot_path)
    if sweep:
        from latentpriv.cli.options import parse_center, parse_layers

        result = report.evaluate_sweep(
            model, weights=weights, latents_files=latents_files, samples=samples, sample_seed=sample_seed,
            attrs=attrs, boundary_files=boundary_files, space=space, center=parse_center(center), layers=layers,
            layer_indices=parse_layers(layers), device=device, warn=warn, epsilons=parse_epsilons(epsilons),
            mechanisms=_names(mechanisms, "--mechanisms", MECHANISMS), delta=delta, clip_radius=clip_radius,
            seed=None if secure_noise else seed, repeats=repeats, lpips=lpips, lpips_size=lpips_size, faces=faces,
            json_path=json_path, csv_path=csv_path, plot_path=plot_path, overwrite=overwrite)
    else:
        result = report.evaluate_compare(run_dir, original=original, recon=recon, private=private, attrs=attrs,
                                         boundary_files=boundary_files, model=model, space=space, lpips=lpips,
                                         lpips_size=lpips_size, faces=faces, device=device, warn=warn,
                                         json_path=json_path, csv_path=csv_path, overwrite=overwrite)
    for line in report.console_lines(result):
        click.echo(line)
    for path, what in ((json_path, ""), (csv_path, ""), (plot_path, " (matplotlib)")):
        if path is not None:
            click.echo(f"wrote {path}{what}", err=True)
    for k, why in result.get("skipped", {}).items():
        click.echo(f"skipped {k}: {why}", err=True)
    if result.get("errors"):
        # the table and files above hold what could be measured; a missing or unreadable input still fails
        raise click.ClickException(f"{result['errors']} of {len(result['rows'])} input files could not be "
                                   "evaluated (see their error column); fix or remove them")

"""``latentpriv privatize``: release a latent with differentially private attribute coordinates.

Thin layer over :mod:`latentpriv.runs.privatize`: ``privatize FILE`` is :func:`privatize_file`, a folder
:func:`privatize_dir` (the batch engine). The option set (:func:`privacy_options`) and the click-facing
parsers here are shared with ``latentpriv sweep``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from latentpriv.cli.options import option_errors, warn
from latentpriv.errors import ConfigError
from latentpriv.privacy.mechanisms import DEFAULT_MAX_NORM, MECHANISMS
from latentpriv.runs import privatize as task

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------- shared helpers


def privacy_options(f):
    """Options shared by privatize and sweep."""
    opts = [
        click.option("--attr", "attrs", multiple=True, metavar="NAME",
                     help="Attribute direction (age, eyeglasses, gender, pose, smile; or a trained one). "
                          "Repeat for several: orthogonalised by Gram-Schmidt in the order given."),
        click.option("--boundary", "boundary_files", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
                     help="Any other unit-normal boundary .npy ((1,D) or (D,)); repeatable."),
        click.option("--condition", "conditions", multiple=True, metavar="ATTR",
                     help="Project this attribute out of every direction first (InterFaceGAN project_boundary)."),
        click.option("--mechanism", type=click.Choice(MECHANISMS), default=MECHANISMS[0],
                     show_default=True,
                     help="laplace: pure eps-DP; gaussian: (eps,delta)-DP (discrete Gaussian); rr: randomized "
                          "response on the side only; seed: the research notebook's step, NO guarantee."),
        click.option("--delta", type=float, default=None,
                     help="delta for gaussian/seed (required there, e.g. 1e-5); not accepted by laplace/rr."),
        click.option("--clip-radius", type=float, default=3.0, show_default=True,
                     help="B: coordinates are clamped to [c-B, c+B] (sensitivity 2B)."),
        click.option("--center", default="0", show_default=True,
                     help="c: a number, or 'auto' = <w_avg, n> of the generator (needs --weights/--model)."),
        click.option("--epsilon-split", default=None, metavar="W1,W2,...",
                     help="Weights splitting epsilon over the directions (default equal)."),
        click.option("--noise-clip", type=float, default=1.0, show_default=True,
                     help="seed mechanism only: the notebook's clipping threshold C of the shift."),
        click.option("--space", type=click.Choice(["z", "w", "wp"]), default=None,
                     help="Latent space of INPUT (default: wp for 3-D arrays, else the model's default)."),
        click.option("--layers", default=None, metavar="0-7|0,1,..",
                     help="W+ only: layers to edit (default all)."),
        click.option("--model", default="stylegan_ffhq", show_default=True,
                     help="Model whose boundaries --attr names (boundaries are {model}_{attr}[_w]_boundary.npy)."),
        click.option("--weights", default=None, metavar="FILE|NAME",
                     help="Generator weights for rendering / --center auto (default: --model's registered weights)."),
        click.option("--device", default="auto", show_default=True, help="Device for rendering: auto, cpu, cuda[:N]."),
        click.option("--ledger", "ledger_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Privacy ledger, a SQLite file on a local disk (default $LATENTPRIV_LEDGER or "
                          "~/.local/share/latentpriv/ledger.sqlite); never an input or output of the run."),
        click.option("--max-epsilon", type=float, default=None,
                     help="Refuse a release that would bring any input's total epsilon above this."),
        click.option("--force", is_flag=True, help="Release even past --max-epsilon (recorded as forced)."),
        click.option("--subject", default=None, metavar="ID",
                     help="Charge the budget of this person instead of the latent's own face key: use one ID for "
                          "every inversion of one person's photos (re-inversions give other latents)."),
        click.option("--label", default=None, metavar="TEXT", help="A note stored with the ledger entry "
                                                                    "(shown by `latentpriv ledger show`)."),
        click.option("--decorrelate/--no-decorrelate", default=None,
                     help="Oblique split u = Sigma n / (n^T Sigma n) with the model's latent covariance Sigma, so "
                          "the released residual is linearly uncorrelated with the protected coordinate. Default: "
                          "on when Sigma is cached (latentpriv boundary covariance --model M); --decorrelate "
                          "estimates it if missing (needs the model's weights)."),
        click.option("--max-norm", type=float, default=DEFAULT_MAX_NORM, show_default=True,
                     help="Largest record norm (L2 over all numbers of a face) the float-level guarantee covers; "
                          "larger latents are refused. A larger value means a larger residual dither."),
        click.option("--seed", type=click.IntRange(0), default=None,
                     help="Seeded numpy noise for reproducible experiments: NOT private (the record keeps the seed, "
                          "the ledger marks the face unbounded)."),
        click.option("--overwrite", is_flag=True, help="Replace existing outputs (never the input)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


# ------------------------------------------------------------------------------------- the command


@click.command("privatize")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("--epsilon", type=float, required=True, help="Privacy budget per face (total over the directions).")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Released latent (default: INPUT_private.npy); the record goes beside it as .json. "
                   "For a folder INPUT: the output folder (STEM_private.npy + STEM_private.json per file).")
@click.option("--render", type=click.Path(path_type=Path), default=None,
              help="Also render the released latent to this image (one file per row: NAME_i.png for N > 1). "
                   "For a folder INPUT: a folder, STEM_private.png per released file (STEM_private_0000.png ... "
                   "for N rows); rendering spends no budget.")
@privacy_options
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON on stdout.")
def privatize(input_path: Path, epsilon: float, output: Path | None, render: Path | None, attrs, boundary_files,
              conditions, mechanism, delta, clip_radius, center, epsilon_split, noise_clip, space, layers, model,
              weights, device, ledger_path, max_epsilon, force, subject, label, decorrelate, max_norm, seed,
              overwrite, as_json) -> None:
    """Release INPUT (a latent .npy) with its attribute coordinates privatised.

    Each row of INPUT is one face (local DP). The record (.json beside the output) states the guarantee;
    it never contains the true coordinate or the noise. Every release is appended to the privacy ledger.

    \b
    Examples:
      latentpriv privatize z.npy --model dcgan64 --attr smile --epsilon 1.0 --max-epsilon 4 --render private.png
      latentpriv privatize samples/ -o private/ --render renders/ --model dcgan64 --attr smile --epsilon 1.0
      latentpriv privatize w.npy --attr smile --epsilon 1.0 --max-epsilon 4   # a StyleGAN W latent
    """
    options = task.PrivatizeOptions(
        epsilon=epsilon, attrs=attrs, boundary_files=boundary_files, conditions=conditions, mechanism=mechanism,
        delta=delta, clip_radius=clip_radius, center=center, epsilon_split=epsilon_split, noise_clip=noise_clip,
        space=space, layers=layers, model=model, weights=weights, device=device, ledger_path=ledger_path,
        max_epsilon=max_epsilon, force=force, seed=seed, decorrelate=decorrelate, max_norm=max_norm,
        subject=subject, label=label)
    if input_path.is_dir():
        # a folder: the batch engine (torchrun shards, one shared ledger, verified resume, results.jsonl)
        if as_json:
            raise ConfigError("--json applies to a single file; a folder run writes OUTDIR/results.jsonl")
        from latentpriv.cli.folder import folder_bar, folder_run

        with folder_run():
            option_errors(lambda o: task.privatize_dir(input_path, output, o, overwrite=overwrite, warn=warn,
                                                       render_dir=render, echo=click.echo, progress=folder_bar),
                          options)
        return
    done = option_errors(lambda o: task.privatize_file(o, input_path, output=output, render=render,
                                                       overwrite=overwrite, warn=warn), options)
    _report(done, mechanism, as_json)


def _report(done: task.FileRelease, mechanism: str, as_json: bool) -> None:
    import json

    rel, record = done.release, done.release.record
    if as_json:
        click.echo(json.dumps(record, indent=2))
        return
    click.echo(str(done.output))
    for p in done.render_paths:
        click.echo(str(p))
    why = sorted({t.reason for t in rel.totals.values() if t.reason})
    worst = f"unbounded ({why[0]})" if rel.worst_epsilon is None and why else (
        "unbounded" if rel.worst_epsilon is None else f"{rel.worst_epsilon:.4g}")
    g = record["guarantee"]
    claim = "no guarantee" if g["type"] == "none" else g["statement"]
    click.echo(f"{mechanism}: {claim}; ledger total for this input: epsilon {worst}"
               + (f" (delta {max(t.delta for t in rel.totals.values()):.3g})" if done.mechanism.delta else ""), err=True)

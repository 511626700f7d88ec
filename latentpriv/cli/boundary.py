"""``latentpriv boundary``: train InterFaceGAN boundaries (``train``) and list the known ones (``list``)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from latentpriv.cli.options import MODEL_NAMES, with_threads


@click.group("boundary")
def boundary() -> None:
    """Train and list attribute boundaries (unit normals of linear SVMs in a latent space)."""


@boundary.command("train")
@click.option("--model", "model", default=None, metavar="NAME|FILE",
              help=f"Generator to sample from (e.g. {MODEL_NAMES}, or a weights file).")
@click.option("--attr", "attribute", required=True,
              help="Attribute: smile, mouth_open, yaw (alias pose), eyes_open; any label with --scores.")
@click.option("--num", type=click.IntRange(10), default=2000, show_default=True, help="Latents to sample.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds the latent sampler (torch) and the per-class shuffles (numpy).")
@click.option("--ratio", type=click.FloatRange(0, min_open=True), default=0.1, show_default=True,
              help="Fraction (<=1) or count (>1) per class taken from each end of the score ranking "
                   "(InterFaceGAN's 0.02 assumed 500k samples).")
@click.option("--split", "split_ratio", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.7,
              show_default=True, help="Per-class fraction used for training; the rest validates.")
@click.option("--C", "C", type=click.FloatRange(0, min_open=True), default=1.0, show_default=True,
              help="SVM regularisation (smaller = smoother; 0.01 suits dcgan64's 100-d Z).")
@click.option("--classifier", type=click.Choice(["svc", "linearsvc"]), default="svc", show_default=True,
              help="svc = SVC(kernel='linear') as InterFaceGAN; linearsvc is faster for large --num.")
@click.option("--space", type=click.Choice(["z", "w"]), default=None,
              help="Latent space to train in (default: the model's default space).")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--latents", "latents_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Use these latents (.npy, [N, D]) instead of sampling.")
@click.option("--scores", "scores_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Scores for --latents (.npy, [N] or [N, 1]; NaN = invalid).")
@click.option("--save-samples", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also save the sampled latents.npy and scores.npy here (for re-training without re-scoring).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Boundary .npy to write; its record goes to the same name with .json.")
@click.option("--overwrite", is_flag=True, help="Replace existing output files (never an input).")
@with_threads
def train(model, attribute, num, seed, ratio, split_ratio, C, classifier, space, batch_size, device,
          latents_file, scores_file, save_samples, output, overwrite=False) -> None:
    """Train a boundary for ATTR the InterFaceGAN way and report its validation accuracy.

    Sampling scores the faces with dlib (the face extra); --latents/--scores bring your own.

    \b
    Examples:
      latentpriv boundary train --model dcgan64 --attr smile --num 200 -o smile_boundary.npy   # ~10 s, rough
      latentpriv boundary train --model dcgan64 --attr smile --num 2000 --seed 0 -o boundaries/dcgan64_smile_boundary.npy
      latentpriv boundary train --latents z.npy --scores s.npy --attr age -o age_boundary.npy   # your own scores
    """
    from tqdm.auto import tqdm

    from latentpriv.edit import training_run

    result, npy, js = training_run.train_command(
        output, attribute=attribute, model=model, latents_file=latents_file, scores_file=scores_file, num=num,
        seed=seed, space=space, batch_size=batch_size, device=device, save_samples=save_samples,
        progress=lambda **kw: tqdm(leave=False, **kw), ratio=ratio, split_ratio=split_ratio, classifier=classifier,
        C=C, overwrite=overwrite)
    click.echo(
        f"{attribute}: validation accuracy {result.val_accuracy:.3f} (train {result.train_accuracy:.3f}; "
        f"{result.num_valid}/{result.num_samples} valid scores, {result.chosen} per class)", err=True,
    )
    click.echo(str(npy))
    click.echo(str(js))


@boundary.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_cmd(as_json: bool) -> None:
    """Every known boundary (InterFaceGAN's and the project's), its space and whether it is present.

    \b
    Examples:
      latentpriv boundary list
      latentpriv boundary list --json
    """
    from latentpriv.edit.boundaries import list_boundaries
    from latentpriv.edit.training_run import boundary_row

    rows = [boundary_row(b) for b in list_boundaries()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no boundaries known")
        return
    width = max(len(r["name"]) for r in rows)
    click.echo(f"{'name':<{width}}  space  present  where")
    for r in rows:
        if r["present"]:
            where = r["path"]
        elif r["source"] == "asset":
            where = f"registered asset: `latentpriv weights fetch {r['name']}`"
        else:
            where = r["source"] or ""
        click.echo(f"{r['name']:<{width}}  {str(r['space'] or '?'):<5}  {'yes' if r['present'] else 'no':<7}  {where}")


@boundary.command("covariance")
@click.option("--model", "model", default=None, metavar="NAME|FILE",
              help=f"Generator whose latent covariance to estimate (e.g. {MODEL_NAMES}, or a weights file).")
@click.option("--space", type=click.Choice(["z", "w", "wp"], case_sensitive=False), default=None,
              help="Latent space (default: the model's default; wp uses W's statistics).")
@click.option("--num", type=click.IntRange(2), default=None,
              help="Samples for Sigma [default: 100000].")
@click.option("--heldout", "heldout_num", type=click.IntRange(2), default=None,
              help="Further samples kept only as their mean and covariance, to evaluate R^2 [default: 20000].")
@click.option("--seed", type=click.IntRange(0), default=None, help="Latent sampler seed [default: 0].")
@click.option("--batch-size", type=click.IntRange(1), default=4096, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--force", is_flag=True, help="Re-estimate even if a matching estimate is cached.")
@click.option("--show", is_flag=True, help="List the cached estimates and exit.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def covariance_cmd(model, space, num, heldout_num, seed, batch_size, device, force, show, as_json) -> None:
    """Estimate (once) and cache a model's latent covariance Sigma, used to decorrelate releases.

    Sigma comes from the model's own samples (Z codes; W = their mapping, before truncation) and is
    cached under the asset cache dir by the weights' sha256, space, --num, --heldout and --seed;
    privatize then uses the largest cached estimate of its model.

    \b
    Examples:
      latentpriv boundary covariance --model dcgan64        # offline model: seconds
      latentpriv boundary covariance --show
      latentpriv boundary covariance --model stylegan_ffhq  # needs its weights
      latentpriv boundary covariance --model dcgan64 --num 200000
    """
    from latentpriv.edit import covariance as cov

    if show:
        rows = cov.cached_entries()
        if as_json:
            click.echo(json.dumps(rows, indent=2))
        elif not rows:
            click.echo(f"no cached covariance estimates (writing to {cov.cache_dir_for_write()})")
        else:
            for r in rows:
                click.echo(f"{r['sha256_prefix']}  {r['space']}  num {r['num']}  heldout {r['heldout_num']}  "
                           f"seed {r['seed']}  {r['path']}")
        return
    from tqdm.auto import tqdm

    from latentpriv.edit.covariance_run import covariance_command

    stats, summary = covariance_command(model, space, num=num, heldout_num=heldout_num, seed=seed, force=force,
                                        device=device, batch_size=batch_size,
                                        progress=lambda **kw: tqdm(leave=False, **kw))
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"{stats.model} ({(stats.model_sha256 or '?')[:16]}) {stats.space.upper()}: Sigma from {stats.num} "
               f"samples (held-out {stats.heldout_num}, seed {stats.seed}); trace {summary['trace']:.4g}, "
               f"eigenvalues {summary['eig_min']:.3g} .. {summary['eig_max']:.3g}, effective rank "
               f"{summary['effective_rank']:.1f} of {stats.dim}", err=True)
    click.echo(str(stats.path))

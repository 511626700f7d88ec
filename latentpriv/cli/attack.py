"""``latentpriv attack``: what adversaries infer from released faces, beside the DP bound.

Thin layer over :func:`latentpriv.evaluate.attack_run.run_attack_files` (around
:func:`latentpriv.evaluate.attack.run_attack`): load the generator, sample (or read) the faces, and print
what the attack wrote (``OUTDIR/attack.json``, ``attack.csv``, ``attack.png``). See docs/attack.md.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import click

from latentpriv.cli.options import DEFAULT_SPACES, MODEL_NAMES
from latentpriv.privacy.coordinate_mechanisms import MECHANISMS


@click.command("attack")
@click.option("--model", required=True, help="Model whose faces are sampled and whose boundaries --attr names "
                                             f"({MODEL_NAMES}).")
@click.option("--weights", default=None, metavar="FILE|NAME", help="Generator weights (default: --model's).")
@click.option("--attr", "attrs", multiple=True, metavar="NAME", help="Protected attribute; repeatable.")
@click.option("--boundary", "boundary_files", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A boundary .npy file to protect instead of / besides --attr; repeatable.")
@click.option("--epsilons", default="0.5,1,2,4", show_default=True, help="Comma-separated epsilons to attack.")
@click.option("--num", type=click.IntRange(4, 1_000_000), default=1000, show_default=True,
              help="Test faces (with --latents: at most this many of the folder's).")
@click.option("--train-num", type=click.IntRange(4, 1_000_000), default=None,
              help="The adversaries' own training faces, other samples of the model [default: --num].")
@click.option("--latents", "latents_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of .npy latents to attack instead of sampled faces.")
@click.option("--space", type=click.Choice(["z", "w", "wp"]), default=None,
              help=f"Latent space (default: the model's: {DEFAULT_SPACES}).")
@click.option("--mechanism", type=click.Choice(MECHANISMS), default="laplace",
              show_default=True, help="The release's mechanism (seed: the research notebook's, no guarantee).")
@click.option("--delta", type=float, default=None, help="delta for gaussian/seed (e.g. 1e-5).")
@click.option("--clip-radius", type=float, default=3.0, show_default=True, help="Clamp radius B.")
@click.option("--center", default="0", show_default=True, help="c: a number or 'auto' (<w_avg, n>).")
@click.option("--decorrelate/--no-decorrelate", default=None,
              help="Oblique split with the model's latent covariance (default: on when it is cached).")
@click.option("--seed", type=click.IntRange(0), default=None,
              help="Seeds the face sampling and the adversaries' training (default: a random seed, recorded).")
@click.option("--seed-noise", is_flag=True,
              help="Seed the privacy noise too (reproducible; the JSON then says the release is NOT private).")
@click.option("--ledger", "ledger_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Account the test faces' releases in this privacy ledger (default: no ledger).")
@click.option("--faces/--no-faces", default=True, show_default=True,
              help="dlib identity, perceived label and landmark features (the face extra).")
@click.option("--lpips/--no-lpips", default=True, show_default=True, help="LPIPS and VGG image features.")
@click.option("-o", "--outdir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder: attack.json, attack.csv, attack.png.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs in OUTDIR.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda[:N].")
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True,
              help="Processes for the dlib face analysis (one core each); 0: every core this process may use.")
def attack(model, weights, attrs, boundary_files, epsilons, num, train_num, latents_dir, space, mechanism, delta,
           clip_radius, center, decorrelate, seed, seed_noise, ledger_path, faces, lpips, outdir, overwrite,
           device, workers) -> None:
    """Attack released faces: attribute inference, re-identification and quality vs the DP bound.

    \b
    Example:
      latentpriv attack --model dcgan64 --attr smile --epsilons 0.5,1,2,4 --num 1000 -o attack_out

    Adversaries never see the original: a threshold on the released coordinate (bounded by the guarantee),
    a classifier on the released residual and one on the private render (outside the guarantee), dlib
    identity and LPIPS. See docs/attack.md.
    """
    from tqdm.auto import tqdm

    from latentpriv.cli.options import parse_center, parse_epsilons, warn
    from latentpriv.evaluate import attack_run
    from latentpriv.outputs import check_outputs
    from latentpriv.privacy.coordinate_mechanisms import validate_params

    if not attrs and not boundary_files:
        raise click.UsageError("give the protected attribute: --attr NAME (or --boundary FILE)")
    eps = parse_epsilons(epsilons)
    delta_v = validate_params(mechanism, delta)
    check_outputs([outdir / name for name in attack_run.OUTPUT_NAMES], overwrite=overwrite, option="-o")
    settings = attack_run.AttackSettings(
        model=model, epsilons=eps, attrs=attrs, boundary_files=boundary_files, weights=weights, device=device,
        num=num, latents_dir=latents_dir, space=space, mechanism=mechanism, delta=delta_v, clip_radius=clip_radius,
        center=parse_center(center), seed=secrets.randbits(31) if seed is None else seed, seed_noise=seed_noise,
        ledger_path=ledger_path, decorrelate=decorrelate, train_num=train_num, faces=faces, lpips=lpips,
        workers=workers)
    out = attack_run.run_attack_files(outdir, settings, warn=warn, progress=lambda **kw: tqdm(leave=False, **kw))
    for r in out["results"]:
        adv = r["adversaries"]
        fmt = lambda a: "-" if a.get("accuracy") is None else f"{a['accuracy']:.3f} [{a['ci'][0]:.3f}, {a['ci'][1]:.3f}]"  # noqa: E731
        bound = "none" if r["bound"] is None else f"{r['bound']:.3f}"
        click.echo(f"eps {r['epsilon']:g} {r['attribute']}: bound {bound}  coordinate {fmt(adv['coordinate'])}  "
                   f"residual {fmt(adv['residual'])}  image {fmt(adv['image'])}  "
                   f"same-person {r['identity'].get('same_person_rate')}  lpips {r['lpips_median']}")
    click.echo(f"wrote {', '.join(out['files'])}", err=True)

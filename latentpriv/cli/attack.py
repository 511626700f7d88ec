"""``latentpriv attack``: what adversaries infer from released faces, beside the DP bound.

Thin layer over :func:`latentpriv.evaluate.attack.run_attack`: load the generator, sample (or read) the faces,
resolve the directions and the split, build the release (the ledger only with ``--ledger``), run, and write
``OUTDIR/attack.json``, ``attack.csv`` and ``attack.png`` atomically. See docs/attack.md.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from pathlib import Path

import click
import numpy as np

from latentpriv.errors import ConfigError, InputError

log = logging.getLogger(__name__)

FORMAT = "latentpriv.attack/1"


def _latents_from_dir(folder: Path, *, space: str | None, model: str, G) -> tuple[np.ndarray, str, list[str]]:
    from latentpriv.cli.privatize import load_latent_input

    if not folder.is_dir():
        raise InputError(f"{folder}: not a directory; --latents takes a folder of .npy latents")
    files = sorted(p for p in folder.iterdir() if p.suffix == ".npy" and not p.name.startswith("."))
    if not files:
        raise InputError(f"{folder}: no .npy latents in it; write some with `latentpriv invert` or pass no --latents")
    parts = [load_latent_input(p, space=space, model=model, generator=G) for p in files]
    sp = parts[0].space
    if any(p.space != sp for p in parts):
        raise InputError(f"{folder}: latents in different spaces ({sorted({p.space for p in parts})}); "
                         "keep one space per folder")
    return np.concatenate([p.latent for p in parts]).astype(np.float32), sp, [str(p) for p in files]


def _sample(G, n: int, space: str, seed: int) -> np.ndarray:
    import torch

    with torch.no_grad():
        z = G.sample_z(n, torch.Generator().manual_seed(seed))
        lat = z if space == "z" else G.mapping(z.to(G.device) if hasattr(G, "device") else z)
    return lat.detach().cpu().numpy().astype(np.float32)


@click.command("attack")
@click.option("--model", required=True, help="Model whose faces are sampled and whose boundaries --attr names "
                                             "(dcgan64, stylegan_ffhq).")
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
              help="Latent space (default: the model's: z for dcgan64, w for StyleGAN).")
@click.option("--mechanism", type=click.Choice(["laplace", "gaussian", "rr", "seed"]), default="laplace",
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
    from latentpriv.evaluate.report import write_csv
    from latentpriv.cli.options import parse_epsilons
    from latentpriv.cli.privatize import (
        load_generator_for,
        parse_center,
        render_latents,
        resolve_center,
        resolve_covariance,
        validate_common,
    )
    from latentpriv.edit.boundaries import resolve_directions
    from latentpriv.evaluate.attack import AttackData, attack_figure, csv_rows, run_attack
    from latentpriv.io import atomic_write, write_json
    from latentpriv.privacy.mechanisms import orthonormalize, privatize, split_basis
    from latentpriv.privacy.noise import make_noise_source

    if not attrs and not boundary_files:
        raise click.UsageError("give the protected attribute: --attr NAME (or --boundary FILE)")
    eps = parse_epsilons(epsilons)
    delta_v = validate_common(mechanism, delta, None)
    outputs = [outdir / "attack.json", outdir / "attack.csv", outdir / "attack.png"]
    from latentpriv.outputs import check_outputs

    check_outputs(outputs, overwrite=overwrite, option="-o")
    started = time.time()
    if seed is None:
        seed = secrets.randbits(31)
    seeds = np.random.SeedSequence(seed).generate_state(4)   # test faces, training faces, train noise, noise

    G = load_generator_for(weights, model, device)
    source: dict = {}
    if latents_dir is not None:
        test, sp, files = _latents_from_dir(latents_dir, space=space, model=model, G=G)
        test = test[:num]
        source = {"latents": str(latents_dir), "files": files}
    else:
        sp = space or str(G.default_space)
        if sp == "wp":
            raise ConfigError("sampling draws Z/W latents; for W+ pass --latents DIR")
        test = _sample(G, num, sp, int(seeds[0]))
        source = {"samples": num, "seed_stream": "numpy SeedSequence(seed)[0]"}
    n_train = train_num or test.shape[0]
    train_space = "w" if sp == "wp" else sp
    train = _sample(G, n_train, train_space, int(seeds[1]))
    if sp == "wp":  # the adversaries' W+ training faces: W tiled over the layers, as the mapping gives them
        train = np.repeat(train[:, None, :], test.shape[1], axis=1)

    dirs, bounds = resolve_directions(attrs=attrs, boundary_files=boundary_files, model=model,
                                      space=train_space if sp != "wp" else "w", dim=test.shape[-1])
    dirs = orthonormalize(dirs)
    names = [b.attribute or b.name for b in bounds]
    centers, center_mode = resolve_center(parse_center(center), dirs, sp, G)
    covariance = resolve_covariance(decorrelate, weights or model, train_space, device=device,
                                    warn_fn=lambda m: click.echo(f"Warning: {m}", err=True))
    if mechanism == "seed" and covariance is not None:
        if decorrelate:
            raise ConfigError("--mechanism seed is the notebook's orthogonal step; drop --decorrelate")
        covariance = None
    u = split_basis(dirs, covariance)

    common = dict(delta=delta_v, mechanism=mechanism, clip_radius=clip_radius, center=centers,
                  attributes=names, covariance=covariance)
    noise = make_noise_source(np.random.default_rng(int(seeds[3])) if seed_noise else None)
    train_noise = make_noise_source(np.random.default_rng(int(seeds[2])))

    def quiet(fn):
        import warnings

        from latentpriv.privacy.mechanisms import SeedMechanismWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SeedMechanismWarning)  # said once below, not once per release
            return fn()

    def train_release(latent: np.ndarray, epsilon: float):
        r = quiet(lambda: privatize(latent, dirs, epsilon=epsilon, noise=train_noise, **common))
        return np.asarray(r.latent), r.record

    if ledger_path is None:
        def release(latent: np.ndarray, epsilon: float):
            r = quiet(lambda: privatize(latent, dirs, epsilon=epsilon, noise=noise, **common))
            return np.asarray(r.latent), r.record
    else:
        from latentpriv.privacy.ledger import Ledger
        from latentpriv.privacy.release import ReleaseParams, accounted_release

        ledger = Ledger(ledger_path)

        def release(latent: np.ndarray, epsilon: float):
            params = ReleaseParams(mechanism=mechanism, epsilon=epsilon, delta=delta_v, clip_radius=clip_radius)
            r = quiet(lambda: accounted_release(latent, dirs, params=params, noise=noise, ledger=ledger,
                                                center=centers, attributes=names, covariance=covariance,
                                                ledger_info={"command": "attack"}))
            return r.latent, r.record

    networks = None
    skipped_lpips = None
    if lpips:
        from latentpriv.errors import AssetError
        from latentpriv.inversion.perceptual import PerceptualNetworks

        try:
            networks = PerceptualNetworks.load(G.device if hasattr(G, "device") else "cpu")
        except AssetError as exc:
            skipped_lpips = f"LPIPS weights missing ({str(exc).splitlines()[0]}): `latentpriv weights fetch vgg16 lpips_vgg`"
            click.echo(f"Warning: skipping LPIPS and VGG features: {skipped_lpips}", err=True)
    if mechanism == "seed":
        click.echo("Warning: --mechanism seed gives NO differential-privacy guarantee: no bound to compare with",
                   err=True)
    if seed_noise:
        click.echo(f"Warning: --seed-noise: the privacy noise is seeded ({seed}): these releases are NOT private "
                   "(fine for measuring an attack, never for publishing)", err=True)

    from tqdm.auto import tqdm

    data = AttackData(test=test, train=train, directions=dirs, centers=centers, attributes=names, split_basis=u)
    result = run_attack(data, epsilons=eps, release=release, train_release=train_release,
                        render=lambda x: render_latents(G, x, sp), networks=networks, faces=faces,
                        seed=int(seed), progress=lambda **kw: tqdm(leave=False, **kw),
                        face_workers=workers or len(os.sched_getaffinity(0)))
    if skipped_lpips:
        result["skipped"]["lpips"] = skipped_lpips
    for key, why in result["skipped"].items():
        click.echo(f"Warning: skipped {key}: {why}", err=True)

    out = {
        "format": FORMAT,
        "model": model,
        "attributes": result["attributes"],
        "mechanism": mechanism,
        "num": result["num"],
        "results": result["results"],
        "num_train": result["num_train"],
        "generator": G.info(),
        "space": sp,
        "source": source,
        "epsilons": eps,
        "delta": delta_v,
        "clip_radius": clip_radius,
        "centers": centers.tolist(),
        "center_mode": center_mode,
        "split": "oblique" if covariance is not None else "orthogonal",
        "covariance": None if covariance is None else {
            "model": getattr(covariance, "model", None), "num": getattr(covariance, "num", None),
            "model_sha256": getattr(covariance, "model_sha256", None)},
        "boundaries": [b.info() for b in bounds],
        "seed": int(seed),
        "noise": ({"sampler": "seeded numpy (--seed-noise)", "seeded": True,
                   "note": "the privacy noise was seeded: these releases are NOT private; an attack measurement only"}
                  if seed_noise else {"sampler": "OpenDP", "seeded": False}),
        "release_private": (not seed_noise) and mechanism != "seed",
        "train_noise": "seeded numpy: the adversaries' simulation of the release on their own faces",
        "ledger": str(ledger_path) if ledger_path is not None else None,
        "image_features": result["image_features"],
        "faces_found_original": result["faces_found_original"],
        "skipped": result["skipped"],
        "releases": result["releases"],
        "seconds": round(time.time() - started, 1),
    }
    outdir.mkdir(parents=True, exist_ok=True)
    write_json(outputs[0], out)
    write_csv(outputs[1], csv_rows(result))
    png = None
    try:
        png = attack_figure(out)
    except ImportError:
        click.echo("Warning: matplotlib is not installed: no attack.png (pip install 'latentpriv[plot]')", err=True)
    if png is not None:
        with atomic_write(outputs[2]) as fh:
            fh.write(png)
    for r in out["results"]:
        adv = r["adversaries"]
        fmt = lambda a: "-" if a.get("accuracy") is None else f"{a['accuracy']:.3f} [{a['ci'][0]:.3f}, {a['ci'][1]:.3f}]"  # noqa: E731
        bound = "none" if r["bound"] is None else f"{r['bound']:.3f}"
        click.echo(f"eps {r['epsilon']:g} {r['attribute']}: bound {bound}  coordinate {fmt(adv['coordinate'])}  "
                   f"residual {fmt(adv['residual'])}  image {fmt(adv['image'])}  "
                   f"same-person {r['identity'].get('same_person_rate')}  lpips {r['lpips_median']}")
    click.echo(f"wrote {outputs[0]}, {outputs[1]}" + (f", {outputs[2]}" if png is not None else ""), err=True)

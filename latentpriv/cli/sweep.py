"""``latentpriv sweep``: the privacy/utility picture - a labelled grid of releases over epsilon."""

from __future__ import annotations

import math
import uuid
from pathlib import Path

import click
import numpy as np

from latentpriv.cli.options import parse_epsilons, with_threads
from latentpriv.cli.privatize import (
    check_outputs,
    load_generator_for,
    load_latent_input,
    parse_center,
    parse_layers,
    parse_split,
    privacy_options,
    render_latents,
    resolve_center,
    resolve_covariance,
    warn,
)
from latentpriv.errors import ConfigError, InputError
from latentpriv.privacy.coordinate_mechanisms import get_mechanism, validate_params

#: A sweep composing more than this epsilon on one face asks for --yes (or a --max-epsilon budget).
CONFIRM_EPSILON = 10.0


def _label(eps: float, delta: float) -> str:
    if math.isinf(eps):
        return "eps=inf\n(no noise)"
    return f"eps={eps:g}" + (f"\ndelta={delta:g}" if delta else "")


def compose_grid(images: list[list[np.ndarray]], row_labels: list[str], col_labels: list[str], *,
                 cell: int, title: str = "") -> np.ndarray:
    """Lay out ``images[row][col]`` (uint8 HxWx3) as a labelled uint8 grid (PIL text)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    pad, left, top = 4, 96, 34 if title else 20
    rows, cols = len(images), max(len(r) for r in images)
    canvas = Image.new("RGB", (left + cols * (cell + pad) + pad, top + rows * (cell + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 2), title, fill="black", font=font)
    for j, lab in enumerate(col_labels):
        draw.text((left + j * (cell + pad) + pad, top - 14), lab, fill="black", font=font)
    for i, row in enumerate(images):
        y = top + i * (cell + pad) + pad
        draw.multiline_text((pad, y + cell // 2 - 10), row_labels[i], fill="black", font=font)
        for j, img in enumerate(row):
            tile = Image.fromarray(img)
            if tile.size != (cell, cell):
                tile = tile.resize((cell, cell), Image.LANCZOS if tile.size[0] > cell else Image.NEAREST)
            canvas.paste(tile, (left + j * (cell + pad) + pad, y))
    return np.asarray(canvas)


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
    from latentpriv.edit.boundaries import resolve_directions
    from latentpriv.io import save_image, write_json
    from latentpriv.privacy.ledger import Ledger, total_of
    from latentpriv.privacy.mechanisms import clamp_only
    from latentpriv.privacy.noise import make_noise_source
    from latentpriv.privacy.release import ReleaseParams, accounted_release, check_ledger_path

    eps_list = parse_epsilons(epsilons, allow_inf=True)
    delta_v = validate_params(mechanism, delta, max_epsilon=max_epsilon)
    center_v = parse_center(center)
    layer_idx = parse_layers(layers)
    split = parse_split(epsilon_split)
    G = load_generator_for(weights, model, device)
    inp = load_latent_input(input_path, space=space, model=model, generator=G)
    if inp.latent.shape[0] != 1:
        raise InputError(f"{input_path}: sweep takes one latent, got {inp.latent.shape[0]} rows; save one row")
    if layer_idx is not None and inp.space != "wp":
        raise ConfigError("--layers applies only to W+ latents (--space wp)")
    dirs, bounds = resolve_directions(attrs=attrs, boundary_files=boundary_files, conditions=conditions,
                                      model=model, space=inp.space, dim=inp.latent.shape[-1])
    centers, center_mode = resolve_center(center_v, dirs, inp.space, G)
    covariance = resolve_covariance(decorrelate if get_mechanism(mechanism).dithered else False, weights or model,
                                    inp.space, device=device, warn_fn=warn)
    noise = make_noise_source(seed)
    finite = [e for e in eps_list if math.isfinite(e)]
    params = [ReleaseParams(mechanism=mechanism, epsilon=e, delta=delta_v, clip_radius=clip_radius,
                            epsilon_split=split, noise_clip=noise_clip, layers=layer_idx, max_norm=max_norm)
              for e in finite]
    # validates the settings before any output; the release charges the same mechanisms' spends
    planned = total_of("sweep", [p.spend(len(dirs), noise) for p in params for _ in range(samples)])
    record_path = output.with_suffix(".json")
    check_outputs([output, record_path], [input_path], overwrite)
    if not get_mechanism(mechanism).private:
        warn("--mechanism seed is the research notebook's step and gives NO differential-privacy guarantee")
    if seed is not None:
        warn(f"--seed {seed}: reproducible numpy noise, NOT for release")

    names = [b.attribute or b.name for b in bounds]
    if params:   # say what the grid costs before any draw; a large spend needs --yes or a budget
        cost = "unbounded (no guarantee)" if planned.epsilon is None else f"epsilon {planned.epsilon:.4g}" + (
            f", delta {planned.delta:.3g}" if planned.delta else "")
        click.echo(f"sweep: {planned.releases} releases of this face ({samples} per finite epsilon), composed "
                   f"spend {cost}{' [seeded: not a private release]' if seed is not None else ''}", err=True)
        big = planned.epsilon is None or planned.epsilon > CONFIRM_EPSILON
        if noise.for_release and big and not yes and max_epsilon is None:
            raise InputError(f"this sweep spends {cost} on the face (more than {CONFIRM_EPSILON:g}); confirm with "
                             "--yes, set a budget with --max-epsilon, or use fewer --samples/--epsilons")
    ledger = Ledger(ledger_path)
    check_ledger_path(ledger, inputs=[input_path], outputs=[output, record_path])
    release_id = uuid.uuid4().hex
    rel = None
    if params:   # every finite-epsilon sample is one release of the face: one accounted release, charge pending
        rel = accounted_release(inp.latent, dirs, params=params, repeats=samples, noise=noise, ledger=ledger,
                                center=centers, attributes=names, max_epsilon=max_epsilon, force=force, warn=warn,
                                covariance=covariance, model=model, space=inp.space, subject=subject, output=output,
                                label=label, command="sweep", defer=True, release_id=release_id,
                                ledger_info={"input_file": str(input_path), "output": str(output),
                                             "sweep": release_id})
    draws = iter(rel.draws if rel is not None else [])
    try:
        rows: list[np.ndarray] = []
        row_records = []
        for e in eps_list:
            if math.isinf(e):
                lat = clamp_only(inp.latent, dirs, clip_radius=clip_radius, center=centers, layers=layer_idx,
                                 covariance=covariance if decorrelate is not False else None)
                rows.append(np.repeat(lat, samples, axis=0))
                row_records.append({"epsilon": None, "label": "inf (no noise: clamp only, not private)"})
                continue
            lat, rec = next(draws)
            rows.append(lat)
            row_records.append({k: rec[k] for k in ("epsilon", "delta", "epsilon_per_direction", "noise",
                                                    "guarantee")})
        original = render_latents(G, inp.latent, inp.space)[0]
        images = [[original, *render_latents(G, r, inp.space)] for r in rows]
        size = cell or min(int(images[0][0].shape[0]), 256)
        title = (f"{mechanism} on {', '.join(names)} (B={clip_radius:g}, c={center_mode if center_v == 'auto' else center})"
                 + ("  [seeded: not for release]" if seed is not None else ""))
        grid = compose_grid(images, [_label(e, delta_v) for e in eps_list],
                            ["original", *[f"sample {i + 1}" for i in range(samples)]], cell=size, title=title)
        spent = total_of("sweep", rel.spends if rel is not None else [])
        write_json(record_path, {
            "format": "latentpriv.sweep/1", "release_id": release_id, "input": str(input_path),
            "output": str(output), "mechanism": mechanism, "samples": samples,
            "epsilons": [None if math.isinf(e) else e for e in eps_list], "clip_radius": clip_radius,
            "centers": centers.tolist(), "center_mode": center_mode, "space": inp.space, "model": model,
            "boundaries": [b.info() for b in bounds], "conditions": list(conditions), "rows": row_records,
            "releases": len(rel.spends) if rel is not None else 0, "epsilon_spent": spent.epsilon,
            "delta_spent": spent.delta,
            "note": "the grid shows the original in its first column: it is a research picture, not a release",
            "sampler": noise.describe(), "generator": G.info(), "ledger": str(ledger.path),
        })
        save_image(output, grid)
    except BaseException:
        if rel is not None:
            rel.cancel()   # nothing was written: nothing is charged
        raise
    if rel is not None:
        rel.commit()
    click.echo(str(output))

"""``latentpriv privatize``: release a latent with differentially private attribute coordinates.

Thin layer over :func:`latentpriv.privatize`: resolve the directions, validate the parameters, check the
ledger, draw, write ``<output>.npy`` + ``<output>.json`` (the record) atomically, optionally render.
The helpers here are shared with ``latentpriv sweep``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from latentpriv.errors import AssetError, ConfigError, InputError
from latentpriv.privacy.mechanisms import DEFAULT_MAX_NORM

log = logging.getLogger(__name__)

#: default latent space of a model when neither --space nor a loaded generator says otherwise
MODEL_DEFAULT_SPACE = {"stylegan_ffhq": "w", "dcgan64": "z"}


# ------------------------------------------------------------------------------------- shared helpers


def parse_center(value: str) -> str | float:
    """``--center``: ``auto`` or a number."""
    if value.strip().lower() == "auto":
        return "auto"
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: give a number (e.g. 0) or 'auto'", param_hint="--center") from None


def parse_layers(value: str | None) -> list[int] | None:
    """``--layers 0-7`` or ``0,1,2`` -> indices."""
    if value is None:
        return None
    out: list[int] = []
    try:
        for part in value.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = part.split("-", 1)
                out.extend(range(int(lo), int(hi) + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise click.BadParameter(f"{value!r}: give layer indices like 0-7 or 0,1,2", param_hint="--layers") from None
    if not out:
        raise click.BadParameter("no layer given", param_hint="--layers")
    return out


def parse_split(value: str | None) -> list[float] | None:
    if value is None:
        return None
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give comma-separated weights, e.g. 2,1",
                                 param_hint="--epsilon-split") from None


@dataclass
class LatentInput:
    path: Path
    latent: np.ndarray     # validated float32: (N, D) for z/w, (N, L, D) for wp
    raw_shape: tuple
    space: str


def infer_space(arr: np.ndarray, space: str | None, model: str, generator: Any | None = None) -> str:
    if space:
        return space
    if arr.ndim == 3:
        return "wp"
    if generator is not None:
        return str(generator.default_space)
    return MODEL_DEFAULT_SPACE.get(model, "w")


def load_latent_input(path: Path, *, space: str | None, model: str, generator: Any | None = None) -> LatentInput:
    from latentpriv.io import check_latent, load_npy

    arr = load_npy(path)
    if arr.dtype.kind == "f" and np.finfo(arr.dtype).eps > np.finfo(np.float32).eps:
        raise InputError(f"{path}: {arr.dtype} latent: its rounding carries how the coordinate was encoded and is "
                         "not covered by the float-level guarantee (float32/float64 only); save it as float32 from "
                         f"its source (converting this file keeps the {arr.dtype} rounding)")
    sp = infer_space(arr, space, model, generator)
    if space is None and sp == "w" and arr.ndim == 2 and arr.shape[0] in (14, 16, 18):
        warn(f"{path}: {arr.shape[0]} rows are treated as {arr.shape[0]} separate W latents (faces); "
             "if this is one W+ latent (layers x 512), pass --space wp")
    if sp not in ("z", "w", "wp"):
        raise InputError(f"--space {sp}: choose z, w or wp")
    raw_shape = tuple(arr.shape)
    if sp == "wp" and arr.ndim == 2:
        arr = arr[None]
    dim = arr.shape[-1] if arr.ndim else 0
    if generator is not None and arr.ndim:   # the model knows the dimension: blame the latent, not a boundary
        dim = int(generator.z_dim if sp == "z" else generator.w_dim)
    checked = check_latent(arr, name=str(path), dim=dim,
                           num_layers=arr.shape[1] if sp == "wp" and arr.ndim == 3 else None, space=sp)
    # keep float64 inputs in float64; everything else is float32 (check_latent's canonical form)
    lat = np.asarray(arr, dtype=np.float64).reshape(checked.shape) if arr.dtype == np.float64 else checked
    return LatentInput(path, lat, raw_shape, sp)


def load_generator_for(weights: str | None, model: str, device: str):
    import latentpriv

    return latentpriv.load_generator(weights or model, device=device)


def resolve_center(center: str | float, dirs: np.ndarray, space: str, generator: Any | None) -> tuple[np.ndarray, str]:
    """Centre per direction and a description. ``auto``: ``<w_avg, n_i>`` for W/W+, 0 for Z (prior mean)."""
    if center != "auto":
        return np.full(len(dirs), float(center)), "value"
    if space == "z":
        return np.zeros(len(dirs)), "auto: Z prior mean 0"
    if generator is None or getattr(generator, "w_avg", None) is None:
        raise ConfigError("--center auto needs a generator with w_avg: pass --weights FILE or --model NAME "
                          "whose weights are present")
    w_avg = generator.w_avg.detach().cpu().numpy().astype(np.float64).reshape(-1)
    if w_avg.size != dirs.shape[1]:
        raise InputError(f"generator w_avg has dimension {w_avg.size}, directions {dirs.shape[1]}")
    return dirs @ w_avg, "auto: <w_avg, n_i> of the generator"


def resolve_covariance(decorrelate: bool | None, model: str, space: str, *, device: str = "cpu",
                       warn_fn=None) -> Any:
    """The model's cached latent covariance for ``--decorrelate`` (None: orthogonal split).

    ``decorrelate`` None (default): use Sigma when it is cached, else the orthogonal split with a warning;
    True: estimate and cache Sigma if missing (an error if the model's weights are missing); False: none.
    """
    from latentpriv.edit.covariance import covariance_for

    if decorrelate is False:
        return None
    try:
        cov = covariance_for(model, space, estimate=bool(decorrelate), device=device)
    except (AssetError, InputError):
        if decorrelate:
            raise
        cov = None  # e.g. the weights are absent: privatize itself needs no generator
    if cov is None and warn_fn is not None:
        warn_fn(f"no latent covariance known for {model}: orthogonal split, so the residual may still predict "
                f"the protected coordinate; `latentpriv boundary covariance --model {model}` estimates it (needs "
                "the model's weights), --no-decorrelate silences this")
    return cov


def warn_above_max_norm(inp: LatentInput, max_norm: float) -> None:
    """Say (on the user's console only: nothing public depends on it) when a record's norm is above --max-norm,
    where float32 encodings of one face are no longer guaranteed to be neighbours."""
    rows = np.asarray(inp.latent, dtype=np.float64).reshape(inp.latent.shape[0], -1)
    norms = np.sqrt((rows ** 2).sum(axis=1))
    if (norms > max_norm).any():
        warn(f"{inp.path}: {int((norms > max_norm).sum())} record(s) with norm up to {norms.max():.4g} > --max-norm "
             f"{max_norm:g}: released, but the float-level guarantee covers float encodings of a face only up to "
             "--max-norm; raise --max-norm (a larger residual dither) to cover them")


def check_outputs(paths: list[Path], inputs: list[Path], overwrite: bool) -> None:
    """Refuse to overwrite an input ever, or an existing output unless ``overwrite`` (latentpriv.outputs)."""
    from latentpriv.outputs import check_outputs as check

    check(paths, overwrite=overwrite, inputs=inputs)


def render_latents(G, latent: np.ndarray, space: str) -> np.ndarray:
    """uint8 [N, H, W, 3] images of a latent batch (the generator's default truncation for Z/W)."""
    import torch

    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(latent, dtype=np.float32))
        device = getattr(G, "device", None)
        if isinstance(device, torch.device):
            x = x.to(device)
        images = G.synthesize(x, space=space)
    return G.to_uint8(images)


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
        click.option("--mechanism", type=click.Choice(["laplace", "gaussian", "rr", "seed"]), default="laplace",
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


def validate_common(mechanism: str, delta: float | None, max_epsilon: float | None) -> float:
    """The delta to pass on (0.0 when absent)."""
    from latentpriv.privacy.accounting import check_number

    if max_epsilon is not None:
        check_number("--max-epsilon", max_epsilon, low=0.0)
    if delta is None:
        if mechanism in ("gaussian", "seed"):
            raise ConfigError(f"--mechanism {mechanism} needs --delta in (0, 1), e.g. --delta 1e-5")
        return 0.0
    if mechanism in ("laplace", "rr"):
        raise ConfigError(f"--delta does not apply to --mechanism {mechanism} (pure epsilon-DP); drop it")
    return delta


def warn(msg: str) -> None:
    click.echo(f"Warning: {msg}", err=True)


def default_output(path: Path) -> Path:
    return path.with_name(f"{path.stem}_private.npy")


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
    import json

    from latentpriv.edit.boundaries import resolve_directions
    from latentpriv.io import save_image, save_npy, write_json
    from latentpriv.privacy.ledger import Ledger
    from latentpriv.privacy.noise import make_noise_source
    from latentpriv.privacy.release import ReleaseParams, accounted_release, check_ledger_path

    if input_path.is_dir():
        # a folder: the batch engine (torchrun shards, one shared ledger, verified resume, results.jsonl)
        from latentpriv.runs.engine import privatize_dir

        if as_json:
            raise ConfigError("--json applies to a single file; a folder run writes OUTDIR/results.jsonl")
        privatize_dir(input_path, output, device=device, overwrite=overwrite, seed=seed, warn=warn, render_dir=render,
                      epsilon=epsilon, attrs=attrs, boundary_files=boundary_files, conditions=conditions,
                      mechanism=mechanism, delta=delta, clip_radius=clip_radius, center=center,
                      epsilon_split=epsilon_split, noise_clip=noise_clip, space=space, layers=layers, model=model,
                      weights=weights, ledger_path=ledger_path, max_epsilon=max_epsilon, force=force,
                      decorrelate=decorrelate, max_norm=max_norm, subject=subject, label=label)
        return
    if render is not None and render.is_dir():
        raise InputError(f"--render {render}: a folder; for a single latent give an image file, e.g. private.png")
    delta_v = validate_common(mechanism, delta, max_epsilon)
    center_v = parse_center(center)
    layer_idx = parse_layers(layers)
    split = parse_split(epsilon_split)

    G = load_generator_for(weights, model, device) if (render is not None or center_v == "auto") else None
    inp = load_latent_input(input_path, space=space, model=model, generator=G)
    warn_above_max_norm(inp, max_norm)
    # with --attr the model's boundaries fix the dimension, so a mismatch is the latent's fault (say so)
    dirs, bounds = resolve_directions(attrs=attrs, boundary_files=boundary_files, conditions=conditions,
                                      model=model, space=inp.space, dim=None if attrs else inp.latent.shape[-1])
    if dirs.shape[1] != inp.latent.shape[-1]:
        raise InputError(f"{input_path}: latent has shape {inp.raw_shape}, {inp.latent.shape[-1]} values per row, but "
                         f"model {model}'s {inp.space.upper()} boundaries have {dirs.shape[1]}; pass a {model} "
                         "latent or the right --model/--space")
    centers, center_mode = resolve_center(center_v, dirs, inp.space, G)
    noise = make_noise_source(seed)
    params = ReleaseParams(mechanism=mechanism, epsilon=epsilon, delta=delta_v, clip_radius=clip_radius,
                           epsilon_split=split, noise_clip=noise_clip, layers=layer_idx, max_norm=max_norm)
    calib = params.calibration(len(dirs), noise)  # validates the settings before any file is touched
    covariance = resolve_covariance(decorrelate if mechanism != "seed" else False, weights or model, inp.space,
                                    device=device, warn_fn=warn)
    if layer_idx is not None and inp.space != "wp":
        raise ConfigError("--layers applies only to W+ latents (--space wp)")

    output = output or default_output(input_path)
    record_path = output.with_suffix(".json")
    n = inp.latent.shape[0]
    render_paths = []
    if render is not None:
        render_paths = [render] if n == 1 else [render.with_name(f"{render.stem}_{i}{render.suffix or '.png'}")
                                                for i in range(n)]
    check_outputs([output, record_path, *render_paths], [input_path], overwrite)

    if mechanism == "seed":
        warn("--mechanism seed is the research notebook's step and gives NO differential-privacy guarantee")
    if seed is not None:
        warn(f"--seed {seed}: reproducible numpy noise: this release is NOT private (the record keeps the seed, "
             "anyone can replay the noise); for research only, never publish it")

    ledger = Ledger(ledger_path)
    check_ledger_path(ledger, inputs=[input_path], outputs=[output, record_path, *render_paths])

    def commit(released: np.ndarray, record: dict) -> None:
        save_npy(output, released.reshape(inp.raw_shape))
        write_json(record_path, record)

    info = {"input": str(input_path), "output": str(output), "space": inp.space, "model": model,
            "center_mode": center_mode, "boundaries": [b.info() for b in bounds], "conditions": list(conditions)}
    if G is not None:
        info["generator"] = G.info()
    rel = accounted_release(inp.latent, dirs, params=params, noise=noise, ledger=ledger, center=centers,
                            attributes=[b.attribute or b.name for b in bounds], max_epsilon=max_epsilon,
                            force=force, record_info=info,
                            ledger_info={"input_file": str(input_path), "output": str(output)},
                            commit=commit, warn=warn, covariance=covariance, model=model, space=inp.space,
                            subject=subject, output=output, output_shape=inp.raw_shape, label=label)
    record = rel.record

    if render_paths:
        images = render_latents(G, rel.latent, inp.space)
        for p, img in zip(render_paths, images, strict=True):
            save_image(p, img)
    if as_json:
        click.echo(json.dumps(record, indent=2))
        return
    click.echo(str(output))
    for p in render_paths:
        click.echo(str(p))
    why = sorted({t.reason for t in rel.totals.values() if t.reason})
    worst = f"unbounded ({why[0]})" if rel.worst_epsilon is None and why else (
        "unbounded" if rel.worst_epsilon is None else f"{rel.worst_epsilon:.4g}")
    g = record["guarantee"]
    claim = "no guarantee" if g["type"] == "none" else g["statement"]
    click.echo(f"{mechanism}: {claim}; ledger total for this input: epsilon {worst}"
               + (f" (delta {max(t.delta for t in rel.totals.values()):.3g})" if calib.delta else ""), err=True)

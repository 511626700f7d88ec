"""``latentpriv evaluate``: privacy/utility numbers (and curves) for reconstructions and private renders.

Two modes (the layout of a run directory is documented in docs/evaluation.md):

* **compare** images with an original photo: ``evaluate RUN_DIR`` or ``evaluate --original photo.png
  --recon recon.png --private p1.png ...``: PSNR, SSIM, LPIPS (VGG), identity distance (dlib, 0.6
  same-person threshold), landmark attribute scores and their change, and the coordinate of each image's
  latent along each boundary;
* **sweep** (``--sweep``): privatize latents over a grid of epsilons x mechanisms with a generator,
  render, measure, and optionally ``--plot`` attribute change and identity distance against epsilon.

The numbers come from :mod:`latentpriv.evaluate.metrics`; this module only finds files, loads, and writes.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from pathlib import Path
from typing import Any

import click
import numpy as np

from latentpriv.cli.options import parse_epsilons, with_threads
from latentpriv.errors import AssetError, ConfigError, InputError, LatentprivError

log = logging.getLogger(__name__)

ORIGINAL_STEMS = ("original", "target", "photo", "aligned")
RECON_STEMS = ("recon", "reconstruction")


# ------------------------------------------------------------------------------------- helpers


def _warn(msg: str) -> None:
    click.echo(f"Warning: {msg}", err=True)


def _names(value: str, option: str, allowed: tuple[str, ...]) -> list[str]:
    out = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in out if v not in allowed]
    if not out or bad:
        raise click.BadParameter(f"{value!r}: choose from {', '.join(allowed)}", param_hint=option)
    return out


def _is_image(p: Path) -> bool:
    from latentpriv.io import IMAGE_SUFFIXES

    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def classify_run_dir(run_dir: Path, original: Path | None, recon: Path | None) -> tuple[Path, list[tuple[str, Path]]]:
    """(original, [(role, path)]) for a run directory; see docs/evaluation.md for the naming rules."""
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: not a directory")
    images = sorted(p for p in run_dir.iterdir() if _is_image(p))
    if original is None:
        found = [p for stem in ORIGINAL_STEMS for p in images if p.stem.lower() == stem]
        if not found:
            raise InputError(f"{run_dir}: no original image (name it {'/'.join(ORIGINAL_STEMS)}.png or pass "
                             "--original FILE)")
        original = found[0]
    rest: list[tuple[str, Path]] = []
    for p in images:
        if p.resolve() == original.resolve():
            continue
        is_recon = (recon is not None and p.resolve() == recon.resolve()) or (
            recon is None and (p.stem.lower() in RECON_STEMS or p.stem.lower().endswith("_recon")))
        rest.append(("reconstruction" if is_recon else "private", p))
    if recon is not None and not any(p.resolve() == recon.resolve() for _, p in rest):
        rest.insert(0, ("reconstruction", recon))
    rest.sort(key=lambda item: item[0] != "reconstruction")  # stable: reconstruction first, then by name
    return original, rest


def _sidecar_record(image: Path) -> dict:
    """privatize's / invert's JSON record beside ``image`` (``X.json`` for ``X.png``), if readable."""
    p = image.with_suffix(".json")
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        _warn(f"{p}: unreadable record ({exc}); ignoring it")
        return {}
    return data if isinstance(data, dict) else {}


def _latent_coordinates(latent: np.ndarray, boundaries: list) -> dict[str, float]:
    """``<w, n>`` per boundary (W+: mean over layers) for a single-row latent."""
    from latentpriv.privacy.mechanisms import coordinates

    out: dict[str, float] = {}
    for b in boundaries:
        name = b.attribute or b.name
        if latent.shape[-1] != b.dim:
            raise InputError(f"latent dimension {latent.shape[-1]} does not match boundary {name} ({b.dim})")
        out[f"coord_{name}"] = float(coordinates(latent, [b.vector])[0, 0])
    return out


def _load_networks(device: str, want: bool, skipped: dict[str, str]):
    if not want:
        skipped["lpips"] = "--no-lpips"
        return None
    from latentpriv.devices import resolve_device
    from latentpriv.inversion.perceptual import PerceptualNetworks

    try:
        return PerceptualNetworks.load(resolve_device(device))
    except AssetError as exc:
        skipped["lpips"] = f"LPIPS weights missing: {str(exc).splitlines()[0]}"
        _warn(f"skipping LPIPS ({skipped['lpips']}); get them with `latentpriv weights fetch vgg16 lpips_vgg`")
        return None


def _faces_ok(want: bool, skipped: dict[str, str]) -> bool:
    if not want:
        skipped["faces"] = "--no-faces"
        return False
    from latentpriv.faces import INSTALL_HINT, available

    if not available():
        skipped["faces"] = f"face extra not installed: {INSTALL_HINT}"
        _warn(f"skipping identity distance and attribute scores ({skipped['faces']})")
        return False
    return True


def _flat_value(v: Any) -> Any:
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return "" if v is None else v


def write_csv(path: Path, rows: list[dict]) -> None:
    """Rows (dicts, possibly with different keys) as CSV, columns in first-seen order, atomically."""
    from latentpriv.io import atomic_write

    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _flat_value(r.get(k)) for k in cols})
    with atomic_write(path, "w") as fh:
        fh.write(buf.getvalue())


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.4g}"
    if isinstance(v, list):  # a 95 % interval
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def _print_table(rows: list[dict], cols: list[str]) -> None:
    cols = [c for c in cols if any(c in r for r in rows)]
    table = [cols] + [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(cols))]
    for line in table:
        click.echo("  ".join(s.ljust(w) for s, w in zip(line, widths, strict=True)).rstrip())


def _check_outputs(outputs: list[Path | None], inputs: list[Path], overwrite: bool = False) -> None:
    from latentpriv.outputs import check_outputs

    check_outputs(outputs, overwrite=overwrite, inputs=inputs, option="output file")


# ------------------------------------------------------------------------------------- plotting


def plot_sweep(summary: list[dict], path: Path, *, attribute: str | None = None) -> str:
    """Write the privacy/utility figure: attribute change (left) and identity distance (right) against
    epsilon, one line per mechanism. Uses matplotlib when installed, else a plain PIL drawing.

    Returns the backend used ("matplotlib" or "pil").
    """
    left_key, left_label = _left_metric(summary, attribute)
    if any(s.get("identity_distance") is not None for s in summary):
        right_key, right_label = "identity_distance", "identity distance (dlib; < 0.6 same person)"
    elif any(s.get("lpips") is not None for s in summary):
        right_key, right_label = "lpips", "LPIPS to the original render"
    else:
        right_key, right_label = "psnr", "PSNR to the original render (dB)"
    panels = [(left_key, left_label), (right_key, right_label)]
    mechs = list(dict.fromkeys(s["mechanism"] for s in summary))
    series = {m: sorted((s["epsilon"], [s.get(k) for k, _ in panels]) for s in summary if s["mechanism"] == m)
              for m in mechs}
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _plot_pil(series, panels, path)
        return "pil"
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (i, (_, label)) in zip(axes, enumerate(panels), strict=True):
        for m, pts in series.items():
            xs = [e for e, v in pts if v[i] is not None]
            ys = [v[i] for _, v in pts if v[i] is not None]
            ax.plot(xs, ys, marker="o", label=m)
        if panels[i][0] == "identity_distance":
            ax.axhline(0.6, color="grey", linestyle="--", linewidth=1)
        ax.set_xscale("log")
        # the swept epsilons as plain numbers (0.25, 1, 4), not powers of ten
        eps_ticks = sorted({e for pts in series.values() for e, _ in pts})
        ax.set_xticks(eps_ticks, [f"{e:g}" for e in eps_ticks])
        ax.minorticks_off()
        ax.set_xlabel("epsilon")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].legend(title="mechanism")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=(path.suffix.lstrip(".") or "png"), dpi=120)
    plt.close(fig)
    from latentpriv.io import atomic_write

    with atomic_write(path) as fh:
        fh.write(buf.getvalue())
    return "matplotlib"


def _left_metric(summary: list[dict], attribute: str | None) -> tuple[str, str]:
    from latentpriv.evaluate.metrics import ATTRIBUTE_SCORE

    keys = [k for s in summary for k in s]
    if attribute is not None and ATTRIBUTE_SCORE.get(attribute):
        k = f"{ATTRIBUTE_SCORE[attribute]}_abs_change"
        if any(s.get(k) is not None for s in summary):
            return k, f"|change| of landmark {ATTRIBUTE_SCORE[attribute]} score"
    coord = [k for k in dict.fromkeys(keys) if k.startswith("coord_abs_change_")]
    if attribute is not None and f"coord_abs_change_{attribute}" in coord:
        return f"coord_abs_change_{attribute}", f"|change| of latent coordinate along {attribute}"
    if not coord:
        raise InputError("sweep summary has no attribute column to plot")
    return coord[0], f"|change| of latent coordinate along {coord[0][len('coord_abs_change_'):]}"


_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def _plot_pil(series: dict, panels: list[tuple[str, str]], path: Path) -> None:
    from PIL import Image, ImageDraw

    from latentpriv.io import save_image

    W, H, pw, ph = 1000, 440, 400, 300
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    eps = sorted({e for pts in series.values() for e, _ in pts})
    lx = [math.log10(e) for e in eps]
    x0, x1 = min(lx), max(lx)
    if x1 - x0 < 1e-9:
        x0, x1 = x0 - 0.5, x1 + 0.5
    for i, (key, label) in enumerate(panels):
        ox, oy = 80 + i * 500, 40
        vals = [v[i] for pts in series.values() for _, v in pts if v[i] is not None and math.isfinite(v[i])]
        if key == "identity_distance":
            vals.append(0.6)
        y0, y1 = (min(vals), max(vals)) if vals else (0.0, 1.0)
        if y1 - y0 < 1e-12:
            y0, y1 = y0 - 0.5, y1 + 0.5
        pad = 0.05 * (y1 - y0)
        y0, y1 = y0 - pad, y1 + pad

        def px(e: float, v: float, ox=ox, oy=oy, y0=y0, y1=y1) -> tuple[float, float]:
            return (ox + (math.log10(e) - x0) / (x1 - x0) * pw, oy + ph - (v - y0) / (y1 - y0) * ph)

        d.rectangle([ox, oy, ox + pw, oy + ph], outline="black")
        for e in eps:
            x, _ = px(e, y0)
            d.line([x, oy + ph, x, oy + ph + 4], fill="black")
            d.text((x - 8, oy + ph + 6), f"{e:g}", fill="black")
        for t in range(5):
            v = y0 + (y1 - y0) * t / 4
            _, y = px(eps[0], v)
            d.line([ox - 4, y, ox, y], fill="black")
            d.text((ox - 44, y - 5), f"{v:.3g}", fill="black")
        if key == "identity_distance":
            _, y = px(eps[0], 0.6)
            for xs in range(int(ox), int(ox + pw), 10):
                d.line([xs, y, xs + 5, y], fill=(128, 128, 128))
        d.text((ox + pw / 2 - 20, oy + ph + 22), "epsilon (log)", fill="black")
        d.text((ox, oy - 22), label, fill="black")
        for j, (m, pts) in enumerate(series.items()):
            colour = _COLOURS[j % len(_COLOURS)]
            xy = [px(e, v[i]) for e, v in pts if v[i] is not None and math.isfinite(v[i])]
            if len(xy) > 1:
                d.line(xy, fill=colour, width=2)
            for x, y in xy:
                d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
            if i == 0:  # legend in one row under the panels
                lx0 = 80 + 140 * j
                d.line([lx0, H - 20, lx0 + 20, H - 20], fill=colour, width=2)
                d.text((lx0 + 24, H - 26), m, fill="black")
    save_image(path, np.asarray(img))


# ------------------------------------------------------------------------------------- compare mode


def _compare(run_dir: Path | None, original: Path | None, recon: Path | None, private: tuple[Path, ...],
             attrs, boundary_files, model: str, space: str | None, lpips: bool, lpips_size: int | None,
             faces: bool, device: str) -> tuple[dict, list[Path]]:
    from latentpriv.edit.boundaries import load_boundary, resolve_attr
    from latentpriv.evaluate.metrics import evaluate_images
    from latentpriv.io import load_image, load_npy

    if run_dir is not None:
        original, items = classify_run_dir(run_dir, original, recon)
        items += [("private", p) for p in private if all(p.resolve() != q.resolve() for _, q in items)]
    else:
        if original is None:
            raise InputError("give a run directory or --original PHOTO (with --recon/--private images)")
        items = ([("reconstruction", recon)] if recon is not None else []) + [("private", p) for p in private]
        if not items:
            raise InputError("nothing to compare: give --recon and/or --private images")
    skipped: dict[str, str] = {}
    orig_img = load_image(original)
    use_faces = _faces_ok(faces, skipped)
    networks = _load_networks(device, lpips, skipped)

    from latentpriv.cli.privatize import MODEL_DEFAULT_SPACE

    boundaries = [resolve_attr(a, model=model, space=space or MODEL_DEFAULT_SPACE.get(model, "w")) for a in attrs]
    boundaries += [load_boundary(f) for f in boundary_files]

    rows: list[dict] = []
    inputs = [original]
    # Load every candidate first: a bad file becomes an error row, the others are still evaluated.
    loaded: list[tuple[dict, np.ndarray]] = []
    for role, p in items:
        inputs.append(p)
        row: dict[str, Any] = {"file": str(p), "role": role}
        record = _sidecar_record(p)
        if record.get("epsilon") is not None or record.get("mechanism"):
            row["mechanism"] = record.get("mechanism")
            row["epsilon"] = record.get("epsilon")
        try:
            img = load_image(p)
        except LatentprivError as exc:
            row["error"] = str(exc).splitlines()[0]
            _warn(row["error"])
            rows.append(row)
            continue
        latent_path = p.with_suffix(".npy")
        if latent_path.is_file():
            row["latent"] = str(latent_path)
            if boundaries:
                try:
                    row.update(_latent_coordinates(load_npy(latent_path), boundaries))
                except LatentprivError as exc:
                    row["coordinates_error"] = str(exc).splitlines()[0]
                    _warn(f"{latent_path}: {row['coordinates_error']}")
        rows.append(row)
        loaded.append((row, img))

    # Evaluate per size group (the reconstruction and renders share the generator's resolution).
    groups: dict[tuple, list[tuple[dict, np.ndarray]]] = {}
    for row, img in loaded:
        groups.setdefault(img.shape, []).append((row, img))
    orig_scores: dict = {}
    for shape, members in groups.items():
        res = evaluate_images(orig_img, np.stack([img for _, img in members]), networks=networks,
                              lpips_size=lpips_size, faces=use_faces)
        orig_scores = res["original"]
        for (row, _), vals in zip(members, res["rows"], strict=True):
            row["compared_at"] = f"{shape[1]}x{shape[0]}"
            row.update(vals)
    orig_row: dict[str, Any] = {"file": str(original), **orig_scores}
    if boundaries and original.with_suffix(".npy").is_file():
        orig_row.update(_latent_coordinates(load_npy(original.with_suffix(".npy")), boundaries))
    result = {
        "format": "latentpriv.evaluate/1",
        "original": orig_row,
        "rows": rows,
        "boundaries": [b.info() for b in boundaries],
        "skipped": skipped,
        "errors": sum(1 for r in rows if "error" in r),
        "notes": {
            "identity_threshold": 0.6,
            "psnr": "dB, peak 255; inf (JSON Infinity) for identical images",
            "attributes": "dlib 68-point landmark geometry (docs/evaluation.md); null where no face was found",
        },
    }
    if lpips and networks is not None:
        result["lpips"] = {"variant": "v0.1 vgg", "size": lpips_size, "vgg": networks.vgg_source,
                           "lin": networks.lpips_source}
    return result, inputs


# ------------------------------------------------------------------------------------- sweep mode


def _sweep(model: str, weights: str | None, latents_files: tuple[Path, ...], samples: int | None, sample_seed: int,
           attrs, boundary_files, space: str | None, epsilons: list[float], mechanisms: list[str],
           delta: float, clip_radius: float, center: str, seed: int | None, repeats: int, layers: str | None,
           lpips: bool, lpips_size: int | None, faces: bool, device: str) -> tuple[dict, list[Path]]:
    import torch

    from latentpriv.cli.privatize import (
        load_generator_for,
        load_latent_input,
        parse_center,
        parse_layers,
        render_latents,
        resolve_center,
    )
    from latentpriv.edit.boundaries import resolve_directions
    from latentpriv.evaluate.metrics import privacy_utility_sweep

    G = load_generator_for(weights, model, device)
    skipped: dict[str, str] = {}
    if latents_files:
        parts = [load_latent_input(p, space=space, model=model, generator=G) for p in latents_files]
        sp = parts[0].space
        if any(p.space != sp for p in parts):
            raise InputError("--latents files are in different latent spaces; sweep them separately")
        lat = np.concatenate([p.latent for p in parts]).astype(np.float32)
        source = {"latents": [str(p) for p in latents_files]}
    else:
        n = samples or 8
        sp = space or str(G.default_space)
        if sp == "wp":
            raise ConfigError("--samples draws Z/W latents; for W+ pass --latents from `latentpriv invert`")
        with torch.no_grad():
            z = G.sample_z(n, torch.Generator().manual_seed(sample_seed))
            lat_t = z if sp == "z" else G.mapping(z)
        lat = lat_t.detach().cpu().numpy().astype(np.float32)
        source = {"samples": n, "sample_seed": sample_seed, "space": sp}
    dirs, bounds = resolve_directions(attrs=attrs, boundary_files=boundary_files, model=model, space=sp,
                                      dim=lat.shape[-1])
    names = [b.attribute or b.name for b in bounds]
    centers, center_mode = resolve_center(parse_center(center), dirs, sp, G)
    use_faces = _faces_ok(faces, skipped)
    networks = _load_networks(device, lpips, skipped)

    def render(x: np.ndarray) -> np.ndarray:
        return render_latents(G, x, sp)

    out = privacy_utility_sweep(render, lat, dirs, epsilons=epsilons, mechanisms=mechanisms, attributes=names,
                                delta=delta, clip_radius=clip_radius, center=centers, seed=seed, repeats=repeats,
                                layers=parse_layers(layers), networks=networks, lpips_size=lpips_size,
                                faces=use_faces, progress=lambda m: log.info("sweep: %s", m))
    out.update({
        "format": "latentpriv.sweep/1",
        "generator": G.info(),
        "space": sp,
        "source": source,
        "boundaries": [b.info() for b in bounds],
        "grid": {"epsilons": epsilons, "mechanisms": mechanisms, "delta": delta, "clip_radius": clip_radius,
                 "center": centers.tolist(), "center_mode": center_mode, "repeats": repeats, "layers": layers},
        "noise": ({"seed": seed, "for_release": False, "note": "seeded numpy noise: an experiment, not a release"}
                  if seed is not None else {"seed": None, "sampler": "OpenDP"}),
        "ledger": "not written: a sweep measures mechanisms, it releases nothing",
        "skipped": skipped,
    })
    if "seed" in mechanisms:
        _warn("mechanism 'seed' (research notebook) gives NO differential-privacy guarantee; shown for comparison")
    return out, list(latents_files)


# ------------------------------------------------------------------------------------- the command


@click.command("evaluate")
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
              help="Latent space (default: the model's: w for stylegan_ffhq, z for dcgan64).")
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
    """Measure reconstructions and private renders against the original face.

    \b
    Compare:
      latentpriv evaluate RUN_DIR                      # original.png, recon.png, private renders
      latentpriv evaluate --original face.png --recon recon.png --private p1.png --private p2.png
      latentpriv evaluate --original face.png --recon recon.png --private private.png --no-faces   # dcgan64 files
    Sweep (privacy/utility curves):
      latentpriv evaluate --sweep --model dcgan64 --attr smile --samples 8 \\
          --epsilons 0.5,2,8 --mechanisms laplace,gaussian --plot curve.png --csv sweep.csv

    Reports PSNR, SSIM, LPIPS (VGG), identity distance (dlib; same person below 0.6), landmark attribute
    scores and their change, and latent coordinates along boundaries. See docs/evaluation.md.
    """
    if sweep:
        if run_dir is not None or original is not None or recon is not None or private:
            raise click.UsageError("--sweep renders its own images; drop RUN_DIR/--original/--recon/--private")
        if not attrs and not boundary_files:
            raise click.UsageError("--sweep needs --attr NAME or --boundary FILE")
        if samples is not None and latents_files:
            raise click.UsageError("give --latents or --samples, not both")
        eps = parse_epsilons(epsilons)
        mechs = _names(mechanisms, "--mechanisms", ("laplace", "gaussian", "rr", "seed"))
        if not (0 < delta < 1):
            raise click.BadParameter(f"{delta}: delta must be in (0, 1)", param_hint="--delta")
        _check_outputs([json_path, csv_path, plot_path], list(latents_files), overwrite)
        result, _ = _sweep(model, weights, latents_files, samples, sample_seed, attrs, boundary_files, space, eps,
                           mechs, delta, clip_radius, center, None if secure_noise else seed, repeats, layers, lpips,
                           lpips_size, faces, device)
        # medians over each grid point, with their 95 % intervals (docs/evaluation.md)
        cols = ["mechanism", "epsilon", "n", *[k for k in result["summary"][0] if k.startswith("coord_abs")],
                *[k for k in result["summary"][0] if k.endswith("_abs_change") and not k.startswith("coord")],
                "identity_distance", "identity_distance_ci95", "same_person_rate", "psnr", "psnr_ci95",
                "psnr_identical", "ssim", "lpips", "lpips_ci95"]
        _print_table(result["summary"], cols)
        rows_for_csv = result["rows"]
    else:
        for name, val in (("--plot", plot_path), ("--latents", latents_files), ("--samples", samples)):
            if val:
                raise click.UsageError(f"{name} applies to --sweep only")
        if run_dir is not None and original is None and not run_dir.exists():
            raise InputError(f"{run_dir}: no such directory")
        result, inputs = _compare(run_dir, original, recon, private, attrs, boundary_files, model, space, lpips,
                                  lpips_size, faces, device)
        _check_outputs([json_path, csv_path], inputs, overwrite)
        cols = ["file", "role", "epsilon", "psnr", "ssim", "lpips", "identity_distance", "same_person",
                "smile_change", "mouth_open_change", "yaw_change", "eyes_open_change",
                *[k for r in result["rows"] for k in r if k.startswith("coord_")], "error"]
        rows = [{**r, "file": Path(r["file"]).name} for r in result["rows"]]
        _print_table(rows, list(dict.fromkeys(cols)))
        rows_for_csv = [{"file": result["original"]["file"], "role": "original", **result["original"]},
                        *result["rows"]]

    from latentpriv.io import write_json

    if json_path is not None:
        write_json(json_path, result)
        click.echo(f"wrote {json_path}", err=True)
    if csv_path is not None:
        write_csv(csv_path, rows_for_csv)
        click.echo(f"wrote {csv_path}", err=True)
    if plot_path is not None:
        attr0 = (result["boundaries"][0].get("attribute") or result["boundaries"][0].get("name")) if result["boundaries"] else None
        backend = plot_sweep(result["summary"], plot_path, attribute=attr0)
        click.echo(f"wrote {plot_path} ({backend})", err=True)
    for k, why in result.get("skipped", {}).items():
        click.echo(f"skipped {k}: {why}", err=True)
    if result.get("errors"):
        # the table and files above hold what could be measured; a missing or unreadable input still fails
        raise click.ClickException(f"{result['errors']} of {len(result['rows'])} input files could not be "
                                   "evaluated (see their error column); fix or remove them")

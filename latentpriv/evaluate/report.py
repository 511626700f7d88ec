"""``latentpriv evaluate``'s reports: compare images with an original photo, and sweep a generator's releases.

* :func:`compare_report`: PSNR, SSIM, LPIPS (VGG), identity distance (dlib), landmark attribute scores and
  the latent coordinates along boundaries of each reconstruction / private render against the original
  (a run directory is classified by :func:`classify_run_dir`; docs/evaluation.md has the naming rules);
* :func:`sweep_report`: :func:`latentpriv.evaluate.metrics.privacy_utility_sweep` with the provenance
  of the generator, latents, grid and noise.

Both return JSON-ready dicts; warnings (a skipped metric, an unreadable side record) go to ``warn``.
:func:`evaluate_compare` and :func:`evaluate_sweep` are the command's two modes: check the request and the
outputs before the slow work, measure, and write the ``--json`` / ``--csv`` / ``--plot`` files as one write
set (:func:`csv_text` is also ``latentpriv attack``'s CSV); :func:`console_lines` lays a report out for a
console.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from latentpriv.errors import AssetError, InputError, LatentprivError

log = logging.getLogger(__name__)

Warn = Callable[[str], None]

ORIGINAL_STEMS = ("original", "target", "photo", "aligned")
RECON_STEMS = ("recon", "reconstruction")


# ------------------------------------------------------------------------------------- rows as text


def _flat_value(v: Any) -> Any:
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return "" if v is None else v


def csv_text(rows: list[dict]) -> str:
    """Rows (dicts, possibly with different keys) as CSV text, columns in first-seen order.

    None is an empty cell, infinities are ``inf`` / ``-inf``."""
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _flat_value(r.get(k)) for k in cols})
    return buf.getvalue()


def write_csv(path: str | Path, rows: list[dict]) -> None:
    """:func:`csv_text` of ``rows`` written to ``path``, atomically."""
    from latentpriv.io import atomic_write

    with atomic_write(path, "w") as fh:
        fh.write(csv_text(rows))


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


def format_table(rows: list[dict], cols: Sequence[str]) -> list[str]:
    """Console lines of ``rows`` under the columns of ``cols`` that any row has (aligned, 4 digits)."""
    cols = [c for c in cols if any(c in r for r in rows)]
    table = [cols] + [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(cols))]
    return ["  ".join(s.ljust(w) for s, w in zip(line, widths, strict=True)).rstrip() for line in table]


def compare_columns(result: dict) -> list[str]:
    """The console columns of a compare report."""
    return list(dict.fromkeys(["file", "role", "epsilon", "psnr", "ssim", "lpips", "identity_distance", "same_person",
                               "smile_change", "mouth_open_change", "yaw_change", "eyes_open_change",
                               *[k for r in result["rows"] for k in r if k.startswith("coord_")], "error"]))


def sweep_columns(result: dict) -> list[str]:
    """The console columns of a sweep report: medians over each grid point with their 95 % intervals."""
    first = result["summary"][0]
    return ["mechanism", "epsilon", "n", *[k for k in first if k.startswith("coord_abs")],
            *[k for k in first if k.endswith("_abs_change") and not k.startswith("coord")],
            "identity_distance", "identity_distance_ci95", "same_person_rate", "psnr", "psnr_ci95",
            "psnr_identical", "ssim", "lpips", "lpips_ci95"]


# ------------------------------------------------------------------------------------- shared setup


def load_networks(device: str, want: bool, skipped: dict[str, str], warn: Warn):
    """LPIPS networks on ``device``, or None (recorded in ``skipped``) when not wanted or weights are missing."""
    if not want:
        skipped["lpips"] = "--no-lpips"
        return None
    from latentpriv.devices import resolve_device
    from latentpriv.inversion.perceptual import PerceptualNetworks

    try:
        return PerceptualNetworks.load(resolve_device(device))
    except AssetError as exc:
        skipped["lpips"] = f"LPIPS weights missing: {str(exc).splitlines()[0]}"
        warn(f"skipping LPIPS ({skipped['lpips']}); get them with `latentpriv weights fetch vgg16 lpips_vgg`")
        return None


def faces_available(want: bool, skipped: dict[str, str], warn: Warn) -> bool:
    """Whether identity / attribute scores can be measured (the face extra); the reason in ``skipped`` if not."""
    if not want:
        skipped["faces"] = "--no-faces"
        return False
    from latentpriv.faces import INSTALL_HINT, available

    if not available():
        skipped["faces"] = f"face extra not installed: {INSTALL_HINT}"
        warn(f"skipping identity distance and attribute scores ({skipped['faces']})")
        return False
    return True


# ------------------------------------------------------------------------------------- compare


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


def compare_items(run_dir: Path | None, original: Path | None, recon: Path | None,
                  private: Sequence[Path]) -> tuple[Path, list[tuple[str, Path]]]:
    """The original and the ``(role, path)`` images to compare with it, from a run directory or files."""
    if run_dir is not None:
        if original is None and not run_dir.exists():
            raise InputError(f"{run_dir}: no such directory")
        original, items = classify_run_dir(run_dir, original, recon)
        return original, items + [("private", p) for p in private if all(p.resolve() != q.resolve() for _, q in items)]
    if original is None:
        raise InputError("give a run directory or --original PHOTO (with --recon/--private images)")
    items = ([("reconstruction", recon)] if recon is not None else []) + [("private", p) for p in private]
    if not items:
        raise InputError("nothing to compare: give --recon and/or --private images")
    return original, items


def sidecar_record(image: Path, warn: Warn) -> dict:
    """privatize's / invert's JSON record beside ``image`` (``X.json`` for ``X.png``), if readable."""
    from latentpriv.io import read_sidecar

    try:
        return read_sidecar(image)
    except InputError as exc:   # warn and go on: a record is optional here
        warn(f"{image.with_suffix('.json')}: unreadable record ({exc.__cause__}); ignoring it")
        return {}


def latent_coordinates(latent: np.ndarray, boundaries: list) -> dict[str, float]:
    """``{"coord_<name>": <w, n>}`` per boundary (W+: mean over layers) for a single-row latent."""
    from latentpriv.privacy.mechanisms import coordinates

    out: dict[str, float] = {}
    for b in boundaries:
        name = b.attribute or b.name
        if latent.shape[-1] != b.dim:
            raise InputError(f"latent dimension {latent.shape[-1]} does not match boundary {name} ({b.dim})")
        out[f"coord_{name}"] = float(coordinates(latent, [b.vector])[0, 0])
    return out


def _load_row(role: str, p: Path, boundaries: list, warn: Warn) -> tuple[dict, np.ndarray | None]:
    """A row for one candidate image and its pixels (None with an ``error`` in the row when unreadable)."""
    from latentpriv.io import load_image, load_npy

    row: dict[str, Any] = {"file": str(p), "role": role}
    record = sidecar_record(p, warn)
    if record.get("epsilon") is not None or record.get("mechanism"):
        row["mechanism"] = record.get("mechanism")
        row["epsilon"] = record.get("epsilon")
    try:
        img = load_image(p)
    except LatentprivError as exc:
        row["error"] = str(exc).splitlines()[0]
        warn(row["error"])
        return row, None
    latent_path = p.with_suffix(".npy")
    if latent_path.is_file():
        row["latent"] = str(latent_path)
        if boundaries:
            try:
                row.update(latent_coordinates(load_npy(latent_path), boundaries))
            except LatentprivError as exc:
                row["coordinates_error"] = str(exc).splitlines()[0]
                warn(f"{latent_path}: {row['coordinates_error']}")
    return row, img


def compare_report(original: Path, items: list[tuple[str, Path]], *, boundaries: list, lpips: bool = True,
                   lpips_size: int | None = None, faces: bool = True, device: str = "auto",
                   warn: Warn = log.warning) -> dict:
    """Measure every ``(role, image)`` of ``items`` against the ``original`` photo.

    A file that cannot be read becomes a row with an ``error`` (counted in ``errors``); the others are still
    measured, per size group (renders share the generator's resolution; the original is resized to each).
    ``boundaries``: loaded boundaries whose coordinate is reported for images with an ``X.npy`` latent.
    Returns the ``latentpriv.evaluate/1`` record.
    """
    from latentpriv.evaluate.metrics import evaluate_images
    from latentpriv.faces.identity import SAME_PERSON_THRESHOLD
    from latentpriv.io import load_image, load_npy

    skipped: dict[str, str] = {}
    orig_img = load_image(original)
    use_faces = faces_available(faces, skipped, warn)
    networks = load_networks(device, lpips, skipped, warn)
    rows: list[dict] = []
    groups: dict[tuple, list[tuple[dict, np.ndarray]]] = {}
    for role, p in items:
        row, img = _load_row(role, p, boundaries, warn)
        rows.append(row)
        if img is not None:
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
        orig_row.update(latent_coordinates(load_npy(original.with_suffix(".npy")), boundaries))
    result = {
        "format": "latentpriv.evaluate/1",
        "original": orig_row,
        "rows": rows,
        "boundaries": [b.info() for b in boundaries],
        "skipped": skipped,
        "errors": sum(1 for r in rows if "error" in r),
        "notes": {
            "identity_threshold": SAME_PERSON_THRESHOLD,
            "psnr": "dB, peak 255; inf (JSON Infinity) for identical images",
            "attributes": "dlib 68-point landmark geometry (docs/evaluation.md); null where no face was found",
        },
    }
    if lpips and networks is not None:
        result["lpips"] = {"variant": "v0.1 vgg", "size": lpips_size, "vgg": networks.vgg_source,
                           "lin": networks.lpips_source}
    return result


# ------------------------------------------------------------------------------------- sweep


def sweep_report(render: Callable[[np.ndarray], np.ndarray], latents: np.ndarray, directions: np.ndarray, *,
                 boundaries: list, generator_info: dict, space: str, source: dict, epsilons: list[float],
                 mechanisms: list[str], delta: float, clip_radius: float, centers: np.ndarray, center_mode: str,
                 seed: int | None, repeats: int, layers: str | None, layer_indices: list[int] | None,
                 lpips: bool = True, lpips_size: int | None = None, faces: bool = True, device: str = "auto",
                 warn: Warn = log.warning) -> dict:
    """Privatize ``latents`` ``[N, D]`` / ``[N, L, D]`` over epsilons x mechanisms, render, measure.

    ``render``: latents -> uint8 ``[N, H, W, 3]`` (the generator's). ``seed`` None: OpenDP's samplers,
    else seeded numpy noise (an experiment, not a release). Returns the ``latentpriv.sweep/1`` record: the
    rows and per grid point summary of :func:`latentpriv.evaluate.metrics.privacy_utility_sweep`, with
    provenance. A sweep releases nothing: no ledger is written.
    """
    from latentpriv.evaluate.metrics import privacy_utility_sweep

    skipped: dict[str, str] = {}
    use_faces = faces_available(faces, skipped, warn)
    networks = load_networks(device, lpips, skipped, warn)
    names = [b.attribute or b.name for b in boundaries]
    out = privacy_utility_sweep(render, latents, directions, epsilons=epsilons, mechanisms=mechanisms,
                                attributes=names, delta=delta, clip_radius=clip_radius, center=centers, seed=seed,
                                repeats=repeats, layers=layer_indices, networks=networks, lpips_size=lpips_size,
                                faces=use_faces, progress=lambda m: log.info("sweep: %s", m))
    out.update({
        "format": "latentpriv.sweep/1",
        "generator": generator_info,
        "space": space,
        "source": source,
        "boundaries": [b.info() for b in boundaries],
        "grid": {"epsilons": epsilons, "mechanisms": mechanisms, "delta": delta, "clip_radius": clip_radius,
                 "center": centers.tolist(), "center_mode": center_mode, "repeats": repeats, "layers": layers},
        "noise": ({"seed": seed, "for_release": False, "note": "seeded numpy noise: an experiment, not a release"}
                  if seed is not None else {"seed": None, "sampler": "OpenDP"}),
        "ledger": "not written: a sweep measures mechanisms, it releases nothing",
        "skipped": skipped,
    })
    from latentpriv.privacy.coordinate_mechanisms import get_mechanism

    for name in mechanisms:
        if not get_mechanism(name).private:
            warn(f"mechanism {name!r} (research notebook) gives NO differential-privacy guarantee; shown for "
                 "comparison")
    return out


def sweep_model(model: str, *, weights: str | None = None, latents_files: Sequence[Path] = (),
                samples: int | None = None, sample_seed: int = 0, attrs: Sequence[str] = (),
                boundary_files: Sequence[Path] = (), space: str | None = None, center: str | float = 0.0,
                layers: str | None = None, layer_indices: list[int] | None = None, device: str = "auto",
                warn: Warn = log.warning, **grid: Any) -> dict:
    """:func:`sweep_report` on ``model``'s generator (``weights``: another file or name of it): the latents of
    ``latents_files`` (one space), else ``samples`` faces (default 8) drawn with ``sample_seed``; the
    directions of ``attrs`` / ``boundary_files``; ``center`` a number or ``"auto"``. ``grid``: the
    remaining keyword arguments of :func:`sweep_report` (epsilons, mechanisms, delta, ...)."""
    from latentpriv.edit.boundaries import resolve_directions
    from latentpriv.errors import ConfigError
    from latentpriv.evaluate.latents import sample_latents, stack_latents
    from latentpriv.io import load_latent_input
    from latentpriv.models.render import load_generator_for, render_latents
    from latentpriv.runs.privatize import resolve_center

    G = load_generator_for(weights, model, device)
    if latents_files:
        parts = [load_latent_input(p, space=space, model=model, generator=G, warn=warn) for p in latents_files]
        lat, sp = stack_latents(parts, "--latents files are in different latent spaces; sweep them separately")
        source: dict = {"latents": [str(p) for p in latents_files]}
    else:
        n, sp = samples or 8, space or str(G.default_space)
        if sp == "wp":
            raise ConfigError("--samples draws Z/W latents; for W+ pass --latents from `latentpriv invert`")
        lat = sample_latents(G, n, sp, sample_seed)
        source = {"samples": n, "sample_seed": sample_seed, "space": sp}
    dirs, bounds = resolve_directions(attrs=attrs, boundary_files=boundary_files, model=model, space=sp,
                                      dim=lat.shape[-1])
    centers, center_mode = resolve_center(center, dirs, sp, G)
    return sweep_report(lambda x: render_latents(G, x, sp), lat, dirs, boundaries=bounds, generator_info=G.info(),
                        space=sp, source=source, centers=centers, center_mode=center_mode, layers=layers,
                        layer_indices=layer_indices, device=device, warn=warn, **grid)


# ------------------------------------------------------------------------------------- the command's two modes


def check_mode(sweep: bool, *, run_dir: Path | None = None, original: Path | None = None,
               recon: Path | None = None, private: Sequence[Path] = (), attrs: Sequence[str] = (),
               boundary_files: Sequence[Path] = (), latents_files: Sequence[Path] = (), samples: int | None = None,
               plot_path: Path | None = None) -> None:
    """Refuse (:class:`ConfigError`) options of the other mode: compare's images with ``sweep``, the sweep's
    ``--plot`` / ``--latents`` / ``--samples`` without it; a sweep needs directions and one latent source."""
    from latentpriv.errors import ConfigError

    if sweep:
        if run_dir is not None or original is not None or recon is not None or private:
            raise ConfigError("--sweep renders its own images; drop RUN_DIR/--original/--recon/--private")
        if not attrs and not boundary_files:
            raise ConfigError("--sweep needs --attr NAME or --boundary FILE")
        if samples is not None and latents_files:
            raise ConfigError("give --latents or --samples, not both")
        return
    for name, val in (("--plot", plot_path), ("--latents", latents_files), ("--samples", samples)):
        if val:
            raise ConfigError(f"{name} applies to --sweep only")


def check_sweep_privacy(mechanisms: Sequence[str], delta: float) -> None:
    """The sweep's ``delta`` goes to every approximate-DP mechanism of the grid: check it by their rule
    (:func:`latentpriv.privacy.coordinate_mechanisms.validate_params`; unused by pure ones)."""
    from latentpriv.privacy.accounting import check_number
    from latentpriv.privacy.coordinate_mechanisms import get_mechanism, validate_params

    check_number("--delta", delta, low=0.0, high=1.0, low_open=False)   # a probability, whichever grid
    for name in mechanisms:
        if get_mechanism(name).approximate:
            validate_params(name, delta)


def csv_rows(result: dict) -> list[dict]:
    """The ``--csv`` rows of a report: a sweep's rows, or a comparison's original followed by its rows."""
    if result.get("format") == "latentpriv.sweep/1":
        return result["rows"]
    return [{"file": result["original"]["file"], "role": "original", **result["original"]}, *result["rows"]]


def console_lines(result: dict) -> list[str]:
    """The console table of a report: a sweep's summary per grid point, or a comparison's rows (file names)."""
    if result.get("format") == "latentpriv.sweep/1":
        return format_table(result["summary"], sweep_columns(result))
    return format_table([{**r, "file": Path(r["file"]).name} for r in result["rows"]], compare_columns(result))


def _check_files(paths: Sequence[Path | None], *, overwrite: bool, inputs: Sequence[Path]) -> None:
    """The overwrite rule and a write probe for every output folder, before the slow work."""
    from latentpriv.outputs import check_outputs, check_writable

    check_outputs(paths, overwrite=overwrite, inputs=inputs, option="output file")
    for p in paths:
        if p is not None:
            check_writable(Path(p).parent, option="output file")


def write_outputs(result: dict, *, json_path: Path | None = None, csv_path: Path | None = None,
                  plot_path: Path | None = None) -> None:
    """The CSV, the figure (sweep) and the JSON of ``result`` as one write set, JSON last: a failed write
    leaves none of them."""
    from latentpriv.io import atomic_write_files, json_bytes

    files: list[tuple[Path, bytes]] = []
    if csv_path is not None:
        files.append((csv_path, csv_text(csv_rows(result)).encode()))
    if plot_path is not None:
        from latentpriv.evaluate.plots import sweep_figure

        b0 = result["boundaries"][0] if result["boundaries"] else {}
        files.append((plot_path, sweep_figure(result["summary"], attribute=b0.get("attribute") or b0.get("name"),
                                              fmt=plot_path.suffix.lstrip(".") or "png")))
    if json_path is not None:
        files.append((json_path, json_bytes(result)))
    atomic_write_files(files)


def evaluate_compare(run_dir: Path | None = None, *, original: Path | None = None, recon: Path | None = None,
                     private: Sequence[Path] = (), attrs: Sequence[str] = (), boundary_files: Sequence[Path] = (),
                     model: str = "stylegan_ffhq", space: str | None = None, json_path: Path | None = None,
                     csv_path: Path | None = None, overwrite: bool = False, warn: Warn = log.warning,
                     **options: Any) -> dict:
    """``latentpriv evaluate`` (compare): :func:`compare_report` of a run directory or files, with the outputs
    checked first (never an input) and written (:func:`write_outputs`). ``options``: :func:`compare_report`'s
    lpips, lpips_size, faces, device. Returns the report; its ``errors`` counts unreadable inputs."""
    from latentpriv.edit.boundaries import load_boundary, resolve_attr
    from latentpriv.models.registry import model_default_space

    orig, items = compare_items(run_dir, original, recon, private)  # the inputs, before the outputs are checked
    _check_files([json_path, csv_path], overwrite=overwrite, inputs=[orig, *(p for _, p in items)])
    sp = space or model_default_space(model) or "w"
    boundaries = [resolve_attr(a, model=model, space=sp) for a in attrs] + [load_boundary(f) for f in boundary_files]
    result = compare_report(orig, items, boundaries=boundaries, warn=warn, **options)
    write_outputs(result, json_path=json_path, csv_path=csv_path)
    return result


def evaluate_sweep(model: str, *, mechanisms: Sequence[str], delta: float, latents_files: Sequence[Path] = (),
                   json_path: Path | None = None, csv_path: Path | None = None, plot_path: Path | None = None,
                   overwrite: bool = False, **options: Any) -> dict:
    """``latentpriv evaluate --sweep``: check the grid's delta, the outputs (never a ``--latents`` file) and
    that matplotlib is there for ``plot_path`` before the work; then :func:`sweep_model` and
    :func:`write_outputs`. ``options``: :func:`sweep_model`'s other keyword arguments."""
    check_sweep_privacy(mechanisms, delta)
    _check_files([json_path, csv_path, plot_path], overwrite=overwrite, inputs=list(latents_files))
    if plot_path is not None:
        from latentpriv.evaluate.plots import pyplot

        pyplot()  # no matplotlib: say so before the sweep's work, not after it
    result = sweep_model(model, latents_files=latents_files, mechanisms=list(mechanisms), delta=delta, **options)
    write_outputs(result, json_path=json_path, csv_path=csv_path, plot_path=plot_path)
    return result

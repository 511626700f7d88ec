"""The demo pipeline (``latentpriv demo``): the whole flow on a real (generated) face, offline, in minutes on a CPU.

1. Take a face: a fixed-seed sample of the ``dcgan64`` demo generator, treated as a photo (its uint8
   pixels are all that is used afterwards).
2. Invert it into dcgan64's Z space with the real VGG16 weights (``configs/invert.yaml``, the project's
   default inverter, with the settings of :data:`DEMO_INVERSION` pinned for this small model).
3. Privatise its smile coordinate at several epsilon with the Laplace mechanism and OpenDP's secure
   sampler, along the project's boundary ``boundaries/dcgan64_smile_boundary.npy``.
4. Render everything, measure (PSNR/LPIPS of the reconstruction; smile scores before and after when the
   face extra is installed) and compose the labelled picture (:func:`summary_image`, laid out by
   :class:`SummaryLayout`).

:func:`run_demo` is the pipeline (arrays and models in, images and a report dict out);
:func:`demo_files` loads what it needs (fetching missing weights), runs it and writes ``DIR/summary.png``
and ``DIR/report.json``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from latentpriv.errors import AssetError, InputError

if TYPE_CHECKING:
    from latentpriv.models.protocol import Generator

log = logging.getLogger(__name__)

Say = Callable[[str], None]

MODEL = "dcgan64"
ATTRIBUTE = "smile"
#: dcgan64 sample used as the "photo": a frontal, neutral face the landmark scorer finds.
PHOTO_SEED = 1
DEFAULT_EPSILONS = (0.5, 1.0, 2.0, 5.0)
DEFAULT_ITERATIONS = 300
FAST_ITERATIONS = 20
#: The demo's inversion: ``configs/invert.yaml`` with these settings pinned, so that the picture and the
#: run time do not drift with the default preset. The Z prior keeps |z|^2 / dim near 1 (a DCGAN, unlike
#: StyleGAN, renders any |z|, badly); the latent noise ramp helps Z escape poor starts (PSNR ~34 dB vs ~26
#: dB without it at 300 steps); every step runs (no early stop) for a predictable time.
DEMO_INVERSION = ("space=z", "init=random", "loss.prior_weight=1.0", "noise_ramp.strength=0.05",
                  "noise_ramp.length=0.75", "early_stop.patience=0")
MECHANISM = "laplace"
#: B: the smile coordinate <z, n> ~ N(0, 1) for sampled z, so [-3, 3] holds 99.7 % of faces.
CLIP_RADIUS = 3.0
#: Assets the demo needs; fetched (with a message) when missing.
ASSETS = ("dcgan64", "vgg16", "lpips_vgg")
FACE_NUMBERS = ("smile scores of the original, the reconstruction and every private face",)
FACE_INSTALL = 'pip install -e ".[face]"'


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` produced.

    ``photo`` and ``reconstruction``: uint8 ``[H, W, 3]``; ``private``: uint8 ``[E, D, H, W, 3]`` for
    E epsilons and D draws each; ``report``: the JSON-ready record.
    """

    photo: np.ndarray
    reconstruction: np.ndarray
    private: np.ndarray
    epsilons: tuple[float, ...]
    report: dict[str, Any]


# ------------------------------------------------------------------------------------- the pipeline


def _check(G: Generator, boundary: np.ndarray, epsilons: Sequence[float], draws: int) -> tuple[tuple[float, ...], np.ndarray]:
    """Validated ``(epsilons, unit boundary [1, z_dim] float64)``."""
    from latentpriv.privacy.accounting import check_epsilons

    eps = tuple(check_epsilons(epsilons, name="--epsilons"))
    if draws < 1:
        raise InputError(f"--draws {draws}: need at least 1")
    if G.default_space != "z" or "z" not in G.latent_spaces:
        raise InputError(f"model {G.name!r}: the demo privatises in Z space; use the dcgan64 model")
    n = np.asarray(boundary, dtype=np.float64).reshape(1, -1)
    if n.shape[1] != G.z_dim or abs(float(np.linalg.norm(n)) - 1.0) > 1e-3:
        raise InputError(f"smile boundary has shape {n.shape} / norm {np.linalg.norm(n):.4g}; "
                         f"expected a unit (1, {G.z_dim}) vector")
    return eps, n


def _sample_photo(G: Generator, photo_seed: int) -> np.ndarray:
    """The "photo": uint8 ``[H, W, 3]`` of ``G``'s sample at ``photo_seed`` (its latent is dropped here)."""
    from latentpriv.evaluate.latents import sample_latents

    return G.to_uint8(_render(G, sample_latents(G, 1, "z", photo_seed), G.device))[0]


def _invert_photo(G: Generator, networks: Any, photo: np.ndarray, iterations: int, device: Any):
    """Invert the uint8 photo into Z: ``(inversion result, config, z float32 [1, z_dim], render [1,3,H,W])``."""
    import torch

    from latentpriv.inversion.optimize import invert, load_config
    from latentpriv.io import uint8_to_float01

    config = load_config("default", overrides=[f"iterations={int(iterations)}", *DEMO_INVERSION])
    inv = invert(G, uint8_to_float01(photo[None]), config, device=device, networks=networks)
    z = inv.latents.numpy().astype(np.float32)
    with torch.no_grad():
        recon_t = G.synthesize(torch.from_numpy(z).to(device))
    return inv, config, z, recon_t


def _release(z: np.ndarray, n: np.ndarray, eps: tuple[float, ...], draws: int) -> tuple[np.ndarray, list[dict]]:
    """``draws`` independent releases of the smile coordinate at each epsilon: latents float32
    ``[E * D, z_dim]`` (epsilon-major) and one record per epsilon."""
    from latentpriv.privacy.mechanisms import privatize

    latents, records = [], []
    for e in eps:
        for _ in range(draws):
            res = privatize(z, n, epsilon=e, mechanism=MECHANISM, clip_radius=CLIP_RADIUS, center=0.0,
                            attributes=[ATTRIBUTE])
            latents.append(np.asarray(res.latent, dtype=np.float32))
        records.append(res.record)
    return np.concatenate(latents), records


def _render(G: Generator, latents: np.ndarray, device: Any):
    """Renders ``[N, 3, H, W]`` in [-1, 1] of Z latents."""
    import torch

    with torch.no_grad():
        return G.synthesize(torch.from_numpy(latents).to(device))


def _image_distances(priv_t: Any, recon_t: Any, private: np.ndarray, reconstruction: np.ndarray,
                     networks: Any) -> tuple[np.ndarray, np.ndarray]:
    """LPIPS of every private render against the reconstruction (renders in [-1, 1]) and PSNR (dB) of the saved
    uint8 images (``[N, H, W, 3]`` against ``[H, W, 3]``): the number ``latentpriv evaluate`` gives for them."""
    import torch

    from latentpriv.evaluate.metrics import psnr
    from latentpriv.inversion.perceptual import lpips
    from latentpriv.io import render_to_float01

    with torch.no_grad():
        recon01, priv01 = render_to_float01(recon_t), render_to_float01(priv_t)
        lp = lpips(priv01, recon01.expand_as(priv01), networks).cpu().numpy()
    return lp, psnr(private, np.broadcast_to(reconstruction, private.shape))


def _score(score_fn: Callable[[np.ndarray], dict] | None, images: np.ndarray) -> list[float | None] | None:
    """Smile score per image (None where no face was found); None when there is no scorer."""
    if score_fn is None:
        return None
    values = np.asarray(score_fn(images)[ATTRIBUTE], dtype=np.float64).reshape(-1)
    return [float(v) if np.isfinite(v) else None for v in values]


def _release_rows(eps: tuple[float, ...], draws: int, n: np.ndarray, z: np.ndarray, z_priv: np.ndarray,
                  records: list[dict], lp: np.ndarray, ps: np.ndarray, scores: list | None) -> list[dict]:
    """The report's ``releases``: per epsilon its mechanism, scale and guarantee, and every draw's numbers."""
    coords = (np.asarray(z_priv, dtype=np.float64).reshape(len(z_priv), -1) @ n.T)[:, 0]
    c0 = float((np.asarray(z, dtype=np.float64).reshape(1, -1) @ n.T)[0, 0])
    out = []
    for i, (e, rec) in enumerate(zip(eps, records, strict=True)):
        items = [{"smile_coordinate": float(coords[j]), "smile_score": None if scores is None else scores[j],
                  "lpips_vs_reconstruction": float(lp[j]), "psnr_vs_reconstruction_db": float(ps[j])}
                 for j in range(i * draws, (i + 1) * draws)]
        valid = [it["smile_score"] for it in items if it["smile_score"] is not None]
        out.append({
            "epsilon": e,
            "mechanism": rec["mechanism"],
            "guarantee": rec["guarantee"]["statement"],
            "laplace_scale": rec["noise"]["scale_per_direction"][0],
            "clip_radius": rec["clip_radius"],
            "noise_sampler": rec["sampler"],
            "for_release": rec["for_release"],
            "draws": items,
            "mean_abs_smile_coordinate_change": float(np.mean([abs(it["smile_coordinate"] - c0) for it in items])),
            "mean_smile_score": float(np.mean(valid)) if valid else None,
        })
    return out


def run_demo(G: Generator, networks: Any, boundary: np.ndarray, *, epsilons: Sequence[float], draws: int = 3,
             photo_seed: int = PHOTO_SEED, iterations: int = DEFAULT_ITERATIONS, device: Any = "cpu",
             score_fn: Callable[[np.ndarray], dict] | None = None, boundary_info: dict | None = None,
             progress: Say | None = None) -> DemoResult:
    """Sample a face, invert it, privatise its smile at each epsilon ``draws`` times, measure.

    Args:
        G: a Z-space generator (``dcgan64``) on ``device``.
        networks: :class:`latentpriv.inversion.perceptual.PerceptualNetworks` with real weights (inversion, LPIPS).
        boundary: the smile boundary, unit ``(1, z_dim)`` or ``(z_dim,)``.
        epsilons: privacy budgets (> 0), one column each; every image is a separate pure-DP release of
            the smile coordinate (several releases of one face compose: their epsilons add up).
        draws: private images per epsilon (independent releases).
        photo_seed: seed of the ``torch.Generator`` that samples the "photo".
        iterations: inversion steps (300: PSNR ~34 dB; 20: a quick smoke run).
        score_fn: ``latentpriv.faces.attributes.score_images`` or None (face extra missing): the measured
            smile scores are then reported as skipped.
        progress: called with a short status line before each stage.

    The noise comes from OpenDP's secure sampler (not seedable): private images differ between runs.
    """
    say = progress or (lambda _msg: None)
    eps, n = _check(G, boundary, epsilons, draws)
    times: dict[str, float] = {}
    t_all = t0 = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t0
        times[name] = time.perf_counter() - t0
        t0 = time.perf_counter()

    photo = _sample_photo(G, photo_seed)
    lap("sample")
    say(f"inverting the face into {G.name}'s Z space ({iterations} iterations) ...")
    inv, config, z, recon_t = _invert_photo(G, networks, photo, iterations, device)
    reconstruction = G.to_uint8(recon_t)[0]
    times["invert"] = inv.seconds
    t0 = time.perf_counter()
    say(f"privatising the smile at epsilon {', '.join(f'{e:g}' for e in eps)} ({draws} draw(s) each) ...")
    z_priv, records = _release(z, n, eps, draws)
    lap("privatize")
    priv_t = _render(G, z_priv, device)
    private = G.to_uint8(priv_t).reshape(len(eps), draws, *photo.shape)
    lap("render")
    lp, ps = _image_distances(priv_t, recon_t, private.reshape(-1, *photo.shape), reconstruction, networks)
    lap("metrics")
    scores = [_score(score_fn, x) for x in (photo[None], reconstruction[None], private.reshape(-1, *photo.shape))]
    if score_fn is not None:
        lap("face_scores")
    times["total"] = time.perf_counter() - t_all
    report = _report(G, inv, config, eps, draws, photo_seed, n, z, boundary_info, records, score_fn is not None,
                     scores, _release_rows(eps, draws, n, z, z_priv, records, lp, ps, scores[2]), times)
    return DemoResult(photo, reconstruction, private, eps, report)


def _report(G: Generator, inv: Any, config: Any, eps: tuple[float, ...], draws: int, photo_seed: int, n: np.ndarray,
            z: np.ndarray, boundary_info: dict | None, records: list[dict], scored: bool, scores: list,
            releases: list[dict], times: dict[str, float]) -> dict[str, Any]:
    """The ``latentpriv.demo/1`` record."""
    from latentpriv.inversion.optimize import config_to_dict

    s_photo, s_recon, _ = scores
    return {
        "format": "latentpriv.demo/1",
        "what": "a dcgan64 sample treated as a photo -> inverted (Z) -> smile privatised at each epsilon",
        "model": G.info(),
        "photo": {"seed": int(photo_seed), "how": "G.sample_z(1, torch.Generator().manual_seed(seed))"},
        "inversion": {
            "space": inv.space, "iterations": int(inv.iterations.max()),
            "psnr_db": float(inv.metrics["psnr"][0]), "lpips": float(inv.metrics["lpips"][0]),
            "config": config_to_dict(config),
        },
        "boundary": boundary_info or {"attribute": ATTRIBUTE},
        "privacy": {
            "attribute": ATTRIBUTE, "mechanism": MECHANISM, "clip_radius": CLIP_RADIUS, "center": 0.0,
            "scope": records[0]["guarantee"]["scope"],
            "composition": f"each image is its own release; the {draws} draw(s) per epsilon together spend "
                           f"{draws} x epsilon on this face (basic composition)",
        },
        "original": {"smile_score": None if s_photo is None else s_photo[0]},
        "reconstruction": {"smile_coordinate": float((np.asarray(z, dtype=np.float64).reshape(1, -1) @ n.T)[0, 0]),
                           "note": "the coordinate a real release keeps secret (shown here for the demo)",
                           "smile_score": None if s_recon is None else s_recon[0]},
        "releases": releases,
        "skipped": [] if scored else [
            f"{what}: the face extra (dlib) is not installed; `{FACE_INSTALL}`" for what in FACE_NUMBERS],
        "times_s": {k: round(v, 3) for k, v in times.items()},
    }


# ------------------------------------------------------------------------------------- the picture


@dataclass(frozen=True)
class SummaryLayout:
    """The grid of the summary picture.

    A title strip of ``head`` px (per column: a title and a subtitle), then ``rows`` rows (one per draw) of
    ``cols`` columns (original, reconstruction, one per epsilon) of square ``tile`` px faces (the model's
    resolution times the upscale), each over a ``caption`` px caption, ``pad`` px apart and from the
    edges; the original and the reconstruction are in the first row only. A ``note`` px strip at the
    bottom explains the captions.
    """

    cols: int
    rows: int
    tile: int
    pad: int = 8
    head: int = 44
    caption: int = 22
    note: int = 20

    @classmethod
    def of(cls, result: DemoResult, scale: int = 4) -> SummaryLayout:
        """The layout of ``result``'s picture with faces upscaled ``scale`` times."""
        E, D, h, w, _ = result.private.shape
        if h != w:
            raise InputError(f"demo faces are {h}x{w}: the summary lays out square tiles")
        return cls(cols=2 + E, rows=D, tile=h * scale)

    @property
    def width(self) -> int:
        return self.pad + self.cols * (self.tile + self.pad)

    @property
    def height(self) -> int:
        return self.head + self.rows * (self.tile + self.caption + self.pad) + self.pad + self.note

    def tile_origin(self, col: int, row: int) -> tuple[int, int]:
        """Top-left ``(x, y)`` of the face in column ``col``, row ``row``."""
        return self.pad + col * (self.tile + self.pad), self.head + row * (self.tile + self.caption + self.pad)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: bitmap font only
        return ImageFont.load_default()


def _captions(result: DemoResult) -> tuple[list[tuple[str, str]], dict[tuple[int, int], str]]:
    """Per column ``(title, subtitle)`` and per ``(col, row)`` the caption under the face."""
    rep = result.report
    inv = rep["inversion"]
    titles = [("original (photo)", "dcgan64 sample"),
              ("reconstruction", f"PSNR {inv['psnr_db']:.1f} dB  LPIPS {inv['lpips']:.3f}")]
    titles += [(f"private, eps = {e:g}", f"Laplace scale {r['laplace_scale']:.2f}")
               for e, r in zip(result.epsilons, rep["releases"], strict=True)]
    scored = not rep["skipped"]

    def fmt(v: float | None) -> str:
        return "no face" if v is None else f"{v:.2f}"

    def score(v: float | None) -> str:
        return f"  score {fmt(v)}" if scored else ""

    caps = {(0, 0): f"smile score {fmt(rep['original']['smile_score'])}" if scored else "",
            (1, 0): f"coord {rep['reconstruction']['smile_coordinate']:+.2f}" + score(rep["reconstruction"]["smile_score"])}
    for i, r in enumerate(rep["releases"]):
        for d, it in enumerate(r["draws"]):
            caps[(2 + i, d)] = f"coord {it['smile_coordinate']:+.2f}" + score(it["smile_score"])
    return titles, caps


def summary_image(result: DemoResult, *, scale: int = 4) -> np.ndarray:
    """The labelled summary laid out by :class:`SummaryLayout`: original | reconstruction | private faces
    per epsilon (rows = draws), faces upscaled ``scale`` times (bicubic). Returns uint8 ``[H, W, 3]``."""
    from PIL import Image, ImageDraw

    layout = SummaryLayout.of(result, scale)
    canvas = Image.new("RGB", (layout.width, layout.height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    f_head, f_small = _font(16), _font(13)
    titles, captions = _captions(result)
    for c, (title, subtitle) in enumerate(titles):
        x, _ = layout.tile_origin(c, 0)
        draw.text((x + 2, 4), title, fill=(0, 0, 0), font=f_head)
        draw.text((x + 2, 24), subtitle, fill=(90, 90, 90), font=f_small)
    faces = {(0, 0): result.photo, (1, 0): result.reconstruction}
    faces.update({(2 + i, d): result.private[i, d] for i in range(len(result.epsilons))
                  for d in range(layout.rows)})
    for (c, r), img in faces.items():
        x, y = layout.tile_origin(c, r)
        canvas.paste(Image.fromarray(img).resize((layout.tile, layout.tile), Image.BICUBIC), (x, y))
        draw.text((x + 2, y + layout.tile + 3), captions[(c, r)], fill=(40, 40, 40), font=f_small)
    note = ("coord = smile coordinate <z, n> in dcgan64's Z space (released value clipped to +-3); "
            "score = measured smile (face landmarks)" if not result.report["skipped"] else
            "coord = smile coordinate <z, n> in dcgan64's Z space; measured scores skipped (no face extra)")
    draw.text((layout.pad, layout.height - 18), note + ". Laplace mechanism, OpenDP secure noise; each image is "
              "one release.", fill=(90, 90, 90), font=f_small)
    return np.asarray(canvas)


# ------------------------------------------------------------------------------------- files


def ensure_assets(names: Sequence[str], say: Say, *, progress: Any = None) -> list[str]:
    """Fetch each missing asset through the registry (saying so); return the names fetched. ``progress``:
    a bar factory for the bytes (:data:`latentpriv.assets.Progress`), or None."""
    from latentpriv import assets

    fetched = []
    for name in names:
        if assets.find(name) is not None:
            continue
        a = assets.get_asset(name)
        say(f"{name} ({a.description}) is not on this machine: fetching it once through the asset "
            f"registry into {assets.fetch_dir()} ...")
        assets.fetch(name, progress=progress)
        fetched.append(name)
    return fetched


def demo_files(out_dir: Path, *, epsilons: Sequence[float], draws: int, iterations: int, photo_seed: int,
               device: str, say: Say, t_start: float | None = None, fetch_progress: Any = None) -> dict[str, Any]:
    """Fetch missing weights, load the models, :func:`run_demo`, write ``out_dir/summary.png`` and
    ``out_dir/report.json``; return the report as written. ``say`` gets progress and notes for the user;
    ``fetch_progress``: a bar factory for the bytes of a download (None: no bar)."""
    import torch

    from latentpriv.devices import resolve_device
    from latentpriv.edit.boundaries import resolve_attr
    from latentpriv.faces.models import available
    from latentpriv.inversion.perceptual import PerceptualNetworks
    from latentpriv.io import save_image, write_json
    from latentpriv.models.registry import load_generator

    t_start = time.perf_counter() if t_start is None else t_start
    t0 = time.perf_counter()
    fetched = ensure_assets(ASSETS, say, progress=fetch_progress)
    t_fetch = time.perf_counter() - t0
    try:
        boundary = resolve_attr(ATTRIBUTE, model=MODEL, space="z")
    except AssetError as exc:
        raise AssetError(f"{exc}; the demo boundaries ship in the repository's boundaries/ folder "
                         "(`python scripts/train_demo_boundaries.py` recreates them)") from exc
    score_fn = None
    if available():
        from latentpriv.faces.attributes import score_images as score_fn
    else:
        say(f"note: the face extra (dlib) is not installed: measured smile scores will be skipped; "
            f"get them with `{FACE_INSTALL}`")
    t0 = time.perf_counter()
    dev = resolve_device(device)
    G = load_generator(MODEL, device=dev)
    networks = PerceptualNetworks.load(dev)
    t_load = time.perf_counter() - t0

    result = run_demo(G, networks, boundary.vector, epsilons=epsilons, draws=draws, photo_seed=photo_seed,
                      iterations=iterations, device=dev, score_fn=score_fn, boundary_info=boundary.info(),
                      progress=say)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary_path, report_path = out_dir / "summary.png", out_dir / "report.json"
    save_image(summary_path, summary_image(result))
    report = dict(result.report)
    report["times_s"] = {"fetch": round(t_fetch, 3), "load": round(t_load, 3), **report["times_s"],
                         "wall_total": round(time.perf_counter() - t_start, 3)}
    report["fetched"] = fetched
    report["device"] = str(dev)
    report["torch_threads"] = torch.get_num_threads()
    report["files"] = {"summary": str(summary_path), "report": str(report_path)}
    write_json(report_path, report)
    return report

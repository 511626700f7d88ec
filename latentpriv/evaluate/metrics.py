"""Image-similarity metrics for evaluating reconstructions and private edits: PSNR, SSIM, LPIPS.

All functions take RGB ``uint8`` images ``[H, W, 3]`` or batches ``[N, H, W, 3]`` (the format of
:func:`latentpriv.io.load_image` and ``G.to_uint8``), compare them pairwise and return ``float64 [N]``
(a batch) or a Python ``float`` (a single pair). Both arguments must have the same shape; resize first.

* :func:`psnr`: ``10 log10(255^2 / MSE)`` in dB over all pixels and channels; ``inf`` for identical images.
* :func:`ssim`: Wang et al. (2004) structural similarity with an 11-tap Gaussian window (sigma 1.5, truncated
  at 3.5 sigma), ``K1 = 0.01``, ``K2 = 0.03``, ``L = 255``, population (not sample) covariances, reflect
  padding, averaged over the window-valid interior and then over the three channels: the same numbers as
  ``skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=255, channel_axis=-1)``. 1 for identical images.
* :func:`lpips_distance`: LPIPS v0.1 (VGG) of Zhang et al. (2018) through :mod:`latentpriv.inversion.perceptual`
  (needs its weights: ``latentpriv weights fetch vgg16 lpips_vgg``); 0 for identical images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from latentpriv.errors import InputError

if TYPE_CHECKING:
    from latentpriv.inversion.perceptual import PerceptualNetworks

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _pair(a: np.ndarray, b: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray, bool]:
    a = np.asarray(a)
    b = np.asarray(b)
    for name, x in (("first", a), ("second", b)):
        if x.dtype != np.uint8 or x.ndim not in (3, 4) or x.shape[-1] != 3:
            raise InputError(f"{what}: {name} image must be RGB uint8 [H, W, 3] or [N, H, W, 3], "
                             f"got {x.dtype} {tuple(x.shape)}")
    if a.shape != b.shape:
        raise InputError(f"{what}: image shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}; resize one first")
    single = a.ndim == 3
    if single:
        a, b = a[None], b[None]
    return a, b, single


def _out(values: np.ndarray, single: bool) -> np.ndarray | float:
    return float(values[0]) if single else values


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
    """Peak signal-to-noise ratio in dB (peak 255); ``inf`` where the images are identical.

    latentpriv's one PSNR: ``evaluate``, the demo and the inversion record (``io.float01_to_uint8`` of the
    reconstruction and the target) all measure the 8-bit images with it, so the same pictures give the same
    number everywhere. ``inf`` is kept (the textbook value, no cap): records write it as JSON ``Infinity``.
    """
    a, b, single = _pair(a, b, "psnr")
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(a.shape[0], -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        values = np.where(mse == 0, np.inf, 10.0 * np.log10(255.0**2 / np.where(mse == 0, 1.0, mse)))
    return _out(values, single)


def _ssim_one(x: np.ndarray, y: np.ndarray) -> float:
    import scipy.ndimage

    x = x.astype(np.float64)
    y = y.astype(np.float64)
    sig = (SSIM_SIGMA, SSIM_SIGMA, 0.0)

    def filt(v: np.ndarray) -> np.ndarray:
        return scipy.ndimage.gaussian_filter(v, sig, truncate=SSIM_TRUNCATE, mode="reflect")

    ux, uy = filt(x), filt(y)
    vx = filt(x * x) - ux * ux
    vy = filt(y * y) - uy * uy
    vxy = filt(x * y) - ux * uy
    c1 = (SSIM_K1 * 255.0) ** 2
    c2 = (SSIM_K2 * 255.0) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)  # window radius: 5 px, as in skimage
    interior = s[pad:-pad, pad:-pad]
    return float(interior.reshape(-1, 3).mean(axis=0).mean())


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
    """Mean structural similarity in ``[-1, 1]`` (1 = identical); see the module docstring."""
    a, b, single = _pair(a, b, "ssim")
    win = 2 * int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5) + 1
    if min(a.shape[1:3]) < win:
        raise InputError(f"ssim: images are {a.shape[2]}x{a.shape[1]} px, smaller than the {win}-px window")
    return _out(np.array([_ssim_one(x, y) for x, y in zip(a, b, strict=True)]), single)


def lpips_distance(a: np.ndarray, b: np.ndarray, networks: PerceptualNetworks, *,
                   size: int | None = None, batch_size: int = 16) -> np.ndarray | float:
    """LPIPS (VGG, v0.1) per pair; ``networks`` from ``PerceptualNetworks.load(device)``.

    ``size`` resizes both images to ``size`` x ``size`` first (antialiased bilinear; e.g. 256 for 1024 px
    images, as the research code does); ``None`` compares at native resolution.
    """
    import torch

    from latentpriv.inversion.perceptual import lpips
    from latentpriv.io import uint8_to_float01

    a, b, single = _pair(a, b, "lpips")
    out = []
    with torch.no_grad():
        for i in range(0, a.shape[0], batch_size):
            x = uint8_to_float01(a[i:i + batch_size]).to(networks.device)
            y = uint8_to_float01(b[i:i + batch_size]).to(networks.device)
            out.append(lpips(x, y, networks, size=size).double().cpu().numpy())
    return _out(np.concatenate(out), single)


# ------------------------------------------------------------------------------------- evaluation

#: boundary attribute name -> landmark score (``latentpriv.faces.attributes``) that measures it
ATTRIBUTE_SCORE: dict[str, str] = {
    "smile": "smile", "mouth_open": "mouth_open", "pose": "yaw", "yaw": "yaw", "eyes_open": "eyes_open",
}


def match_size(reference: np.ndarray, image: np.ndarray) -> np.ndarray:
    """``reference`` (``uint8 [H, W, 3]``) resized to ``image``'s size (Lanczos, antialiased) if needed.

    Evaluation compares at the generator's resolution: a 1024 px photo against a 64 px render is
    downsampled to 64 px, never the other way round.
    """
    if reference.shape == image.shape:
        return reference
    from PIL import Image

    h, w = image.shape[:2]
    return np.asarray(Image.fromarray(reference).resize((w, h), Image.Resampling.LANCZOS))


def face_analysis(images: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Landmark attribute scores ``{name: float64 [N]}`` and identity embeddings ``float64 [N, 128]`` of the
    largest face of each ``uint8 [N, H, W, 3]`` image, detecting each face once; NaN where no face.

    Needs the ``face`` extra (raises :class:`latentpriv.faces.FaceExtraMissing` otherwise).
    """
    from latentpriv.faces.attributes import score_landmarks
    from latentpriv.faces.identity import EMBEDDING_DIM, embed_face
    from latentpriv.faces.landmarks import largest_face

    images = np.asarray(images)
    n = images.shape[0]
    lms = np.full((n, 68, 2), np.nan)
    emb = np.full((n, EMBEDDING_DIM), np.nan)
    for i, img in enumerate(images):
        face = largest_face(img)
        if face is not None:
            lms[i] = face.landmarks
            emb[i] = embed_face(img, face)
    return score_landmarks(lms), emb


def _finite(x: float) -> float | None:
    """JSON-friendly: NaN -> None, inf kept as float (JSON writers emit Infinity)."""
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else float(x)


def _face_fields(ref_emb: np.ndarray, emb: np.ndarray, ref_scores: dict[str, np.ndarray],
                 scores: dict[str, np.ndarray], keys: Sequence[str]) -> list[dict]:
    """Per image ``i``: ``face_found``, ``identity_distance`` to ``ref_emb[i]``, ``same_person`` (dlib's
    threshold, :func:`latentpriv.faces.identity.same_person`) and, per key, the score and its change from
    ``ref_scores``; ``None`` where no face was found. References broadcast (one original for all)."""
    from latentpriv.faces.identity import identity_distance, same_person

    n = emb.shape[0]
    dist = identity_distance(ref_emb, emb)
    out = []
    for i in range(n):
        d = float(dist[i])
        f: dict = {"face_found": bool(np.isfinite(emb[i]).all()), "identity_distance": _finite(d),
                   "same_person": None if np.isnan(d) else bool(same_person(d))}
        for k in keys:
            ref = np.broadcast_to(ref_scores[k], (n,))
            f[k] = _finite(float(scores[k][i]))
            f[f"{k}_change"] = _finite(float(scores[k][i] - ref[i]))
        out.append(f)
    return out


def evaluate_images(original: np.ndarray, candidates: np.ndarray, *, networks: PerceptualNetworks | None = None,
                    lpips_size: int | None = None, faces: bool = True) -> dict:
    """Compare renders with the original they should resemble.

    Args:
        original: RGB ``uint8 [H, W, 3]``.
        candidates: RGB ``uint8 [N, h, w, 3]`` (reconstruction, private renders); the original is resized
            to ``h x w`` for the pixel metrics (:func:`match_size`).
        networks: LPIPS networks; ``None`` skips LPIPS.
        lpips_size: passed to :func:`lpips_distance`.
        faces: compute landmark attributes and identity distances (needs the ``face`` extra).

    Returns:
        ``{"original": {scores...}, "rows": [ {psnr, ssim, lpips?, identity_distance?, same_person?,
        <attribute>?, <attribute>_change?} per candidate ]}``; values that could not be measured (no
        face found) are ``None``.
    """
    candidates = np.asarray(candidates)
    if candidates.ndim == 3:
        candidates = candidates[None]
    ref = match_size(original, candidates[0])
    if any(c.shape != candidates[0].shape for c in candidates):
        raise InputError("candidates: all renders must have the same size")
    refs = np.broadcast_to(ref, candidates.shape)
    rows = _image_fields(refs, candidates, networks, lpips_size)
    orig_out: dict = {}
    if faces:
        o_scores, o_emb = face_analysis(original[None])
        c_scores, c_emb = face_analysis(candidates)
        orig_out["face_found"] = bool(np.isfinite(o_emb).all())
        for k, v in o_scores.items():
            orig_out[k] = _finite(float(v[0]))
        for r, f in zip(rows, _face_fields(o_emb, c_emb, o_scores, c_scores, list(c_scores)), strict=True):
            r.update(f)
    return {"original": orig_out, "rows": rows}


def _image_fields(base: np.ndarray, images: np.ndarray, networks: PerceptualNetworks | None,
                  lpips_size: int | None) -> list[dict]:
    """Per image: ``psnr``, ``ssim`` and (with ``networks``) ``lpips`` against ``base`` (same shapes)."""
    ps = psnr(base, images)
    ss = ssim(base, images)
    lp = lpips_distance(base, images, networks, size=lpips_size) if networks is not None else None
    rows = []
    for i in range(images.shape[0]):
        r = {"psnr": float(ps[i]), "ssim": float(ss[i])}
        if lp is not None:
            r["lpips"] = float(lp[i])
        rows.append(r)
    return rows


@dataclass(frozen=True)
class _Originals:
    """The unreleased faces of a sweep: renders ``uint8 [N, H, W, 3]``, coordinates ``[N, k]``, their rows and
    (with ``faces``) landmark scores ``{name: [N]}`` and identity embeddings ``[N, 128]``."""

    images: np.ndarray
    coords: np.ndarray
    rows: list[dict]
    scores: dict[str, np.ndarray] | None
    emb: np.ndarray | None


def _sweep_originals(base: np.ndarray, before: np.ndarray, attributes: list[str], faces: bool) -> _Originals:
    """The originals' rows (coordinates, face scores) and their face scores/embeddings for the changes."""
    o_scores, o_emb = face_analysis(base) if faces else (None, None)
    originals = []
    for i in range(before.shape[0]):
        o = {"latent": i, **{f"coord_{a}": float(before[i, j]) for j, a in enumerate(attributes)}}
        if faces:
            o["face_found"] = bool(np.isfinite(o_emb[i]).all())
            o.update({k: _finite(float(v[i])) for k, v in o_scores.items()})
        originals.append(o)
    return _Originals(base, before, originals, o_scores, o_emb)


def _sweep_rows(orig: _Originals, images: np.ndarray, after: np.ndarray, key: dict, *, attributes: list[str],
                scored: list[str], networks: PerceptualNetworks | None, lpips_size: int | None) -> list[dict]:
    """The rows of one release: per latent ``key`` (mechanism, epsilon, repeat), its coordinates before and
    after, and the measurements of its render ``images[i]`` against the original's."""
    measured = _image_fields(orig.images, images, networks, lpips_size)
    if orig.emb is not None:
        p_scores, p_emb = face_analysis(images)
        for m, f in zip(measured, _face_fields(orig.emb, p_emb, orig.scores, p_scores, scored), strict=True):
            m.update(f)
    rows = []
    for i, m in enumerate(measured):
        r: dict = {"latent": i, **key}
        for j, a in enumerate(attributes):
            r[f"coord_before_{a}"] = float(orig.coords[i, j])
            r[f"coord_after_{a}"] = float(after[i, j])
            r[f"coord_change_{a}"] = float(after[i, j] - orig.coords[i, j])
        rows.append({**r, **m})
    return rows


def _sweep_draw(latents: np.ndarray, directions: np.ndarray, *, mech: str, eps: float, delta: float,
                clip_radius: float, center: float | np.ndarray, rng: np.random.Generator | None,
                layers: Sequence[int] | None, attributes: list[str]):
    """One release of every latent at (``mech``, ``eps``): the mechanism's result (``.latent``, ``.record``)."""
    from latentpriv.privacy.coordinate_mechanisms import get_mechanism
    from latentpriv.privacy.mechanisms import privatize, seed_warning_silenced

    approximate = get_mechanism(mech).approximate   # delta is the mechanism's parameter only where it takes one
    with seed_warning_silenced():  # the seed mechanism's warning, once per release: the summary records it once
        return privatize(latents, directions, epsilon=float(eps), delta=float(delta) if approximate else 0.0,
                         mechanism=mech, clip_radius=clip_radius, center=center, seed=rng, layers=layers,
                         attributes=attributes)


def privacy_utility_sweep(render: Callable[[np.ndarray], np.ndarray], latents: np.ndarray, directions: np.ndarray, *,
                          epsilons: Sequence[float], mechanisms: Sequence[str], attributes: Sequence[str],
                          delta: float = 1e-5, clip_radius: float = 3.0, center: float | np.ndarray = 0.0,
                          seed: int | None = 0, repeats: int = 1, layers: Sequence[int] | None = None,
                          networks: PerceptualNetworks | None = None, lpips_size: int | None = None,
                          faces: bool = True, progress: Callable[[str], None] | None = None) -> dict:
    """Privacy/utility trade-off: privatize every latent at every (mechanism, epsilon), render, measure.

    Args:
        render: latents (same layout as ``latents``) -> RGB ``uint8 [N, H, W, 3]`` (e.g. ``G.synthesize``
            followed by ``G.to_uint8``).
        latents: ``float [N, D]`` (Z/W) or ``[N, L, D]`` (W+), one face per row (e.g. inverted photos).
        directions: ``[k, D]`` orthonormal boundary normals (``latentpriv.edit.boundaries.resolve_directions``).
        epsilons, mechanisms: the grid; ``delta`` is used by ``gaussian`` and ``seed`` only.
        attributes: a name per direction; those in :data:`ATTRIBUTE_SCORE` are also measured on the
            rendered faces (landmark scores), the others through their latent coordinate only.
        seed: ``int`` -> reproducible seeded noise (an experiment, not a release); ``None`` -> OpenDP's
            secure samplers. One numpy stream serves the whole grid, in the loop order.
        repeats: independent draws per (latent, mechanism, epsilon).
        networks: LPIPS networks, or ``None`` to skip LPIPS.

    Returns:
        ``{"rows": [...], "summary": [...], "originals": [...]}``. A row per (latent, mechanism, epsilon,
        repeat) with the coordinate before/after along each direction, PSNR/SSIM (and LPIPS) against the
        original render, identity distance, same-person flag and landmark scores with their change. A
        summary row per (mechanism, epsilon) with means over latents and repeats, ignoring faces that were
        not found (``n_faces`` counts those that were): ``coord_abs_change_<a>``, ``<score>_abs_change``,
        ``identity_distance``, ``same_person_rate``, ``psnr``, ``ssim`` (``lpips``).

    Nothing here touches the privacy ledger: a sweep measures mechanisms, it does not release.
    """
    from latentpriv.privacy.mechanisms import coordinates

    latents = np.asarray(latents)
    attributes = list(attributes)
    if len(attributes) != len(directions):
        raise InputError(f"{len(attributes)} attribute name(s) for {len(directions)} direction(s)")
    if not epsilons or not mechanisms:
        raise InputError("sweep: give at least one epsilon and one mechanism")
    if repeats < 1:
        raise InputError(f"repeats={repeats}: must be >= 1")
    rng = np.random.default_rng(seed) if seed is not None else None
    say = progress or (lambda msg: None)

    # the originals: rendered once, their coordinates and faces measured once
    base = render(latents)
    before = coordinates(latents, directions, layers=layers)  # [N, k]
    scored = [ATTRIBUTE_SCORE[a] for a in attributes if a in ATTRIBUTE_SCORE]
    orig = _sweep_originals(base, before, attributes, faces)

    # the grid: draw, render, measure each cell; one summary row per cell
    rows: list[dict] = []
    summary: list[dict] = []
    for mech in mechanisms:
        for eps in epsilons:
            say(f"{mech} epsilon={eps:g}")
            cell: list[dict] = []
            for rep in range(repeats):
                res = _sweep_draw(latents, directions, mech=mech, eps=eps, delta=delta, clip_radius=clip_radius,
                                  center=center, rng=rng, layers=layers, attributes=attributes)
                after = coordinates(res.latent, directions, layers=layers)
                cell += _sweep_rows(orig, render(np.asarray(res.latent)), after,
                                    {"mechanism": mech, "epsilon": float(eps), "repeat": rep},
                                    attributes=attributes, scored=scored, networks=networks, lpips_size=lpips_size)
            rows.extend(cell)
            summary.append(_summarise(cell, mech, float(eps), attributes, scored, faces, networks is not None,
                                      res.record.get("guarantee", {}).get("type")))
    return {"rows": rows, "summary": summary, "originals": orig.rows}


def median_ci(values: list, level: float = 0.95) -> tuple[float | None, list[float] | None]:
    """Median of ``values`` (None/NaN = unmeasured, dropped) and its distribution-free confidence interval.

    The interval is the order-statistic one: ``[x_(j), x_(n+1-j)]`` of the sorted values with the largest
    ``j`` such that ``P(Bin(n, 1/2) <= j - 1) <= (1 - level) / 2``; it covers the population median with
    probability >= ``level`` whatever the distribution. It needs n >= 6 at 95 % (None below). inf values
    (the PSNR of identical images) are ordered above every finite one, so the median stays finite while
    fewer than half of the images are identical.
    """
    from math import comb

    v = sorted(float(x) for x in values if x is not None and not np.isnan(x))
    n = len(v)
    if not n:
        return None, None
    median = v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
    tail, j = 0.0, 0
    while True:  # grow j while the two tails stay within 1 - level
        tail_next = tail + comb(n, j) / 2.0**n
        if tail_next > (1.0 - level) / 2:
            break
        tail, j = tail_next, j + 1
    return float(median), ([v[j - 1], v[n - j]] if j >= 1 else None)


def _rate_ci(successes: int, n: int) -> list[float] | None:
    """Wilson 95 % score interval of a proportion."""
    if n == 0:
        return None
    z = 1.959963984540054
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [float(max(0.0, centre - half)), float(min(1.0, centre + half))]


def _summarise(cell: list[dict], mech: str, eps: float, attributes: list[str], scored: list[str], faces: bool,
               with_lpips: bool, guarantee: str | None) -> dict:
    """One grid point: each metric's median over the cell and its 95 % interval (``<key>_ci95``, None for
    fewer than 6 values); ``psnr_identical`` counts renders identical to the original (PSNR inf)."""
    s: dict = {"mechanism": mech, "epsilon": eps, "guarantee": guarantee, "n": len(cell)}

    def put(key: str, values: list) -> None:
        s[key], s[f"{key}_ci95"] = median_ci(values)

    for a in attributes:
        put(f"coord_abs_change_{a}", [abs(r[f"coord_change_{a}"]) for r in cell])
    put("psnr", [r["psnr"] for r in cell])
    s["psnr_identical"] = sum(1 for r in cell if r["psnr"] is not None and np.isinf(r["psnr"]))
    put("ssim", [r["ssim"] for r in cell])
    if with_lpips:
        put("lpips", [r["lpips"] for r in cell])
    if faces:
        valid = [r for r in cell if r["identity_distance"] is not None]
        s["n_faces"] = len(valid)
        put("identity_distance", [r["identity_distance"] for r in valid])
        same = sum(1 for r in valid if r["same_person"])
        s["same_person_rate"] = same / len(valid) if valid else None  # a proportion: its mean, Wilson interval
        s["same_person_rate_ci95"] = _rate_ci(same, len(valid))
        for k in scored:
            put(f"{k}_abs_change", [abs(r[f"{k}_change"]) for r in cell if r[f"{k}_change"] is not None])
    return s

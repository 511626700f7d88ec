"""What an adversary infers from released faces: attribute inference, re-identification, quality.

The guarantee of :func:`latentpriv.privatize` bounds what anyone learns about the protected coordinates.
This module measures what adversaries that never see the original actually infer from the released
latents and their renders, beside that bound (``latentpriv attack``; docs/attack.md):

* **coordinate**: the best threshold on the released coordinate ``<w', n_i>``, fitted on a disjoint
  training set released the same way. It is post-processing of the DP release, so its accuracy on the
  label ``y = [a_i > c_i]`` is at most :func:`accuracy_bound` (derivation there and in docs/attack.md).
* **residual**: scikit-learn's logistic regression from the released latent's residual ``w' - (w' N^T) U``
  (the split the release used) to the label, trained on other samples of the model released the same
  way. The residual is outside the guarantee's neighbouring relation: this adversary measures the leak
  through attribute correlations, which the bound does not cover.
* **image**: logistic regression from the private render to the label, trained on private renders of
  other samples: on dlib landmark scores (smile, mouth_open, yaw, eyes_open) when the ``face`` extra finds
  faces, else on VGG16 relu5_3 features (spatially averaged). Also outside the guarantee.
* **identity**: dlib 128-d embedding distance of each private render to its original render (same-person
  rate at :data:`latentpriv.faces.identity.SAME_PERSON_THRESHOLD`, median) and top-1 re-identification
  among all test originals.
* **quality**: LPIPS (VGG) of each private render to its original render.

With the ``face`` extra a second, *perceived* label is reported beside the latent one: the landmark score
of the original render above the median of its set. Every accuracy comes with a 95 % Clopper-Pearson
interval over the test faces. Training and test faces are disjoint samples.

Nothing here reads or writes files, prints, or touches the ledger: the caller passes a ``release``
callable (:mod:`latentpriv.evaluate.attack_run` wraps the ledger around it on request).
"""

from __future__ import annotations

import io
import logging
import math
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from latentpriv.errors import ConfigError, InputError
from latentpriv.io import no_bar

log = logging.getLogger(__name__)

__all__ = [
    "ADVERSARIES",
    "AttackData",
    "accuracy_bound",
    "accuracy_interval",
    "attack_figure",
    "csv_rows",
    "fit_threshold",
    "run_attack",
]

ADVERSARIES: tuple[str, ...] = ("coordinate", "residual", "image")
ALPHA = 0.05                 # 95 % Clopper-Pearson intervals
RENDER_BATCH = 64            # latents rendered (and scored) per call: bounds memory at any N
#: the VGG16 tap of the image adversary's fallback features (relu5_3, also LPIPS's last tap)
VGG_FEATURE_TAP = 29
#: use landmark features when at least this fraction of the training renders has a face
MIN_FACE_RATE = 0.5
#: LPIPS compares renders at most this many pixels wide (larger ones are resized, as the research code does)
LPIPS_MAX_SIDE = 256
#: the originals' VGG taps are kept between epsilons while they take at most this much memory
FEATURE_CACHE_BYTES = 1 << 30

#: ``release(latent [N, D] or [N, L, D], epsilon) -> (released float32 latent, record)``
Release = Callable[[np.ndarray, float], tuple[np.ndarray, dict]]
#: ``render(latent [n, ...]) -> uint8 [n, H, W, 3]``
Render = Callable[[np.ndarray], np.ndarray]


# ------------------------------------------------------------------------------------- the bound


def accuracy_bound(epsilon: float | None, delta: float = 0.0, *, majority: float = 0.5) -> float | None:
    """Largest accuracy of any guess of a binary label from an (epsilon, delta)-DP release of the coordinate.

    For the two label classes, let ``P0``/``P1`` be the distributions of the released coordinate given
    ``y = 0``/``y = 1``. Each is a mixture of the mechanism's output distributions over the coordinates of
    that class, and the mechanism satisfies ``M(a)(S) <= e^eps M(a')(S) + delta`` for *every* pair of
    coordinates (the clamp makes the whole range neighbouring), so ``P0(S) <= e^eps P1(S) + delta`` and
    vice versa. A guess ``f`` with ``q = P0(f = 1)``, ``p = P1(f = 1)`` has accuracy
    ``pi0 (1 - q) + pi1 p`` subject to ``p <= e^eps q + delta`` and ``1 - q <= e^eps (1 - p) + delta``
    (Kairouz, Oh & Viswanath 2015). The maximum of this linear programme is at a vertex:
    ``(e^eps + delta) / (1 + e^eps)`` (both constraints tight, any prior), or ``majority + (1 - majority)
    delta`` (always guess the larger class). For a balanced label and pure DP: ``e^eps / (1 + e^eps)``.

    Args:
        epsilon: the release's epsilon for the coordinates (> 0), or None (no guarantee: returns None).
        delta: its delta in [0, 1).
        majority: the larger class's share of the label, in [0.5, 1].

    Returns:
        The bound in [0.5, 1], or None when ``epsilon`` is None.
    """
    if epsilon is None:
        return None
    if not (epsilon > 0 and math.isfinite(epsilon)) or not (0 <= delta < 1) or not (0.5 <= majority <= 1):
        raise ConfigError(f"accuracy_bound: need epsilon > 0 (got {epsilon}), 0 <= delta < 1 (got {delta}), "
                          f"0.5 <= majority <= 1 (got {majority})")
    # e^eps / (1 + e^eps) written as a logistic, which does not overflow for large epsilon
    dp = 1.0 / (1.0 + math.exp(-epsilon)) + delta / (1.0 + math.exp(min(epsilon, 700.0)))
    return min(1.0, max(dp, majority + (1.0 - majority) * delta))


def accuracy_interval(correct: int, n: int) -> tuple[float, float]:
    """95 % Clopper-Pearson interval of ``correct / n`` (the audit's :func:`clopper_pearson`)."""
    from latentpriv.privacy.audit import clopper_pearson

    if n <= 0:
        return (0.0, 1.0)
    lo, hi = clopper_pearson(np.array([correct]), n, ALPHA)
    return (float(lo[0]), float(hi[0]))


def _score(pred: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """``{"accuracy", "ci": [lo, hi], "n"}`` of boolean predictions against labels (both ``[n]``)."""
    n = int(y.size)
    correct = int((pred == y).sum())
    lo, hi = accuracy_interval(correct, n)
    return {"accuracy": correct / n if n else None, "ci": [lo, hi], "n": n}


# ------------------------------------------------------------------------------------- adversaries


def fit_threshold(x: np.ndarray, y: np.ndarray) -> tuple[float, bool]:
    """The threshold rule ``y_hat = (x > t)`` (``upper=True``) or ``(x <= t)`` with the best training
    accuracy on ``x float [n]``, ``y bool [n]``; ties go to the threshold nearest the median of ``x``.

    Returns ``(t, upper)``.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=bool)
    if x.size == 0:
        raise InputError("fit_threshold: no training samples")
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]
    # candidate cuts between distinct consecutive values, plus below all and above all
    cut = np.concatenate([[xs[0] - 1.0], (xs[:-1] + xs[1:]) / 2, [xs[-1] + 1.0]])
    valid = np.concatenate([[True], xs[:-1] < xs[1:], [True]])
    pos_below = np.concatenate([[0], np.cumsum(ys)])            # positives at or below each cut
    neg_below = np.arange(xs.size + 1) - pos_below
    pos_total = int(ys.sum())
    upper_correct = neg_below + (pos_total - pos_below)           # predict 1 above the cut
    lower_correct = xs.size - upper_correct                       # the mirror rule gets the rest right
    best = max(int(upper_correct[valid].max()), int(lower_correct[valid].max()))
    med = float(np.median(xs))
    cands = [(abs(cut[i] - med), float(cut[i]), True) for i in np.flatnonzero(valid & (upper_correct == best))]
    cands += [(abs(cut[i] - med), float(cut[i]), False) for i in np.flatnonzero(valid & (lower_correct == best))]
    _, t, upper = min(cands)
    return t, upper


def _threshold_predict(x: np.ndarray, t: float, upper: bool) -> np.ndarray:
    return (x > t) if upper else (x <= t)


def _logistic(x_train: np.ndarray, y_train: np.ndarray, seed: int):
    """A fitted standardise + logistic-regression pipeline, or a constant guess when one class is missing."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if np.unique(y_train).size < 2:
        const = bool(y_train[0]) if y_train.size else False
        return lambda x: np.full(x.shape[0], const)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=seed))
    model.fit(x_train, y_train)
    return lambda x: model.predict(x).astype(bool)


def _impute(x: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """NaN features (no face found) replaced by the training means: the classifier then guesses from the
    other features, and a face that is not found still counts in the accuracy (never dropped)."""
    return np.where(np.isfinite(x), x, fill[None, :])


# ------------------------------------------------------------------------------------- data


@dataclass
class AttackData:
    """The faces of one attack: test faces (whose releases are attacked) and disjoint training faces.

    ``test``/``train``: latents float ``[N, D]`` (Z/W) or ``[N, L, D]`` (W+), one face per row.
    ``directions``: orthonormal ``[k, D]``; ``centers``: ``[k]``; ``attributes``: a name per direction.
    ``split_basis``: the ``U [k, D]`` of the release's split (``N`` for the orthogonal split), so the
    residual adversary reads the residual the release wrote.
    """

    test: np.ndarray
    train: np.ndarray
    directions: np.ndarray
    centers: np.ndarray
    attributes: Sequence[str]
    split_basis: np.ndarray


def _flat_rows(latent: np.ndarray) -> np.ndarray:
    """``[N, D]`` per face: W+ latents by their mean over layers (the coordinate is the layer mean too)."""
    lat = np.asarray(latent, dtype=np.float64)
    return lat.mean(axis=1) if lat.ndim == 3 else lat


def _coords(latent: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    return _flat_rows(latent) @ dirs.T


def _residual(latent: np.ndarray, dirs: np.ndarray, u: np.ndarray) -> np.ndarray:
    w = _flat_rows(latent)
    return w - (w @ dirs.T) @ u


def _render_all(render: Render, latent: np.ndarray, bar) -> np.ndarray:
    out = []
    for i in range(0, latent.shape[0], RENDER_BATCH):
        out.append(np.asarray(render(latent[i:i + RENDER_BATCH])))
        bar.update(min(RENDER_BATCH, latent.shape[0] - i))
    return np.concatenate(out)


def _analyse_chunk(chunk: np.ndarray, embed: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Landmark scores ``[n, 4]`` and, if ``embed``, embeddings ``[n, 128]`` of renders ``uint8 [n, H, W, 3]``
    (module level: it runs in worker processes)."""
    from latentpriv.evaluate.metrics import face_analysis
    from latentpriv.faces.attributes import ATTRIBUTES, score_images

    if embed:
        s, e = face_analysis(chunk)
    else:
        s, e = score_images(chunk), None
    return np.stack([s[a] for a in ATTRIBUTES], axis=1), e


class _Faces:
    """dlib analysis of renders: landmark scores (``[n, 4]``, NaN: no face) and, on request, embeddings.

    dlib's detector and embedding run on one core each; with ``workers`` > 1 chunks go to that many worker
    processes (spawned, so they share no torch or OpenMP state with this one) and come back in order.
    """

    def __init__(self, enabled: bool, workers: int = 1) -> None:
        self.enabled = enabled
        self.workers = max(1, int(workers))
        self._pool = None

    def _map(self, chunks: list[np.ndarray], embed: bool):
        if self.workers == 1 or len(chunks) < 2:
            return (_analyse_chunk(c, embed) for c in chunks)
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self._pool.map(_analyse_chunk, chunks, [embed] * len(chunks))

    def analyse(self, images: np.ndarray, *, embed: bool, bar) -> tuple[np.ndarray, np.ndarray | None]:
        step = RENDER_BATCH if self.workers == 1 else max(8, RENDER_BATCH // self.workers)
        chunks = [images[i:i + step] for i in range(0, images.shape[0], step)]
        scores, embs = [], []
        for chunk, (s, e) in zip(chunks, self._map(chunks, embed), strict=True):
            scores.append(s)
            if embed:
                embs.append(e)
            bar.update(chunk.shape[0])
        return np.concatenate(scores), (np.concatenate(embs) if embed else None)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


class _Perceptual:
    """VGG16 taps of renders, chunk by chunk: LPIPS of private vs original renders, and the image adversary's
    pooled relu5_3 features.

    Renders larger than :data:`LPIPS_MAX_SIDE` are resized to it first (as ``evaluate --lpips-size``). The
    originals' taps are computed once and kept (float16) while they fit in :data:`FEATURE_CACHE_BYTES`;
    beyond that they are recomputed per epsilon, so memory stays bounded at any N and resolution.
    """

    def __init__(self, networks, originals: np.ndarray) -> None:
        self.networks = networks
        self.originals = originals
        side = min(originals.shape[1], LPIPS_MAX_SIDE)
        self.size = None if side == originals.shape[1] else side
        per_image = 2 * sum(c * (side // 2 ** i) ** 2 for i, c in enumerate((64, 128, 256, 512, 512)))
        self.cache: list[list] | None = None
        if per_image * originals.shape[0] <= FEATURE_CACHE_BYTES:
            self.cache = [[f.half() for f in self._taps(originals[i:i + RENDER_BATCH])]
                          for i in range(0, originals.shape[0], RENDER_BATCH)]

    def _taps(self, images: np.ndarray) -> list:
        import torch

        from latentpriv.inversion.perceptual import LPIPS_TAPS, imagenet_normalize, resize
        from latentpriv.io import uint8_to_float01

        with torch.no_grad():
            x = resize(uint8_to_float01(images).to(self.networks.device), self.size, "bilinear", True)
            return self.networks.vgg(imagenet_normalize(x), LPIPS_TAPS)

    def _original_taps(self, chunk: int) -> list:
        if self.cache is not None:
            return [f.float() for f in self.cache[chunk]]
        return self._taps(self.originals[chunk * RENDER_BATCH:(chunk + 1) * RENDER_BATCH])

    def measure(self, private: np.ndarray, *, lpips: bool) -> tuple[np.ndarray | None, np.ndarray]:
        """LPIPS ``[N]`` of ``private`` (aligned with the originals) when ``lpips``, and pooled features
        ``[N, 512]``."""
        import torch

        # LPIPS from the taps: the originals' forward pass is not repeated per epsilon
        from latentpriv.inversion.perceptual import LPIPS_TAPS, _lpips_from_features

        dists, pooled = [], []
        tap = LPIPS_TAPS.index(VGG_FEATURE_TAP)
        with torch.no_grad():
            for c, i in enumerate(range(0, private.shape[0], RENDER_BATCH)):
                f = self._taps(private[i:i + RENDER_BATCH])
                pooled.append(f[tap].mean(dim=(2, 3)).double().cpu().numpy())
                if lpips:
                    o = self._original_taps(c)
                    dists.append(_lpips_from_features(f, o, self.networks.lpips_lin).double().cpu().numpy())
        return (np.concatenate(dists) if lpips else None), np.concatenate(pooled)


# ------------------------------------------------------------------------------------- the attack


def _bound_for(record: dict, majority: float) -> tuple[float | None, dict]:
    """The coordinate adversary's bound from a release record: the coordinates' (epsilon, delta)."""
    g = record.get("guarantee") or {}
    coord = g.get("coordinates") or {}
    eps = coord.get("epsilon", g.get("epsilon"))
    delta = coord.get("delta", g.get("delta")) or 0.0
    if g.get("type") == "none" or eps is None:
        return None, {"epsilon": None, "delta": None, "type": "none"}
    return accuracy_bound(float(eps), float(delta), majority=majority), {
        "epsilon": float(eps), "delta": float(delta), "type": coord.get("type", g.get("type"))}


def run_attack(data: AttackData, *, epsilons: Sequence[float], release: Release, render: Render,
               train_release: Release | None = None, networks: Any = None, faces: bool = True,
               seed: int = 0, progress: Callable[..., Any] | None = None, face_workers: int = 1) -> dict[str, Any]:
    """Release every test face at every epsilon, render, and run the adversaries (module docstring).

    The phases: check the inputs; label the originals and measure their renders (:func:`_observe_originals`);
    derive the perceived labels and choose the image adversary's features; then per epsilon release, render
    and measure (:func:`_observe_release`) and run the adversaries on what was observed
    (:func:`_attack_attribute`).

    Args:
        data: test and training faces, directions, centres, names and the release's split basis.
        epsilons: the privacy budgets to attack (> 0), one release of every face each.
        release: the release of the test faces (e.g. :func:`latentpriv.privatize` with the ledger around it).
        train_release: the adversaries' own simulation of the release on the training faces (the mechanism
            is public); default ``release``. Never the ledger: nothing of it is published.
        render: latents -> RGB ``uint8 [n, H, W, 3]``.
        networks: :class:`~latentpriv.inversion.perceptual.PerceptualNetworks` for LPIPS and the VGG image
            features, or None (those parts are skipped, and say so).
        faces: use the ``face`` extra (dlib) for the perceived label, landmark features and identity; False
            or a missing extra skips those parts and says so in ``skipped``.
        seed: seeds the classifiers (scikit-learn's solvers).
        progress: a tqdm-like factory ``progress(total=..., desc=...)`` for bars; None: no bars.
        face_workers: processes for the dlib analysis (it uses one core each).

    Returns:
        JSON-able ``{"attributes", "num", "num_train", "image_features", "skipped", "results": [...],
        "releases": [...]}`` with one result per (epsilon, attribute):
        ``{"epsilon", "attribute", "bound", "guarantee", "label_balance", "adversaries": {name: {"accuracy",
        "ci", "n", "perceived"?}}, "identity": {...}, "lpips_median"}`` (docs/attack.md).
    """
    bar_factory = progress or no_bar
    train_release = train_release or release
    eps_list, dirs, centers = _check_inputs(data, epsilons)
    names = list(data.attributes)
    skipped: dict[str, str] = {}
    use_faces = _faces_available(faces, skipped)
    if networks is None:
        skipped["lpips"] = "no LPIPS/VGG networks given: no lpips_median (and no VGG image features)"

    # labels of the originals: y_i = [a_i > c_i] (the protected coordinate's side)
    y_test = _coords(data.test, dirs) > centers[None, :]
    y_train = _coords(data.train, dirs) > centers[None, :]
    fa = _Faces(use_faces, face_workers)
    try:
        orig = _observe_originals(data, render, fa, networks, bar_factory)
        perceived = _perceived_labels(names, orig, skipped) if use_faces else {}
        image_features = _image_features(use_faces, orig, skipped)
        results: list[dict[str, Any]] = []
        releases: list[dict[str, Any]] = []
        for eps in eps_list:
            obs = _observe_release(data, eps, release, train_release, render, fa, orig, image_features, bar_factory)
            releases.append({"epsilon": eps, **{key: obs.record.get(key) for key in
                                                ("mechanism", "spend", "split", "for_release", "sampler",
                                                 "guarantee")}})
            identity = _identity_result(use_faces, orig, obs, skipped)
            lpips_median = float(np.median(obs.lpips)) if obs.lpips is not None else None
            features = _adversary_features(data, dirs, obs, image_features)
            for j, name in enumerate(names):
                adv, bound, guarantee = _attack_attribute(j, features, y_train[:, j], y_test[:, j],
                                                          perceived.get(j), obs.record, seed, skipped.get("image"))
                results.append({
                    "epsilon": eps,
                    "attribute": name,
                    "bound": bound,
                    "guarantee": guarantee,
                    "label_balance": float(y_test[:, j].mean()),
                    "adversaries": adv,
                    "identity": identity,
                    "lpips_median": lpips_median,
                })
                log.info("epsilon %g %s: coordinate %.3f (bound %s), residual %.3f, image %s", eps, name,
                         adv["coordinate"]["accuracy"], "none" if bound is None else f"{bound:.3f}",
                         adv["residual"]["accuracy"], adv["image"]["accuracy"])
    finally:
        fa.close()
    return {
        "attributes": names,
        "num": int(data.test.shape[0]),
        "num_train": int(data.train.shape[0]),
        "image_features": image_features,
        "faces_found_original": (float(np.isfinite(orig.emb_test).all(axis=1).mean()) if use_faces else None),
        "skipped": skipped,
        "results": results,
        "releases": releases,
    }


# ------------------------------------------------------------------------------------- the phases


def _check_inputs(data: AttackData, epsilons: Sequence[float]) -> tuple[list[float], np.ndarray, np.ndarray]:
    """The epsilons as floats, the directions ``float64 [k, D]`` and the centres ``[k]``; raises on bad input."""
    from latentpriv.privacy.accounting import check_epsilons

    eps_list = check_epsilons(epsilons)
    dirs = np.asarray(data.directions, dtype=np.float64)
    centers = np.broadcast_to(np.asarray(data.centers, dtype=np.float64), (dirs.shape[0],))
    n_test, n_train = int(data.test.shape[0]), int(data.train.shape[0])
    if n_test < 2 or n_train < 2:
        raise InputError(f"need at least 2 test and 2 training faces, got {n_test} and {n_train}")
    return eps_list, dirs, centers


def _faces_available(faces: bool, skipped: dict[str, str]) -> bool:
    """Whether the dlib analysis runs; says why not in ``skipped``."""
    if not faces:
        skipped["faces"] = "faces disabled: no identity numbers, no perceived label"
        return False
    from latentpriv.faces import INSTALL_HINT, available

    if available():
        return True
    skipped["faces"] = (f"face extra not installed ({INSTALL_HINT}): no identity numbers, no perceived "
                        "label, image adversary on VGG features")
    return False


@dataclass
class _Originals:
    """What is measured once on the original renders: landmark scores ``[N, 4]`` (test, train), the test
    faces' embeddings ``[N, 128]`` (None without faces) and the VGG taps for LPIPS (None without networks)."""

    lm_test: np.ndarray | None
    lm_train: np.ndarray | None
    emb_test: np.ndarray | None
    perceptual: _Perceptual | None


def _observe_originals(data: AttackData, render: Render, fa: _Faces, networks: Any, bar_factory) -> _Originals:
    """Render the test and training originals, analyse them (scores + test embeddings), keep VGG taps."""
    n_test, n_train = int(data.test.shape[0]), int(data.train.shape[0])
    bar = bar_factory(total=2 * (n_test + n_train), desc="originals: render and analyse", unit="img")
    img_test = _render_all(render, data.test, bar)
    img_train = _render_all(render, data.train, bar)
    lm_test = lm_train = emb_test = None
    if fa.enabled:
        lm_test, emb_test = fa.analyse(img_test, embed=True, bar=bar)
        lm_train, _ = fa.analyse(img_train, embed=False, bar=bar)
    perc = _Perceptual(networks, img_test) if networks is not None else None
    bar.close()
    return _Originals(lm_test, lm_train, emb_test, perc)


def _perceived_labels(names: Sequence[str], orig: _Originals,
                      skipped: dict[str, str]) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per attribute index with a landmark score: ``(found_test, label_test, found_train, label_train)``, the
    label being the original render's score above its set's median."""
    from latentpriv.evaluate.metrics import ATTRIBUTE_SCORE
    from latentpriv.faces.attributes import ATTRIBUTES as LM_NAMES

    perceived = {}
    for j, name in enumerate(names):
        score = ATTRIBUTE_SCORE.get(name)
        if score is None:
            continue
        col = LM_NAMES.index(score)
        s_te, s_tr = orig.lm_test[:, col], orig.lm_train[:, col]
        ok_te, ok_tr = np.isfinite(s_te), np.isfinite(s_tr)
        if ok_te.sum() < 2 or ok_tr.sum() < 2:
            skipped[f"perceived_{name}"] = "too few faces found in the original renders"
            continue
        perceived[j] = (ok_te, s_te > np.median(s_te[ok_te]), ok_tr, s_tr > np.median(s_tr[ok_tr]))
    return perceived


def _image_features(use_faces: bool, orig: _Originals, skipped: dict[str, str]) -> str | None:
    """The image adversary's features: ``"landmarks"`` when faces are found in enough training renders, else
    ``"vgg16_relu5_3"`` with networks, else None (no image adversary; ``skipped`` says why)."""
    if use_faces and np.isfinite(orig.lm_train).all(axis=1).mean() >= MIN_FACE_RATE:
        return "landmarks"
    if orig.perceptual is not None:
        if use_faces:
            skipped["image_landmarks"] = (f"faces found in fewer than {MIN_FACE_RATE:.0%} of the training renders: "
                                          "image adversary on VGG features")
        return "vgg16_relu5_3"
    skipped["image"] = "neither landmark features (face extra / faces) nor VGG networks: no image adversary"
    return None


@dataclass
class _Observation:
    """What one epsilon's releases show: the released latents (test, train), the test release's record, and
    the private renders' landmark scores, embeddings, LPIPS and VGG features (None where not measured)."""

    out_test: np.ndarray
    out_train: np.ndarray
    record: dict
    lm_priv: np.ndarray | None = None
    emb_priv: np.ndarray | None = None
    lm_priv_train: np.ndarray | None = None
    lpips: np.ndarray | None = None
    vgg_test: np.ndarray | None = None
    vgg_train: np.ndarray | None = None


def _observe_release(data: AttackData, eps: float, release: Release, train_release: Release, render: Render,
                     fa: _Faces, orig: _Originals, image_features: str | None, bar_factory) -> _Observation:
    """Release the test and training faces at ``eps``, render both and measure the renders."""
    n_test, n_train = int(data.test.shape[0]), int(data.train.shape[0])
    bar = bar_factory(total=2 * n_test + 2 * n_train, desc=f"epsilon {eps:g}: release, render, attack", unit="img")
    out_test, rec_test = release(data.test, eps)
    out_train, _ = train_release(data.train, eps)
    obs = _Observation(out_test, out_train, rec_test)
    img_priv = _render_all(render, out_test, bar)
    img_priv_train = _render_all(render, out_train, bar)
    if fa.enabled:
        obs.lm_priv, obs.emb_priv = fa.analyse(img_priv, embed=True, bar=bar)
        if image_features == "landmarks":
            obs.lm_priv_train, _ = fa.analyse(img_priv_train, embed=False, bar=bar)
    if orig.perceptual is not None:
        obs.lpips, obs.vgg_test = orig.perceptual.measure(img_priv, lpips=True)
        if image_features == "vgg16_relu5_3":
            obs.vgg_train = orig.perceptual.measure(img_priv_train, lpips=False)[1]
    bar.close()
    return obs


def _identity_result(use_faces: bool, orig: _Originals, obs: _Observation, skipped: dict[str, str]) -> dict:
    """:func:`_identity` of the private renders, or the reason there are no identity numbers."""
    if not use_faces:
        return {"same_person_rate": None, "distance_median": None, "reid_top1": None, "skipped": skipped["faces"]}
    identity = _identity(orig.emb_test, obs.emb_priv)
    if identity["pairs_with_faces"] == 0:
        skipped["identity"] = "dlib found no face pair (original and private render): no identity numbers"
        identity["skipped"] = skipped["identity"]
    return identity


@dataclass
class _Features:
    """The adversaries' inputs for one epsilon, ``(train, test)`` each: released coordinates ``[n, k]``,
    residuals ``[n, D]`` and image features ``[n, F]`` (None: no image adversary)."""

    coords: tuple[np.ndarray, np.ndarray]
    residual: tuple[np.ndarray, np.ndarray]
    image: tuple[np.ndarray, np.ndarray] | None


def _adversary_features(data: AttackData, dirs: np.ndarray, obs: _Observation,
                        image_features: str | None) -> _Features:
    coords = (_coords(obs.out_train, dirs), _coords(obs.out_test, dirs))
    residual = (_residual(obs.out_train, dirs, data.split_basis), _residual(obs.out_test, dirs, data.split_basis))
    image = None
    if image_features == "landmarks":
        fill = np.nanmean(obs.lm_priv_train, axis=0)
        fill = np.where(np.isfinite(fill), fill, 0.0)
        image = (_impute(obs.lm_priv_train, fill), _impute(obs.lm_priv, fill))
    elif image_features is not None:
        image = (obs.vgg_train, obs.vgg_test)
    return _Features(coords, residual, image)


def _attack_attribute(j: int, f: _Features, y_train: np.ndarray, y_test: np.ndarray, perceived, record: dict,
                      seed: int, image_skipped: str | None) -> tuple[dict[str, Any], float | None, dict]:
    """The three adversaries on attribute ``j`` (latent label, and the perceived one when given); returns
    ``(adversaries, bound, guarantee)``."""
    majority = max(float(y_test.mean()), 1.0 - float(y_test.mean()))
    bound, guarantee = _bound_for(record, majority)

    def attack(pair, kind: str, labels_train, labels_test, rows_train=None, rows_test=None):
        xtr = pair[0] if rows_train is None else pair[0][rows_train]
        xte = pair[1] if rows_test is None else pair[1][rows_test]
        if kind == "threshold":
            t, upper = fit_threshold(xtr, labels_train)
            return _score(_threshold_predict(xte, t, upper), labels_test)
        return _score(_logistic(xtr, labels_train, seed)(xte), labels_test)

    coord = (f.coords[0][:, j], f.coords[1][:, j])
    adv: dict[str, Any] = {
        "coordinate": attack(coord, "threshold", y_train, y_test),
        "residual": attack(f.residual, "logistic", y_train, y_test),
    }
    if f.image is not None:
        adv["image"] = attack(f.image, "logistic", y_train, y_test)
    else:
        adv["image"] = {"accuracy": None, "ci": None, "n": 0, "skipped": image_skipped}
    if perceived is not None:
        ok_te, p_te, ok_tr, p_tr = perceived
        labels = (p_tr[ok_tr], p_te[ok_te], ok_tr, ok_te)
        adv["coordinate"]["perceived"] = attack(coord, "threshold", *labels)
        adv["residual"]["perceived"] = attack(f.residual, "logistic", *labels)
        if f.image is not None:
            adv["image"]["perceived"] = attack(f.image, "logistic", *labels)
    return adv, bound, guarantee


def _identity(orig: np.ndarray, priv: np.ndarray) -> dict[str, Any]:
    """Identity retention of private embeddings ``[N, 128]`` against the original ones ``[N, 128]`` (NaN rows:
    no face found).

    ``same_person_rate``: share of the pairs where both faces are found whose distance is below dlib's
    threshold; ``reid_top1``: share of the private faces (with their original found) whose nearest original
    among all found originals is their own. Both over the faces found, with the counts beside them: a face the
    detector misses is neither re-identified nor counted as protected.
    """
    from latentpriv.faces.identity import SAME_PERSON_THRESHOLD, identity_distance, same_person

    dist = identity_distance(orig, priv)
    ok = np.isfinite(dist)
    found_orig = np.isfinite(orig).all(axis=1)
    n_pairs = int(ok.sum())
    same = int(same_person(dist[ok]).sum())
    reid = 0
    gallery = orig[found_orig]
    index = np.flatnonzero(found_orig)
    for i in np.flatnonzero(ok):
        d = np.linalg.norm(gallery - priv[i][None, :], axis=1)
        reid += int(index[int(np.argmin(d))] == i)
    return {
        "same_person_rate": same / n_pairs if n_pairs else None,
        "same_person_ci": list(accuracy_interval(same, n_pairs)),
        "distance_median": float(np.median(dist[ok])) if n_pairs else None,
        "reid_top1": reid / n_pairs if n_pairs else None,
        "reid_top1_ci": list(accuracy_interval(reid, n_pairs)),
        "reid_chance": 1.0 / max(1, int(found_orig.sum())),
        "pairs_with_faces": n_pairs,
        "faces_found_private": float(np.isfinite(priv).all(axis=1).mean()),
        "threshold": SAME_PERSON_THRESHOLD,
    }


# ------------------------------------------------------------------------------------- outputs


def csv_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat row per (epsilon, attribute) of an attack result, for ``attack.csv``."""
    rows = []
    for r in result["results"]:
        row: dict[str, Any] = {"epsilon": r["epsilon"], "attribute": r["attribute"], "bound": r["bound"]}
        for name in ADVERSARIES:
            a = r["adversaries"].get(name) or {}
            ci = a.get("ci") or [None, None]
            row.update({f"{name}_accuracy": a.get("accuracy"), f"{name}_ci_lo": ci[0], f"{name}_ci_hi": ci[1]})
            p = a.get("perceived")
            if p:
                row.update({f"{name}_perceived_accuracy": p["accuracy"], f"{name}_perceived_ci_lo": p["ci"][0],
                            f"{name}_perceived_ci_hi": p["ci"][1]})
        ident = r["identity"]
        row.update({"same_person_rate": ident.get("same_person_rate"), "distance_median": ident.get("distance_median"),
                    "reid_top1": ident.get("reid_top1"), "lpips_median": r["lpips_median"]})
        rows.append(row)
    return rows


def attack_figure(result: dict[str, Any]) -> bytes:
    """PNG bytes of the attack figure: accuracy vs epsilon per adversary and attribute with 95 % intervals
    and the bound curve (left), identity retention vs epsilon (right). Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from latentpriv.faces.identity import SAME_PERSON_THRESHOLD

    res = result["results"]
    eps = sorted({r["epsilon"] for r in res})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    styles = {"coordinate": "o-", "residual": "s--", "image": "^:"}
    for name in result["attributes"]:
        rows = sorted((r for r in res if r["attribute"] == name), key=lambda r: r["epsilon"])
        for adv, style in styles.items():
            pts = [(r["epsilon"], r["adversaries"][adv]) for r in rows
                   if r["adversaries"].get(adv, {}).get("accuracy") is not None]
            if not pts:
                continue
            x = np.array([e for e, _ in pts])
            y = np.array([a["accuracy"] for _, a in pts])
            lo = np.array([a["ci"][0] for _, a in pts])
            hi = np.array([a["ci"][1] for _, a in pts])
            label = adv if len(result["attributes"]) == 1 else f"{adv} ({name})"
            ax.errorbar(x, y, yerr=[y - lo, hi - y], fmt=style, capsize=3, label=label)
    # the bound curve, dense in epsilon (delta and balance as in the first result)
    b0 = next((r for r in res if r["bound"] is not None), None)
    if b0 is not None:
        grid = np.geomspace(min(eps), max(eps), 100) if len(eps) > 1 else np.array(eps)
        delta = b0["guarantee"]["delta"] or 0.0
        maj = max(b0["label_balance"], 1 - b0["label_balance"])
        scale = b0["guarantee"]["epsilon"] / b0["epsilon"]  # the coordinates' epsilon per unit of --epsilons
        ax.plot(grid, [accuracy_bound(e * scale, delta, majority=maj) for e in grid], "k-", linewidth=1.5,
                label="DP bound (coordinate)")
    ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xscale("log")
    ax.set_xticks(eps, [f"{e:g}" for e in eps])
    ax.minorticks_off()
    ax.set_xlabel("epsilon")
    ax.set_ylabel("accuracy on the protected label (95 % CI)")
    ax.set_ylim(0.4, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    ax = axes[1]
    first = result["attributes"][0]
    rows = sorted((r for r in res if r["attribute"] == first), key=lambda r: r["epsilon"])
    plotted = False
    for key, label in (("same_person_rate", f"same person (dlib < {SAME_PERSON_THRESHOLD:g})"), ("reid_top1", "top-1 re-identification")):
        pts = [(r["epsilon"], r["identity"].get(key)) for r in rows if r["identity"].get(key) is not None]
        if pts:
            ax.plot([e for e, _ in pts], [v for _, v in pts], "o-", label=label)
            plotted = True
    if not plotted:
        why = result.get("skipped", {})
        why = why.get("faces") or why.get("identity") or "no faces"
        ax.text(0.5, 0.5, "identity not measured:\n" + "\n".join(textwrap.wrap(str(why), 50)),
                ha="center", va="center", transform=ax.transAxes, fontsize=8)
        ax.set_xlim(min(eps) / 1.2, max(eps) * 1.2)
    ax.set_xscale("log")
    ax.set_xticks(eps, [f"{e:g}" for e in eps])
    ax.minorticks_off()
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("epsilon")
    ax.set_ylabel("identity retention")
    ax.grid(True, alpha=0.3)
    if plotted:
        ax.legend(fontsize=8)
    fig.suptitle(f"{result.get('model', '')} {result.get('mechanism', '')} N={result['num']}", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()

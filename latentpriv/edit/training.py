"""InterFaceGAN's boundary training: a linear SVM separating high- from low-scoring latents.

This is ``interfacegan/utils/manipulator.py:train_boundary`` (spec section 7.3) made reproducible and
runnable on current NumPy (the original uses ``np.int`` and the unseeded global ``np.random.shuffle``):

1. Drop samples whose score is invalid (NaN/inf, e.g. a face the scorer could not find, or equal to an
   explicit ``invalid_value``).
2. Sort by score, descending. ``chosen = int(N * ratio)`` if ``0 < ratio <= 1`` else ``int(ratio)``,
   capped at ``N // 2``. The top ``chosen`` are positives (label 1), the bottom ``chosen`` negatives.
3. Shuffle each class with the caller's :class:`numpy.random.Generator` and split it:
   ``int(chosen * split_ratio)`` for training, the rest for validation.
4. Fit ``sklearn.svm.SVC(kernel="linear")`` (InterFaceGAN's choice, default ``C=1``) or ``LinearSVC``.
5. The boundary is the unit normal ``coef_ / ||coef_||`` as ``(1, D)`` float64, pointing to the
   high-score side (positive decision values = label 1). Editing uses the direction only, as upstream;
   the SVM's intercept is reported (:attr:`BoundaryTrainResult.intercept`) for evaluation.

The middle ``N - 2 * chosen`` samples, labelled by the threshold ``(max + min) / 2`` of the valid scores,
give InterFaceGAN's extra "remaining" accuracy (a sanity number only, not a validation set).

Everything here is pure: arrays (and a generator/scorer) in, results out; no files, no prints.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from latentpriv.errors import InputError
from latentpriv.io import npy_bytes  # the exact .npy bytes a record's sha256 refers to (re-exported)

if TYPE_CHECKING:
    from latentpriv.models.protocol import Generator

ClassifierKind = Literal["svc", "linearsvc"]

#: Score function: ``uint8 [N, H, W, 3]`` images -> ``{attribute: float array [N]}`` (NaN = invalid).
ScoreFn = Callable[[np.ndarray], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class BoundaryTrainResult:
    """What :func:`train_boundary` produced.

    ``boundary`` is ``(1, D)`` float64 with unit L2 norm, pointing toward higher scores. Accuracies are
    fractions in ``[0, 1]``; ``remaining_accuracy`` is None when no sample lies between the two classes.
    """

    boundary: np.ndarray
    train_accuracy: float
    val_accuracy: float
    remaining_accuracy: float | None
    num_samples: int          # rows given
    num_valid: int            # rows with a valid score
    chosen: int               # samples per class (positives == negatives)
    num_train: int            # per class
    num_val: int              # per class
    ratio: float
    split_ratio: float
    classifier: str
    C: float
    positive_min_score: float  # lowest score labelled positive
    negative_max_score: float  # highest score labelled negative
    #: the SVM's offset in the normalised frame: ``x @ boundary.T + intercept > 0`` predicts "high score"
    #: (kept for evaluation only; editing uses the direction alone, as InterFaceGAN does).
    intercept: float = 0.0
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        """JSON-ready summary (without the boundary array)."""
        return {
            "train_accuracy": self.train_accuracy, "val_accuracy": self.val_accuracy,
            "remaining_accuracy": self.remaining_accuracy, "num_samples": self.num_samples,
            "num_valid": self.num_valid, "num_invalid": self.num_samples - self.num_valid,
            "chosen_per_class": self.chosen, "train_per_class": self.num_train, "val_per_class": self.num_val,
            "ratio": self.ratio, "split_ratio": self.split_ratio, "classifier": self.classifier, "C": self.C,
            "positive_min_score": self.positive_min_score, "negative_max_score": self.negative_max_score,
            "intercept": self.intercept, **self.extra,
        }


def _num_chosen(n: int, ratio: float) -> int:
    if not np.isfinite(ratio) or ratio <= 0:
        raise InputError(f"ratio={ratio}: must be a fraction in (0, 1] or a count > 1")
    chosen = int(n * ratio) if ratio <= 1 else int(ratio)
    return min(chosen, n // 2)


def _check_inputs(latents: np.ndarray, scores: np.ndarray, *, rng: np.random.Generator, split_ratio: float,
                  classifier: str, C: float) -> tuple[np.ndarray, np.ndarray]:
    """Shapes, finiteness and parameter ranges; returns ``(latents [N, D], scores [N])``."""
    x = np.asarray(latents)
    y = np.asarray(scores)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.number):
        raise InputError(f"latents: shape {x.shape} dtype {x.dtype}, expected a real (N, D) array")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise InputError(f"scores: shape {np.asarray(scores).shape}, expected ({x.shape[0]},) or ({x.shape[0]}, 1) "
                         f"to match latents {x.shape}")
    if not np.isfinite(x).all():
        raise InputError("latents: contain NaN/inf values")
    if not 0 < split_ratio < 1:
        raise InputError(f"split_ratio={split_ratio}: must be in (0, 1)")
    if not C > 0:
        raise InputError(f"C={C}: must be > 0")
    if classifier not in ("svc", "linearsvc"):
        raise InputError(f"classifier={classifier!r}: choose 'svc' or 'linearsvc'")
    if not isinstance(rng, np.random.Generator):
        raise InputError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return x, y


@dataclass(frozen=True)
class _Split:
    """Steps 1-3: the valid samples sorted by score (descending) and the per-class train/validation sets."""

    x: np.ndarray         # [n, D] float64, valid samples, highest score first
    y: np.ndarray         # [n] float64 scores, descending
    num_samples: int
    chosen: int
    num_train: int
    num_val: int
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray


def _split(x: np.ndarray, y: np.ndarray, *, rng: np.random.Generator, ratio: float, split_ratio: float,
           invalid_value: float | None) -> _Split:
    """Drop invalid scores, take the top/bottom ``chosen`` as positives/negatives, shuffle and split each."""
    y = y.astype(np.float64)
    valid = np.isfinite(y)
    if invalid_value is not None:
        valid &= y != invalid_value
    x, y = x[valid].astype(np.float64), y[valid]
    n = int(y.shape[0])
    chosen = _num_chosen(n, ratio)
    num_train = int(chosen * split_ratio)
    num_val = chosen - num_train
    if num_train < 2 or num_val < 2:
        raise InputError(
            f"only {n} valid samples of {valid.size}: ratio={ratio} gives {chosen} per class ({num_train} train, "
            f"{num_val} validation); need at least 2 of each: sample more (--num) or raise --ratio"
        )
    if float(y.max()) == float(y.min()):
        raise InputError(f"all {n} valid scores equal {y[0]}; the attribute does not vary, nothing to separate")

    # Stable sort so that ties keep sample order (reproducible across platforms).
    order = np.argsort(-y, kind="stable")
    x, y = x[order], y[order]
    pos_x, neg_x = x[:chosen], x[-chosen:]
    pos_idx = rng.permutation(chosen)
    neg_idx = rng.permutation(chosen)
    pos_x, neg_x = pos_x[pos_idx], neg_x[neg_idx]
    return _Split(
        x=x, y=y, num_samples=int(valid.size), chosen=chosen, num_train=num_train, num_val=num_val,
        train_x=np.concatenate([pos_x[:num_train], neg_x[:num_train]]),
        train_y=np.concatenate([np.ones(num_train, np.int64), np.zeros(num_train, np.int64)]),
        val_x=np.concatenate([pos_x[num_train:], neg_x[num_train:]]),
        val_y=np.concatenate([np.ones(num_val, np.int64), np.zeros(num_val, np.int64)]),
    )


def _fit(s: _Split, *, rng: np.random.Generator, classifier: str, C: float):
    """Step 4: the fitted linear SVM (LinearSVC's ``random_state`` drawn from ``rng`` after the shuffles)."""
    from sklearn.svm import SVC, LinearSVC

    if classifier == "svc":
        clf = SVC(kernel="linear", C=C)
    else:
        clf = LinearSVC(C=C, random_state=int(rng.integers(2**31 - 1)), max_iter=20000)
    clf.fit(s.train_x, s.train_y)
    if list(clf.classes_) != [0, 1]:  # pragma: no cover - sklearn orders binary classes ascending
        raise RuntimeError(f"unexpected class order {clf.classes_}")
    return clf


def _remaining_accuracy(clf, s: _Split) -> float | None:
    """InterFaceGAN's sanity number on the middle samples, labelled by the mid-range threshold."""
    n = s.y.shape[0]
    if n - 2 * s.chosen <= 0:
        return None
    rem_x, rem_s = s.x[s.chosen:-s.chosen], s.y[s.chosen:-s.chosen]
    threshold = (float(s.y.max()) + float(s.y.min())) / 2
    return float(np.mean(clf.predict(rem_x) == (rem_s > threshold).astype(np.int64)))


def _unit_normal(clf, dim: int) -> tuple[np.ndarray, float]:
    """Step 5: ``(coef_ / ||coef_|| as (1, D) float64, intercept / ||coef_||)``."""
    coef = np.asarray(clf.coef_, dtype=np.float64).reshape(1, dim)
    norm = float(np.linalg.norm(coef))
    if not np.isfinite(norm) or norm == 0:
        raise InputError("the SVM found no direction (zero normal); the classes are not separable at all")
    return coef / norm, float(np.asarray(clf.intercept_, dtype=np.float64).reshape(-1)[0]) / norm


def train_boundary(latents: np.ndarray, scores: np.ndarray, *, rng: np.random.Generator, ratio: float = 0.1,
                   split_ratio: float = 0.7, invalid_value: float | None = None,
                   classifier: ClassifierKind = "svc", C: float = 1.0) -> BoundaryTrainResult:
    """Train a linear boundary on ``latents [N, D]`` and ``scores [N]`` (or ``[N, 1]``).

    Args:
        latents: ``[N, D]`` finite real codes (one latent space; W+ is not supported, as upstream).
        scores: ``[N]`` or ``[N, 1]`` attribute scores; NaN/inf (and ``invalid_value``, if given) mark
            invalid samples, which are dropped before anything else.
        rng: the only source of randomness (the per-class shuffles and LinearSVC's ``random_state``):
            the same generator state and inputs give the same boundary bytes.
        ratio: fraction (``0 < ratio <= 1``) or count (``> 1``) of samples per class taken from each end
            of the score ranking, capped at half the valid samples. InterFaceGAN's default was 0.02 for
            N = 500k samples; 0.1 suits the thousands of samples typical here.
        split_ratio: per-class fraction used for training (``0 < split_ratio < 1``); the rest validates.
        classifier: ``"svc"`` (``SVC(kernel="linear")``, InterFaceGAN) or ``"linearsvc"`` (faster for large N).
        C: SVM regularisation parameter (> 0).

    Returns:
        :class:`BoundaryTrainResult` with the unit normal ``(1, D)`` float64 and accuracies.

    Raises:
        InputError: shapes disagree, non-finite latents, bad ratios, too few valid samples per class
            (at least 2 each for training and validation), or all valid scores equal.
    """
    x, y = _check_inputs(latents, scores, rng=rng, split_ratio=split_ratio, classifier=classifier, C=C)
    s = _split(x, y, rng=rng, ratio=ratio, split_ratio=split_ratio, invalid_value=invalid_value)
    clf = _fit(s, rng=rng, classifier=classifier, C=C)
    boundary, intercept = _unit_normal(clf, s.x.shape[1])
    return BoundaryTrainResult(
        boundary=boundary, train_accuracy=float(np.mean(clf.predict(s.train_x) == s.train_y)),
        val_accuracy=float(np.mean(clf.predict(s.val_x) == s.val_y)), remaining_accuracy=_remaining_accuracy(clf, s),
        num_samples=s.num_samples, num_valid=int(s.y.shape[0]), chosen=s.chosen, num_train=s.num_train,
        num_val=s.num_val, ratio=float(ratio), split_ratio=float(split_ratio), classifier=classifier, C=float(C),
        positive_min_score=float(s.y[s.chosen - 1]), negative_max_score=float(s.y[-s.chosen]), intercept=intercept,
    )


def sample_and_score(G: Generator, score_fn: ScoreFn, num: int, *, generator: torch.Generator, batch_size: int = 64,
                     space: str | None = None,
                     progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Sample ``num`` latents from ``G``, render them and score the images.

    Latents are ``G.sample_z`` codes (Z space; mapped through ``G.mapping`` when ``space="w"``), rendered
    with ``G.synthesize`` under its defaults and converted with ``G.to_uint8``. ``generator`` alone
    determines the codes (drawn in one call, so the batch size does not change them).

    Returns:
        ``(latents [num, D] float32, {attribute: scores [num] float64})``; NaN marks an invalid score.
    """
    space = space or G.default_space
    if space not in ("z", "w") or space not in G.latent_spaces:
        raise InputError(f"space {space!r}: boundaries are trained in Z or W; model {G.name!r} has "
                         f"{', '.join(G.latent_spaces)}")
    if int(num) < 1:
        raise InputError(f"num={num}: need at least one sample")
    z = G.sample_z(int(num), generator)
    latents = []
    scores: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for start in range(0, int(num), batch_size):
            code = z[start:start + batch_size]
            if space == "w":
                code = G.mapping(code)
            images = G.to_uint8(G.synthesize(code, space=space))
            for key, val in score_fn(images).items():
                scores.setdefault(key, []).append(np.asarray(val, dtype=np.float64).reshape(-1))
            latents.append(code.detach().cpu().numpy().astype(np.float32))
            if progress is not None:
                progress(code.shape[0])
    return np.concatenate(latents), {k: np.concatenate(v) for k, v in scores.items()}


def boundary_record(result: BoundaryTrainResult, *, name: str, attribute: str, scorer: str, space: str,
                    model: str | None, model_info: dict | None, num: int | None, sampler_seed: int | None,
                    split_seed: int, latents_source: str | None = None, scores_source: str | None = None) -> dict:
    """The provenance record saved beside a trained boundary (``<name>.json``).

    Pure: every value comes from the arguments and the installed library versions, except ``date`` (UTC
    now). ``sha256`` is that of :func:`npy_bytes` of ``result.boundary``.
    """
    import hashlib
    import platform
    from datetime import datetime, timezone

    import sklearn

    from latentpriv import __version__

    versions = {"latentpriv": __version__, "python": platform.python_version(), "numpy": np.__version__,
                "torch": torch.__version__, "scikit-learn": sklearn.__version__}
    try:
        from importlib.metadata import version
        versions["dlib"] = version("dlib-bin")
    except Exception:  # noqa: BLE001 - the face extra is optional
        pass
    return {
        "name": name,
        "attribute": attribute,
        "space": space,
        "shape": list(result.boundary.shape),
        "dtype": str(result.boundary.dtype),
        "direction": f"unit normal pointing toward higher {attribute} scores",
        "model": model,
        # the weights file by name and sha256 only: a local path means nothing on another machine
        "model_info": None if model_info is None else {
            k: (Path(v).name if k == "weights" and v else v) for k, v in model_info.items()},
        "sampler": None if sampler_seed is None else {
            "seed": sampler_seed, "num": num,
            "how": "G.sample_z(num, torch.Generator('cpu').manual_seed(seed)), rendered with G.synthesize defaults",
        },
        "latents_file": latents_source,
        "scores_file": scores_source,
        "scorer": scorer,
        "split_seed": split_seed,
        "method": "InterFaceGAN train_boundary (spec 7.3): top/bottom ratio, per-class shuffle and split, "
                  "linear SVM, unit normal",
        "ratio": result.ratio,
        "accuracy": result.val_accuracy,
        "training": result.as_dict(),
        "sha256": hashlib.sha256(npy_bytes(result.boundary)).hexdigest(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions,
    }

"""``latentpriv boundary train``'s run: the training data (a model's samples scored with dlib, or the user's
latents and scores), :func:`latentpriv.edit.training.train_boundary`, and the boundary file with its
provenance record. The maths is in :mod:`latentpriv.edit.training`; this module finds the data and writes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latentpriv.errors import InputError
from latentpriv.io import no_bar

#: boundary/attribute name -> scorer key of latentpriv.faces.attributes.score_images
ATTRIBUTE_ALIASES = {"pose": "yaw"}


def write_boundary(path: Path, boundary: np.ndarray, record: dict) -> tuple[Path, Path]:
    """Write ``boundary`` to ``path`` (.npy, atomically, exactly :func:`latentpriv.edit.training.npy_bytes`)
    and ``record`` beside it as ``<stem>.json``. Returns both paths."""
    from latentpriv.edit.training import npy_bytes
    from latentpriv.io import atomic_write, write_json

    path = Path(path)
    json_path = path.with_suffix(".json")
    with atomic_write(path) as fh:
        fh.write(npy_bytes(boundary))
    write_json(json_path, record)
    return path, json_path


def scorer_for(attribute: str) -> tuple[str, str]:
    """``(score_key, description)`` of the landmark scorer behind ``attribute`` (``pose`` means ``yaw``)."""
    from latentpriv.faces.attributes import ATTRIBUTES

    key = ATTRIBUTE_ALIASES.get(attribute, attribute)
    if key not in ATTRIBUTES:
        raise InputError(
            f"--attr {attribute}: no scorer for it; scorers: {', '.join(ATTRIBUTES)} (and 'pose' = yaw); "
            "for other attributes pass --latents and --scores"
        )
    return key, f"latentpriv.faces.attributes.score_images['{key}'] (dlib 68-point landmarks)"


@dataclass(frozen=True)
class TrainingData:
    """Latents ``[N, D]`` and their scores ``[N]`` (NaN = invalid), with where they came from."""

    latents: np.ndarray
    scores: np.ndarray
    scorer: str
    space: str
    num: int
    model: str | None = None
    model_info: dict | None = None
    sampler_seed: int | None = None
    latents_source: str | None = None
    scores_source: str | None = None


def data_from_files(latents_file: Path, scores_file: Path, *, model: str | None, space: str | None) -> TrainingData:
    """The user's latents (``.npy [N, D]``) and scores (``.npy [N]`` or ``[N, 1]``, numbers)."""
    from latentpriv.io import load_npy

    latents, scores = load_npy(latents_file), load_npy(scores_file)
    if latents.ndim != 2:
        raise InputError(f"{latents_file}: latents have shape {latents.shape}, expected (N, D)")
    if not np.issubdtype(scores.dtype, np.number):
        raise InputError(f"{scores_file}: scores have dtype {scores.dtype}, expected numbers")
    return TrainingData(latents, scores, f"scores file {scores_file}", space or "unknown", int(latents.shape[0]),
                        model=model, latents_source=str(latents_file), scores_source=str(scores_file))


def data_from_model(model: str, attribute: str, *, num: int, seed: int, space: str | None, batch_size: int,
                    device: str, save_samples: Path | None = None,
                    progress: Callable[..., Any] | None = None) -> TrainingData:
    """``num`` samples of ``model`` (torch generator seeded with ``seed``) scored by dlib's landmark scorer
    for ``attribute``; every score is saved with the latents under ``save_samples`` when given.
    ``progress``: a tqdm-like factory ``progress(total=, desc=, unit=)`` for the sampling bar."""
    import torch

    from latentpriv.devices import resolve_device
    from latentpriv.edit.training import sample_and_score
    from latentpriv.faces.attributes import score_images
    from latentpriv.faces.models import require_dlib
    from latentpriv.io import save_npy
    from latentpriv.models.registry import load_generator

    key, scorer = scorer_for(attribute)
    require_dlib()
    G = load_generator(model, device=resolve_device(device))
    space = space or G.default_space
    with (progress or no_bar)(total=num, desc=f"sampling and scoring {G.name} (seed {seed})", unit="img") as bar:
        latents, all_scores = sample_and_score(G, score_images, num, generator=torch.Generator().manual_seed(seed),
                                               batch_size=batch_size, space=space, progress=bar.update)
    if save_samples is not None:
        save_npy(save_samples / "latents.npy", latents)
        for k, v in all_scores.items():
            save_npy(save_samples / f"scores_{k}.npy", v)
    return TrainingData(latents, all_scores[key], scorer, space, num, model=G.name, model_info=G.info(),
                        sampler_seed=seed)


def train_to_file(data: TrainingData, output: Path, *, attribute: str, seed: int, ratio: float, split_ratio: float,
                  classifier: str, C: float) -> tuple[Any, Path, Path]:
    """Train the boundary on ``data`` (splits and shuffles seeded with ``seed``), write ``output`` and its
    ``.json`` record. Returns ``(BoundaryTrainResult, npy path, json path)``."""
    from latentpriv.edit.training import boundary_record, train_boundary

    result = train_boundary(data.latents, data.scores, rng=np.random.default_rng(seed), ratio=ratio,
                            split_ratio=split_ratio, classifier=classifier, C=C)
    record = boundary_record(result, name=output.stem, attribute=attribute, scorer=data.scorer, space=data.space,
                             model=data.model, model_info=data.model_info, num=data.num,
                             sampler_seed=data.sampler_seed, split_seed=seed, latents_source=data.latents_source,
                             scores_source=data.scores_source)
    npy, js = write_boundary(output, result.boundary, record)
    return result, npy, js


def train_command(output: Path, *, attribute: str, model: str | None = None, latents_file: Path | None = None,
                  scores_file: Path | None = None, num: int = 2000, seed: int = 0, space: str | None = None,
                  batch_size: int = 64, device: str = "auto", save_samples: Path | None = None,
                  progress: Callable[..., Any] | None = None, overwrite: bool = False,
                  **training: Any) -> tuple[Any, Path, Path]:
    """``boundary train``: the outputs checked (a ``.npy`` boundary, its ``.json`` record and ``save_samples``'s
    latents follow the overwrite rule, never an input), the data (:func:`data_from_files` when ``latents_file``
    is given, else :func:`data_from_model`), then :func:`train_to_file` with ``training`` (ratio,
    split_ratio, classifier, C). Returns ``(BoundaryTrainResult, npy path, json path)``."""
    from latentpriv.outputs import check_outputs

    if output.suffix != ".npy":
        raise InputError(f"-o {output}: the boundary file must end in .npy")
    if (latents_file is None) != (scores_file is None):
        raise InputError("--latents and --scores go together; give both or neither")
    inputs = [p for p in (latents_file, scores_file) if p is not None]
    check_outputs([output, output.with_suffix(".json")], overwrite=overwrite, inputs=inputs)
    if save_samples is not None:
        check_outputs([save_samples / "latents.npy"], overwrite=overwrite, inputs=inputs, option="--save-samples")
    if latents_file is not None:
        data = data_from_files(latents_file, scores_file, model=model, space=space)
    elif model is None:
        raise InputError("--model is required unless --latents/--scores are given (e.g. --model dcgan64)")
    else:
        data = data_from_model(model, attribute, num=num, seed=seed, space=space, batch_size=batch_size, device=device,
                               save_samples=save_samples, progress=progress)
    return train_to_file(data, output, attribute=attribute, seed=seed, **training)


def boundary_row(b: Any) -> dict:
    """A boundary description (dataclass or dict from :func:`latentpriv.edit.boundaries.list_boundaries`) as the
    plain dict ``boundary list --json`` prints."""
    d = dataclasses.asdict(b) if dataclasses.is_dataclass(b) else dict(b)
    return {
        "name": d.get("name"), "space": d.get("space"), "present": bool(d.get("present")),
        "path": str(d["path"]) if d.get("path") else None, "source": d.get("source"),
        "model": d.get("model"), "attribute": d.get("attribute"),
    }

"""Locating and loading the dlib face models of the optional ``face`` extra.

The extra is ``pip install -e ".[face]"``: ``dlib-bin`` (a prebuilt dlib wheel) and
``face_recognition_models==0.3.0`` (the model files, MIT-licensed code). ``import face_recognition_models``
itself fails on setuptools >= 81 (it imports ``pkg_resources``), so the ``.dat`` files are found by path,
through :func:`importlib.util.find_spec` and the distribution's file list, without importing it.
``$LATENTPRIV_FACE_MODELS`` (a folder holding the ``.dat`` files) overrides both.

Licence note: ``shape_predictor_68_face_landmarks.dat`` was trained on the iBUG 300-W data set, whose
licence excludes commercial use. Everything that needs 68-point landmarks (attribute scores, FFHQ
alignment) inherits that restriction; the identity embedding and the detectors do not.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
from pathlib import Path
from typing import Any

from latentpriv.errors import AssetError

INSTALL_HINT = 'pip install -e ".[face]" (i.e. dlib-bin and face_recognition_models==0.3.0)'

LICENSE_NOTE = (
    "The 68-point landmark model (dlib's shape_predictor_68_face_landmarks.dat) was trained on iBUG 300-W, "
    "whose licence excludes commercial use."
)

#: logical name -> file name in face_recognition_models/models/
MODEL_FILES: dict[str, str] = {
    "landmarks68": "shape_predictor_68_face_landmarks.dat",
    "landmarks5": "shape_predictor_5_face_landmarks.dat",
    "recognition": "dlib_face_recognition_resnet_model_v1.dat",
    "mmod": "mmod_human_face_detector.dat",
}

ENV_VAR = "LATENTPRIV_FACE_MODELS"
_DIST = "face_recognition_models"


class FaceExtraMissing(AssetError):
    """dlib or the face model files are not installed."""


def _dlib_importable() -> bool:
    return importlib.util.find_spec("dlib") is not None


def _candidate_dirs() -> list[Path]:
    """Folders that may hold the ``.dat`` files, most specific first."""
    dirs: list[Path] = []
    env = os.environ.get(ENV_VAR)
    if env:
        dirs.append(Path(env).expanduser())
    try:
        spec = importlib.util.find_spec(_DIST)
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        for loc in spec.submodule_search_locations or []:
            dirs.append(Path(loc) / "models")
    try:
        dist = importlib.metadata.distribution(_DIST)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        for f in dist.files or []:
            if f.name == MODEL_FILES["landmarks68"]:
                dirs.append(Path(str(dist.locate_file(f))).parent)
    return dirs


def model_path(name: str) -> Path:
    """Path of one dlib model file (``name`` is a key of :data:`MODEL_FILES`).

    Raises :class:`FaceExtraMissing` naming the places searched and the install command.
    """
    if name not in MODEL_FILES:
        raise KeyError(f"unknown face model {name!r}; known: {', '.join(MODEL_FILES)}")
    filename = MODEL_FILES[name]
    dirs = _candidate_dirs()
    for d in dirs:
        p = d / filename
        if p.is_file():
            return p
    where = ", ".join(str(d) for d in dirs) or f"no {_DIST} installation found"
    raise FaceExtraMissing(f"face model {filename} not found (searched: {where}); install the face extra: {INSTALL_HINT}")


def available() -> bool:
    """True when dlib imports and all face model files are present (nothing is loaded)."""
    if not _dlib_importable():
        return False
    try:
        for name in MODEL_FILES:
            model_path(name)
    except FaceExtraMissing:
        return False
    return True


def require_dlib() -> Any:
    """Import and return the ``dlib`` module, or raise :class:`FaceExtraMissing` with the install command."""
    try:
        import dlib
    except ImportError as exc:
        raise FaceExtraMissing(f"dlib is not installed ({exc}); install the face extra: {INSTALL_HINT}") from exc
    return dlib


# Loaded models are cached per process: the 68-point predictor is ~100 MB and takes ~1 s to read.
@functools.lru_cache(maxsize=1)
def frontal_detector() -> Any:
    """dlib's HOG + linear SVM frontal face detector (built into dlib, no file needed)."""
    return require_dlib().get_frontal_face_detector()


@functools.lru_cache(maxsize=1)
def shape_predictor_68() -> Any:
    """dlib 68-point landmark predictor (iBUG 300-W; non-commercial, see :data:`LICENSE_NOTE`)."""
    dlib = require_dlib()
    return dlib.shape_predictor(str(model_path("landmarks68")))


@functools.lru_cache(maxsize=1)
def face_recognizer() -> Any:
    """dlib's ResNet face recognition model (128-d embedding; same person below
    :data:`latentpriv.faces.identity.SAME_PERSON_THRESHOLD`)."""
    dlib = require_dlib()
    return dlib.face_recognition_model_v1(str(model_path("recognition")))


@functools.lru_cache(maxsize=1)
def cnn_detector() -> Any:
    """dlib's MMOD CNN face detector (slower on CPU, more robust to pose)."""
    dlib = require_dlib()
    return dlib.cnn_face_detection_model_v1(str(model_path("mmod")))

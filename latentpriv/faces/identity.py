"""Identity embeddings with dlib's face recognition ResNet (optional ``face`` extra).

dlib's ``dlib_face_recognition_resnet_model_v1`` maps an aligned 150x150 face chip to a 128-d vector;
two faces whose embeddings are closer than :data:`SAME_PERSON_THRESHOLD` (Euclidean) are the same
person by dlib's own criterion (99.38 % on LFW). The chip is cut from the face's landmarks by dlib; small
images are upsampled first exactly as for detection (:mod:`latentpriv.faces.landmarks`).

The embedding model itself is not covered by the iBUG 300-W restriction, but the 68-point landmarks used to
cut the chip are (non-commercial use).
"""

from __future__ import annotations

import numpy as np

from latentpriv.errors import InputError
from latentpriv.faces import models
from latentpriv.faces.landmarks import Face, check_image, largest_face, resize, working_scale

#: dlib's same-person threshold on the Euclidean distance of two embeddings; the one place it is written
SAME_PERSON_THRESHOLD = 0.6
EMBEDDING_DIM = 128


def embed_face(image: np.ndarray, face: Face, *, min_side: int = 256, num_jitters: int = 0) -> np.ndarray:
    """128-d embedding ``float64 [128]`` of ``face`` (detected in ``image``, RGB ``uint8 [H, W, 3]``).

    ``num_jitters`` > 0 averages over that many randomly jittered chips (dlib's own RNG, deterministic
    per call), slower and slightly more accurate.
    """
    dlib = models.require_dlib()
    image = check_image(image)
    scale = max(1.0, working_scale(image.shape, min_side=min_side, max_side=10**9))
    work = resize(image, scale)
    pts = face.landmarks * scale
    rect = dlib.rectangle(*(round(v * scale) for v in face.box))
    shape = dlib.full_object_detection(rect, [dlib.point(round(x), round(y)) for x, y in pts])
    desc = models.face_recognizer().compute_face_descriptor(work, shape, num_jitters)
    return np.asarray(desc, dtype=np.float64)


def embed(image: np.ndarray, *, name: str = "image", **kwargs) -> np.ndarray | None:
    """Embedding of the largest face in ``image``, or ``None`` when no face is found."""
    image = check_image(image, name=name)
    face = largest_face(image)
    return None if face is None else embed_face(image, face, **kwargs)


def embed_images(images: np.ndarray) -> np.ndarray:
    """Embeddings ``float64 [N, 128]`` of the largest face per image ``uint8 [N, H, W, 3]``; NaN rows where
    no face is found."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    out = np.full((images.shape[0], EMBEDDING_DIM), np.nan)
    for i, img in enumerate(images):
        e = embed(img, name=f"images[{i}]")
        if e is not None:
            out[i] = e
    return out


def identity_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance between embeddings ``[..., 128]`` (NaN when either is missing)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape[-1] != EMBEDDING_DIM or b.shape[-1] != EMBEDDING_DIM:
        raise InputError(f"identity embeddings must have {EMBEDDING_DIM} values, got {a.shape} and {b.shape}")
    return np.linalg.norm(a - b, axis=-1)


def same_person(distance: np.ndarray | float) -> np.ndarray:
    """``distance < SAME_PERSON_THRESHOLD`` (dlib's threshold); False where the distance is NaN."""
    d = np.asarray(distance, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return d < SAME_PERSON_THRESHOLD

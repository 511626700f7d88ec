"""Facial attribute scores from dlib's 68 landmarks (optional ``face`` extra).

Geometric, training-free scorers used to label samples for boundary training and to measure how much an
attribute really changed after a private edit. All scores are computed in a *face frame* so that they do
not depend on the face's position, in-plane rotation or size:

* origin: midpoint of the two eye centres (eye centre = mean of its 6 landmarks, 36-41 and 42-47),
* x axis: unit vector from the image-left eye centre to the image-right eye centre,
* y axis: x rotated by +90 degrees in image coordinates (points down the face, chin-wards).

With ``p[i]`` the landmark ``i`` (0-based iBUG indexing, see :mod:`latentpriv.faces.landmarks`),
``W = |p16 - p0|`` (face width at the jaw's top) and ``M = |p54 - p48|`` (mouth width, corner to corner):

``smile = M / W + lift / W``
    ``lift = y(mid) - (y(p48) + y(p54)) / 2`` with ``mid = (p62 + p66) / 2`` (centre of the inner lips):
    how far the lip corners sit above the mouth's centre line (positive when raised). Wider mouths and
    raised corners both score higher. Typical values: ~0.35-0.42 neutral, >0.45 smiling.
``mouth_open = mean(|p61 - p67|, |p62 - p66|, |p63 - p65|) / M``
    inner-lip gap relative to mouth width; ~0 closed, >0.3 wide open.
``yaw = (x(p30) - x(p0) - (x(p16) - x(p30))) / (x(p16) - x(p0))``
    horizontal position of the nose tip between the jaw's two ends, in [-1, 1]; 0 frontal, positive when
    the nose is nearer the image-right edge of the face (head turned towards the image's right).
``eyes_open = mean over both eyes of (|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|)``
    the eye aspect ratio of Soukupova & Cech (2016), with ``p1..p6`` the eye's six landmarks
    (36-41 and 42-47); ~0.25-0.35 open, < 0.2 closed.

A face that is not found (or whose geometry is degenerate) scores ``NaN`` in every attribute: invalid,
never zero. Callers must filter with ``np.isfinite``.

The 68-point model's training data (iBUG 300-W) excludes commercial use.
"""

from __future__ import annotations

import numpy as np

from latentpriv.errors import InputError

ATTRIBUTES: tuple[str, ...] = ("smile", "mouth_open", "yaw", "eyes_open")


def face_frame(landmarks: np.ndarray) -> np.ndarray:
    """Landmarks ``[..., 68, 2]`` expressed in the face frame described in the module docstring."""
    lm = np.asarray(landmarks, dtype=np.float64)
    eye_l = lm[..., 36:42, :].mean(axis=-2)
    eye_r = lm[..., 42:48, :].mean(axis=-2)
    origin = (eye_l + eye_r) / 2
    x_axis = eye_r - eye_l
    norm = np.linalg.norm(x_axis, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        x_axis = x_axis / norm
    y_axis = np.stack([-x_axis[..., 1], x_axis[..., 0]], axis=-1)
    rel = lm - origin[..., None, :]
    return np.stack([(rel * x_axis[..., None, :]).sum(-1), (rel * y_axis[..., None, :]).sum(-1)], axis=-1)


def score_landmarks(landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """Attribute scores for landmarks ``float [..., 68, 2]`` (rows of NaN give NaN scores).

    Returns a dict ``{name: float64 [...]}`` with the keys of :data:`ATTRIBUTES`; formulas in the module
    docstring.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape[-2:] != (68, 2):
        raise InputError(f"landmarks: expected shape [..., 68, 2], got {tuple(lm.shape)}")
    f = face_frame(lm)

    def dist(i: int, j: int) -> np.ndarray:
        return np.linalg.norm(f[..., i, :] - f[..., j, :], axis=-1)

    with np.errstate(invalid="ignore", divide="ignore"):
        face_w = dist(0, 16)
        mouth_w = dist(48, 54)
        mid_y = (f[..., 62, 1] + f[..., 66, 1]) / 2
        lift = mid_y - (f[..., 48, 1] + f[..., 54, 1]) / 2
        smile = mouth_w / face_w + lift / face_w
        gap = (dist(61, 67) + dist(62, 66) + dist(63, 65)) / 3
        mouth_open = gap / mouth_w
        x0, x16, x30 = f[..., 0, 0], f[..., 16, 0], f[..., 30, 0]
        yaw = ((x30 - x0) - (x16 - x30)) / (x16 - x0)
        ears = []
        for s in (36, 42):
            p = [f[..., s + k, :] for k in range(6)]
            vert = np.linalg.norm(p[1] - p[5], axis=-1) + np.linalg.norm(p[2] - p[4], axis=-1)
            ears.append(vert / (2 * np.linalg.norm(p[0] - p[3], axis=-1)))
        eyes_open = (ears[0] + ears[1]) / 2
    out = {"smile": smile, "mouth_open": mouth_open, "yaw": yaw, "eyes_open": eyes_open}
    # Degenerate geometry (coincident points) is invalid, not a score.
    return {k: np.where(np.isfinite(v), v, np.nan) for k, v in out.items()}


def score_images(images: np.ndarray, *, min_side: int = 256) -> dict[str, np.ndarray]:
    """Attribute scores of the largest face in each image.

    Args:
        images: RGB ``uint8 [N, H, W, 3]`` (or a single ``[H, W, 3]``, treated as N = 1), H and W >= 16.
            Small images are upsampled to ``min_side`` for detection (see
            :func:`latentpriv.faces.landmarks.detect_faces`).

    Returns:
        ``{name: float64 [N]}`` for each name in :data:`ATTRIBUTES`; ``NaN`` where no face was found.

    Raises:
        latentpriv.faces.models.FaceExtraMissing: the ``face`` extra is not installed.
        InputError: wrong dtype or shape.
    """
    from latentpriv.faces.landmarks import largest_face

    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise InputError(f"images: expected RGB uint8 [N, H, W, 3], got {images.dtype} {tuple(images.shape)}")
    lms = np.full((images.shape[0], 68, 2), np.nan)
    for i, img in enumerate(images):
        face = largest_face(img, min_side=min_side)
        if face is not None:
            lms[i] = face.landmarks
    return score_landmarks(lms)

"""Face detection and 68-point landmarks with dlib (optional ``face`` extra).

Detection uses dlib's HOG frontal face detector, which finds faces of roughly 80 px and larger. Small
images (the demo generator's faces are 64x64) are therefore upsampled (bicubic) so that their shorter side
is at least ``min_side`` pixels before detection, and large ones are downsampled to at most ``max_side``
for speed; landmarks are predicted on whichever of the original and the resized image is larger and are
always returned in the *original* image's pixel coordinates.

Landmark indexing (0-based, iBUG 300-W convention, "left"/"right" as seen in the image):
jaw 0-16, eyebrows 17-26, nose bridge 27-30 (30 = tip), nostrils 31-35, image-left eye 36-41,
image-right eye 42-47, outer lips 48-59 (48/54 = corners), inner lips 60-67.

The 68-point model's training data (iBUG 300-W) excludes commercial use; see
:data:`latentpriv.faces.models.LICENSE_NOTE`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from latentpriv.errors import InputError
from latentpriv.faces import models

#: HOG detector margins: when some face scores at least CONFIDENT_SCORE, detections below WEAK_SCORE are
#: dropped as likely false positives (e.g. textures on clothing, which can be larger than the real face).
#: Faces of the 64x64 demo generator often score only 0-0.5, so a lone weak detection is kept.
CONFIDENT_SCORE = 0.5
WEAK_SCORE = 0.25

#: Below this size (shorter side, pixels) an image cannot hold a detectable face even after upsampling.
MIN_IMAGE_SIDE = 16


@dataclass(frozen=True)
class Face:
    """One detected face.

    Attributes:
        box: ``(left, top, right, bottom)`` of the detector's rectangle, original image pixels.
        landmarks: ``float64 [68, 2]`` ``(x, y)`` in original image pixels (pixel centres at integers,
            dlib's convention).
        score: detector confidence (HOG SVM margin; higher is more confident).
    """

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float

    @property
    def area(self) -> float:
        left, top, right, bottom = self.box
        return max(0.0, right - left) * max(0.0, bottom - top)


def check_image(image: np.ndarray, *, name: str = "image") -> np.ndarray:
    """Validate an RGB ``uint8 [H, W, 3]`` image and return it C-contiguous."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"{name}: expected an RGB uint8 image [H, W, 3], got {image.dtype} {tuple(image.shape)}")
    h, w = image.shape[:2]
    if min(h, w) < MIN_IMAGE_SIDE:
        raise InputError(
            f"{name}: image is {w}x{h} px, too small to hold a detectable face "
            f"(need at least {MIN_IMAGE_SIDE} px on the shorter side)"
        )
    return np.ascontiguousarray(image)


def resize(image: np.ndarray, scale: float) -> np.ndarray:
    """Resize ``uint8 [H, W, 3]`` by ``scale`` (bicubic up, antialiased Lanczos down)."""
    from PIL import Image

    if scale == 1.0:
        return image
    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    method = Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.LANCZOS
    return np.asarray(Image.fromarray(image).resize(size, method))


def working_scale(shape: tuple[int, ...], *, min_side: int = 256, max_side: int = 1024) -> float:
    """Scale factor that brings the shorter side to >= ``min_side`` and the longer side to <= ``max_side``."""
    h, w = shape[:2]
    if min(h, w) < min_side:
        return min_side / min(h, w)
    if max(h, w) > max_side:
        return max_side / max(h, w)
    return 1.0


def detect_faces(image: np.ndarray, *, min_side: int = 256, max_side: int = 1024,
                 upsample_times: int = 0) -> list[Face]:
    """All faces in ``image``, largest first.

    Args:
        image: RGB ``uint8 [H, W, 3]``, H and W >= :data:`MIN_IMAGE_SIDE`.
        min_side, max_side: the detector runs on a copy resized so that its shorter side is at least
            ``min_side`` and its longer side at most ``max_side`` pixels (see the module docstring).
        upsample_times: dlib's own pyramid upsampling on top of that (each doubles the cost, finds
            faces half as large).

    Returns:
        A possibly empty list of :class:`Face`, sorted by box area, largest first. Detections with a
        margin below :data:`WEAK_SCORE` are dropped when another one reaches :data:`CONFIDENT_SCORE`.
    """
    image = check_image(image)
    dlib = models.require_dlib()
    detector = models.frontal_detector()
    predictor = models.shape_predictor_68()
    scale = working_scale(image.shape, min_side=min_side, max_side=max_side)
    work = resize(image, scale)
    rects, scores, _ = detector.run(work, upsample_times, 0.0)
    # Landmarks from the larger of the two images: upsampled for small inputs, original for large ones.
    lm_image, lm_scale = (work, scale) if scale >= 1.0 else (image, 1.0)
    faces = []
    for rect, score in zip(rects, scores, strict=True):
        r = dlib.rectangle(
            round(rect.left() / scale * lm_scale), round(rect.top() / scale * lm_scale),
            round(rect.right() / scale * lm_scale), round(rect.bottom() / scale * lm_scale),
        )
        shape = predictor(lm_image, r)
        pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], dtype=np.float64)
        pts = pts / lm_scale
        box = (rect.left() / scale, rect.top() / scale, rect.right() / scale, rect.bottom() / scale)
        faces.append(Face(box=box, landmarks=pts, score=float(score)))
    if faces and max(f.score for f in faces) >= CONFIDENT_SCORE:
        faces = [f for f in faces if f.score >= WEAK_SCORE]
    faces.sort(key=lambda f: f.area, reverse=True)
    return faces


def largest_face(image: np.ndarray, **kwargs) -> Face | None:
    """The largest face in ``image`` (see :func:`detect_faces`), or ``None`` when there is none."""
    faces = detect_faces(image, **kwargs)
    return faces[0] if faces else None

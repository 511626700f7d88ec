"""FFHQ face alignment (Karras et al. 2019), re-implemented from its published description.

The FFHQ data set was made by cropping every face with the same recipe, and StyleGAN FFHQ only
reconstructs faces cropped that way, so photos must be aligned before inversion. The recipe, from dlib's
68 landmarks (indices as in :mod:`latentpriv.faces.landmarks`):

1. ``eye_left``/``eye_right`` = mean of landmarks 36-41 / 42-47 (image-left / image-right eye),
   ``eye_avg`` their midpoint, ``eye_to_eye = eye_right - eye_left``;
   ``mouth_avg`` = midpoint of the mouth corners 48 and 54, ``eye_to_mouth = mouth_avg - eye_avg``.
2. Oriented square: ``x = eye_to_eye - flipud(eye_to_mouth) * [-1, 1]``, normalised, then scaled to
   ``max(|eye_to_eye| * 2.0, |eye_to_mouth| * 1.8)``; ``y = flipud(x) * [-1, 1]`` (x turned by 90 degrees);
   centre ``c = eye_avg + eye_to_mouth * 0.1``; ``quad = [c - x - y, c - x + y, c + x + y, c + x - y]``
   (top-left, bottom-left, bottom-right, top-right of the output), side ``qsize = 2 |x|``.
3. Shrink: if the quad is more than 4x the output size, downsample the photo (antialiased) by the integer
   factor ``floor(qsize / size / 2)``.
4. Crop to the quad's bounding box plus a border of ``max(round(0.1 qsize), 3)`` px.
5. Pad where the quad leaves the photo: reflect-pad by at least ``round(0.3 qsize)``, then blur the padded
   region (Gaussian, sigma ``0.02 qsize``) and blend it towards the image's median colour with a mask that
   grows with the distance from the original image, so that the border is smooth and uninformative.
6. Map the quad onto a square of ``4 * size`` px (bilinear, capped at 4096, FFHQ used 4096 for 1024) and
   downsample to ``size`` with an antialiasing Lanczos filter.

Consequently, in the output the eye midpoint lies at ``(size/2, size/2) - 0.1 * eye_to_mouth`` mapped by the
quad, i.e. :func:`expected_points` gives where any input point lands.

Uses the 68-point landmark model, trained on iBUG 300-W, whose licence excludes commercial use.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latentpriv.errors import InputError
from latentpriv.faces.landmarks import Face, check_image, detect_faces

log = logging.getLogger(__name__)

MAX_TRANSFORM = 4096


@dataclass(frozen=True)
class Alignment:
    """An aligned face and how it was made.

    Attributes:
        image: RGB ``uint8 [size, size, 3]``.
        quad: ``float64 [4, 2]`` the source quad in the input photo's pixel coordinates (top-left,
            bottom-left, bottom-right, top-right of the output).
        face: the detected :class:`~latentpriv.faces.landmarks.Face` that was aligned.
    """

    image: np.ndarray
    quad: np.ndarray
    face: Face


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """The FFHQ crop quad ``float64 [4, 2]`` for 68 landmarks ``[68, 2]`` (steps 1-2 of the recipe)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2) or not np.isfinite(lm).all():
        raise InputError(f"landmarks: expected 68 finite (x, y) points, got shape {lm.shape}")
    eye_left = lm[36:42].mean(axis=0)
    eye_right = lm[42:48].mean(axis=0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x = x / np.hypot(*x)
    x = x * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def expected_points(points: np.ndarray, quad: np.ndarray, size: int) -> np.ndarray:
    """Where input-photo points ``[K, 2]`` land in the ``size`` x ``size`` output for ``quad``.

    Output coordinates use the same convention as dlib's landmarks (pixel centres at integers).
    """
    quad = np.asarray(quad, dtype=np.float64)
    origin = quad[0]
    ex = quad[3] - quad[0]  # output x axis (left to right)
    ey = quad[1] - quad[0]  # output y axis (top to bottom)
    rel = np.asarray(points, dtype=np.float64) - origin
    u = rel @ ex / (ex @ ex)
    v = rel @ ey / (ey @ ey)
    # The quad is handed to PIL as quad + 0.5 (dlib's pixel-centre convention to PIL's pixel-corner one),
    # so fraction u of the quad lands at PIL coordinate u * size, i.e. pixel-centre coordinate u * size - 0.5.
    return np.stack([u * size - 0.5, v * size - 0.5], axis=-1)


def _warp(image: np.ndarray, quad: np.ndarray, size: int) -> np.ndarray:
    """Steps 3-6 of the recipe: shrink, crop, pad, quad transform, resample."""
    import scipy.ndimage
    from PIL import Image

    img = Image.fromarray(image)
    quad = quad.copy()
    qsize = float(np.hypot(*(quad[3] - quad[0])))

    shrink = int(np.floor(qsize / size * 0.5))
    if shrink > 1:
        rsize = (int(np.rint(img.size[0] / shrink)), int(np.rint(img.size[1] / shrink)))
        img = img.resize(rsize, Image.Resampling.LANCZOS)
        quad /= shrink
        qsize /= shrink

    border = max(int(np.rint(qsize * 0.1)), 3)
    crop = (int(np.floor(quad[:, 0].min())), int(np.floor(quad[:, 1].min())),
            int(np.ceil(quad[:, 0].max())), int(np.ceil(quad[:, 1].max())))
    crop = (max(crop[0] - border, 0), max(crop[1] - border, 0),
            min(crop[2] + border, img.size[0]), min(crop[3] + border, img.size[1]))
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        img = img.crop(crop)
        quad -= crop[0:2]

    pad = (int(np.floor(quad[:, 0].min())), int(np.floor(quad[:, 1].min())),
           int(np.ceil(quad[:, 0].max())), int(np.ceil(quad[:, 1].max())))
    pad = (max(-pad[0] + border, 0), max(-pad[1] + border, 0),
           max(pad[2] - img.size[0] + border, 0), max(pad[3] - img.size[1] + border, 0))
    if max(pad) > border - 4:
        pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
        arr = np.pad(np.float32(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")
        h, w, _ = arr.shape
        yy, xx, _ = np.ogrid[:h, :w, :1]
        with np.errstate(divide="ignore", invalid="ignore"):
            mask = np.maximum(
                1.0 - np.minimum(np.float32(xx) / pad[0], np.float32(w - 1 - xx) / pad[2]),
                1.0 - np.minimum(np.float32(yy) / pad[1], np.float32(h - 1 - yy) / pad[3]),
            )
        mask = np.nan_to_num(mask, nan=0.0, posinf=1.0, neginf=0.0)
        blur = qsize * 0.02
        arr += (scipy.ndimage.gaussian_filter(arr, [blur, blur, 0]) - arr) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
        arr += (np.median(arr, axis=(0, 1)) - arr) * np.clip(mask, 0.0, 1.0)
        img = Image.fromarray(np.uint8(np.clip(np.rint(arr), 0, 255)), "RGB")
        quad += pad[:2]

    transform_size = max(size, min(4 * size, MAX_TRANSFORM))
    img = img.transform((transform_size, transform_size), Image.Transform.QUAD, (quad + 0.5).flatten(),
                        Image.Resampling.BILINEAR)
    if size < transform_size:
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8)


def align_face(image: np.ndarray, face: Face, size: int = 1024) -> Alignment:
    """Align one already-detected face of ``image`` (RGB ``uint8 [H, W, 3]``) to ``size`` x ``size``."""
    if not isinstance(size, int | np.integer) or not 16 <= size <= 8192:
        raise InputError(f"size: {size!r} is not an integer in [16, 8192]; FFHQ StyleGAN uses 1024")
    image = check_image(image)
    quad = ffhq_quad(face.landmarks)
    return Alignment(image=_warp(image, quad, int(size)), quad=quad, face=face)


def align_faces(image: np.ndarray, size: int = 1024, **detect_kwargs) -> list[Alignment]:
    """Align every face found in ``image``, largest first (empty list when there is none)."""
    return [align_face(image, f, size) for f in detect_faces(image, **detect_kwargs)]


def align_image(image: np.ndarray, size: int = 1024, *, name: str = "image") -> np.ndarray:
    """FFHQ-align the largest face of ``image``.

    Args:
        image: RGB ``uint8 [H, W, 3]`` (e.g. from :func:`latentpriv.io.load_image`).
        size: output side in pixels (1024 for StyleGAN FFHQ, the generator's resolution in general).
        name: how to call the image in error messages (a file name).

    Returns:
        RGB ``uint8 [size, size, 3]``.

    Raises:
        InputError: no face found, or the image is too small.
        latentpriv.faces.models.FaceExtraMissing: the ``face`` extra is not installed.

    Logs a warning when several faces are present (the largest one is used).
    """
    image = check_image(image, name=name)
    faces = detect_faces(image)
    if not faces:
        h, w = image.shape[:2]
        raise InputError(
            f"{name}: no face found in the {w}x{h} image; use a photo with a frontal face at least ~40 px wide"
        )
    if len(faces) > 1:
        log.warning("%s: %d faces found; aligning the largest (use --all-faces for all of them)", name, len(faces))
    return align_face(image, faces[0], size).image


def face_paths(output: Path, count: int) -> list[Path]:
    """``latentpriv align --all-faces``'s files: ``NAME_0.png, NAME_1.png, ...`` beside ``output`` (its
    suffix, ``.png`` when it has none), largest face first."""
    return [output.with_name(f"{output.stem}_{i}{output.suffix or '.png'}") for i in range(count)]


def align_file(photo: Path, output: Path, *, size: int = 1024, all_faces: bool = False,
               overwrite: bool = False) -> list[Path]:
    """``latentpriv align``: FFHQ-align the largest face of the ``photo`` file (every face with ``all_faces``,
    one file each, :func:`face_paths`) and write it to ``output``; the paths written.

    The outputs follow the overwrite rule (never the photo) and are written as one set. Raises InputError
    (no face, unreadable photo, an output suffix that is no image format) and FaceExtraMissing.
    """
    from latentpriv.faces.models import require_dlib
    from latentpriv.io import atomic_write_files, image_bytes, image_format, load_image
    from latentpriv.outputs import check_outputs

    require_dlib()
    image = load_image(photo)
    if all_faces:
        aligned = align_faces(image, size)
        if not aligned:
            h, w = image.shape[:2]
            raise InputError(f"{photo}: no face found in the {w}x{h} image; use a photo with a frontal face")
        outputs, images = face_paths(output, len(aligned)), [a.image for a in aligned]
        for out in outputs:
            image_format(out, "-o")
        check_outputs(outputs, overwrite=overwrite, inputs=[photo])
    else:
        outputs = [output]
        image_format(output, "-o")  # a wrong suffix or an existing file fails before the alignment
        check_outputs(outputs, overwrite=overwrite, inputs=[photo])
        images = [align_image(image, size, name=str(photo))]
    atomic_write_files([(out, image_bytes(out, img)) for out, img in zip(outputs, images, strict=True)])
    return outputs

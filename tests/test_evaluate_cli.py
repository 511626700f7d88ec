"""``latentpriv evaluate``: compare mode (files / run directory), sweep core, plot."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from latentpriv.cli import cli
from latentpriv.faces import available
from latentpriv.io import load_image, save_image, save_npy

needs_faces = pytest.mark.skipif(
    not available(), reason='face extra not installed (pip install -e ".[face]"): dlib / face models missing'
)


@pytest.fixture(scope="module")
def face64() -> np.ndarray:
    """The astronaut's face cropped square and downsampled to 64x64 (like a dcgan64 render)."""
    import skimage.data
    from PIL import Image

    crop = skimage.data.astronaut()[40:220, 130:310]
    return np.asarray(Image.fromarray(crop).resize((64, 64), Image.Resampling.LANCZOS))


def _unit(dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(1, dim))
    return v / np.linalg.norm(v)


@needs_faces
def test_run_dir_known_pairs_and_a_bad_file(face64, tmp_path):
    run = tmp_path / "run"
    save_image(run / "original.png", face64)
    save_image(run / "recon.png", face64)
    save_image(run / "p_flip.png", np.ascontiguousarray(face64[:, ::-1]))
    (run / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    # latents beside renders; a boundary to read their coordinates along
    b = _unit(8, 0)
    save_npy(tmp_path / "b.npy", b)
    save_npy(run / "recon.npy", 2.0 * b)
    save_npy(run / "p_flip.npy", -0.5 * b + 0 * b)
    (run / "p_flip.json").write_text(json.dumps({"mechanism": "laplace", "epsilon": 1.5}))
    out_json, out_csv = tmp_path / "e.json", tmp_path / "e.csv"
    res = CliRunner().invoke(cli, ["evaluate", str(run), "--boundary", str(tmp_path / "b.npy"),
                                   "--json", str(out_json), "--csv", str(out_csv)])
    assert res.exit_code == 1, res.output  # the rest is evaluated and written, but the run fails
    assert "broken.png" in res.output and "1 of 3 input files could not be evaluated" in res.output
    data = json.loads(out_json.read_text())
    rows = {r["file"].split("/")[-1]: r for r in data["rows"]}
    assert data["errors"] == 1 and "not a readable image" in rows["broken.png"]["error"]
    assert data["rows"][0]["role"] == "reconstruction"
    recon, flip = rows["recon.png"], rows["p_flip.png"]
    assert recon["psnr"] == math.inf and recon["ssim"] == pytest.approx(1.0)
    assert recon["lpips"] == 0.0 and recon["identity_distance"] == 0.0 and recon["same_person"] is True
    assert recon["smile_change"] == 0.0
    assert 0 < flip["identity_distance"] < 0.6 and flip["same_person"] is True
    assert flip["psnr"] < 30 and flip["lpips"] > 0
    assert flip["epsilon"] == 1.5 and flip["mechanism"] == "laplace"
    assert recon["coord_b"] == pytest.approx(2.0) and flip["coord_b"] == pytest.approx(-0.5)
    assert data["original"]["face_found"] is True and 0.3 < data["original"]["smile"] < 0.8
    lines = out_csv.read_text().splitlines()
    assert lines[0].startswith("file,role") and len(lines) == 5
    assert ",inf," in lines[2]


@needs_faces
def test_explicit_files_resize_and_errors(face64, tmp_path):
    from PIL import Image

    big = np.asarray(Image.fromarray(face64).resize((128, 128), Image.Resampling.BICUBIC))
    save_image(tmp_path / "photo.png", big)
    save_image(tmp_path / "r.png", face64)
    runner = CliRunner()
    res = runner.invoke(cli, ["evaluate", "--original", str(tmp_path / "photo.png"), "--recon",
                              str(tmp_path / "r.png"), "--json", str(tmp_path / "o.json"), "--no-lpips"])
    assert res.exit_code == 0, res.output
    row = json.loads((tmp_path / "o.json").read_text())["rows"][0]
    assert row["compared_at"] == "64x64" and 25 < row["psnr"] < math.inf
    assert row["identity_distance"] < 0.6
    # one-line errors: no original, nothing to compare, missing original file, output over an input
    for args, msg in [([], "run directory or --original"),
                      (["--original", str(tmp_path / "photo.png")], "nothing to compare"),
                      (["--original", str(tmp_path / "nope.png"), "--recon", str(tmp_path / "r.png")], "no such file"),
                      (["--original", str(tmp_path / "photo.png"), "--recon", str(tmp_path / "r.png"), "--no-lpips",
                        "--csv", str(tmp_path / "r.png")], "refusing to overwrite")]:
        res = runner.invoke(cli, ["evaluate", *args])
        assert res.exit_code != 0 and msg in res.output, res.output
        assert "Traceback" not in res.output


def test_sweep_core_and_plot(face64, tmp_path):
    """privacy_utility_sweep on a stand-in renderer whose picture degrades with the coordinate's shift."""
    from latentpriv.evaluate.metrics import privacy_utility_sweep
    from latentpriv.evaluate.plots import sweep_figure
    from latentpriv.evaluate.report import write_csv

    dim = 6
    d = np.eye(dim)[:1]
    lat = np.random.default_rng(3).normal(size=(3, dim)) * 0.5

    def render(x: np.ndarray) -> np.ndarray:
        shift = np.abs(np.asarray(x)[:, 0] - lat[: len(x), 0])  # 0 for the originals
        grey = face64.mean(axis=2, keepdims=True)
        mix = np.clip(shift / 3.0, 0, 1)[:, None, None, None]
        return (face64 * (1 - mix) + grey * mix).round().astype(np.uint8)

    grid = dict(epsilons=[0.25, 1, 16], mechanisms=["laplace", "gaussian"], attributes=["smile"], seed=1, repeats=4)
    out = privacy_utility_sweep(render, lat, d, faces=False, **grid)
    assert len(out["rows"]) == 3 * 3 * 2 * 4 and len(out["summary"]) == 6
    again = privacy_utility_sweep(render, lat, d, faces=False, **grid)
    assert [r["coord_after_smile"] for r in again["rows"]] == [r["coord_after_smile"] for r in out["rows"]]
    for mech in ("laplace", "gaussian"):
        s = [x for x in out["summary"] if x["mechanism"] == mech]
        # more privacy (smaller epsilon) moves the coordinate more and costs picture fidelity
        assert s[0]["coord_abs_change_smile"] > s[2]["coord_abs_change_smile"]
        assert s[0]["psnr"] < s[2]["psnr"]
    if available():
        small = privacy_utility_sweep(render, lat[:2], d, epsilons=[0.1, 1000], mechanisms=["laplace"],
                                      attributes=["smile"], seed=2)
        lo, hi = small["summary"]
        assert lo["n_faces"] == hi["n_faces"] == 2 and hi["same_person_rate"] == 1.0
        assert hi["identity_distance"] < 0.05 and lo["identity_distance"] > hi["identity_distance"]
        assert small["originals"][0]["face_found"] and "smile_change" in small["rows"][0]
    for r in out["rows"]:
        assert abs(r["coord_after_smile"]) <= 3.0 + 1e-6  # released values stay in [c - B, c + B]
    png = tmp_path / "curve.png"
    png.write_bytes(sweep_figure(out["summary"], attribute="smile"))
    img = load_image(png)
    assert img.shape[0] > 200 and img.shape[1] > 400
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 3  # lines in several colours, not a blank canvas
    write_csv(tmp_path / "s.csv", out["rows"])
    assert (tmp_path / "s.csv").read_text().count("\n") == len(out["rows"]) + 1


def test_median_ci_order_statistics_and_identical_images():
    from latentpriv.evaluate.metrics import _summarise, median_ci

    assert median_ci(list(range(1, 21))) == (10.5, [6.0, 15.0])  # the textbook n = 20 interval, >= 95 %
    assert median_ci([3.0, 1.0, 2.0, None, float("nan")]) == (2.0, None)  # too few for a 95 % interval
    assert median_ci([]) == (None, None)
    # PSNR inf (a release identical to the original, e.g. randomized response): the median stays finite
    cell = [{"psnr": p, "ssim": 1.0, "coord_change_smile": 0.5} for p in [20.0, 21, 22, 23, 24, 25, math.inf]]
    s = _summarise(cell, "rr", 1.0, ["smile"], [], False, False, "pure-dp")
    assert s["psnr"] == 23.0 and s["psnr_identical"] == 1 and s["psnr_ci95"] == [20.0, math.inf]
    assert s["coord_abs_change_smile"] == 0.5 and s["n"] == 7


def _sweep_summary() -> list[dict]:
    return [{"mechanism": m, "epsilon": e, "coord_abs_change_pose": 3 / e * k, "psnr": 20 + e,
             "identity_distance": 0.2 * k / e} for k, m in ((1, "laplace"), (2, "rr")) for e in (0.5, 1.0, 4.0)]


def test_sweep_figure_panels_and_lines(tmp_path):
    """The figure its docstring describes: attribute change left, identity distance right, one line per
    mechanism in matplotlib's first two colours (C0 blue, C1 orange)."""
    from latentpriv.evaluate.plots import sweep_figure, sweep_panels
    from latentpriv.faces.identity import SAME_PERSON_THRESHOLD

    summary = _sweep_summary()
    assert [k for k, _ in sweep_panels(summary, "pose")] == ["coord_abs_change_pose", "identity_distance"]
    assert f"< {SAME_PERSON_THRESHOLD:g}" in sweep_panels(summary, "pose")[1][1]
    no_faces = [{k: v for k, v in s.items() if k != "identity_distance"} for s in summary]
    assert sweep_panels(no_faces, None)[1][0] == "psnr"
    (tmp_path / "c.png").write_bytes(sweep_figure(summary, attribute="pose"))
    img = load_image(tmp_path / "c.png")
    blue = np.all(img == [31, 119, 180], axis=-1)
    orange = np.all(img == [255, 127, 14], axis=-1)
    assert blue.sum() > 50 and orange.sum() > 50
    # both panels hold both lines: the left and the right half of the picture have each colour
    half = img.shape[1] // 2
    assert blue[:, :half].sum() > 20 and blue[:, half:].sum() > 20
    assert orange[:, :half].sum() > 20 and orange[:, half:].sum() > 20


def test_sweep_figure_without_matplotlib_names_the_extra(tmp_path, monkeypatch):
    import builtins

    from latentpriv.errors import ConfigError
    from latentpriv.evaluate.plots import sweep_figure

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib in this test")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ConfigError, match=r"latentpriv\[plot\]"):
        sweep_figure(_sweep_summary(), attribute="pose")
    # the command says so before the sweep's work, in one line, and writes nothing
    res = CliRunner().invoke(cli, ["evaluate", "--sweep", "--model", "dcgan64", "--attr", "smile", "--samples", "2",
                                   "--json", str(tmp_path / "s.json"), "--plot", str(tmp_path / "c.png")])
    assert res.exit_code != 0 and "latentpriv[plot]" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "s.json").exists()


def test_sweep_cli_on_the_demo_generator(tmp_path):
    """End to end on dcgan64 (weights fetched by CI: `latentpriv weights fetch dcgan64`)."""
    b = _unit(100, 7)
    save_npy(tmp_path / "dir.npy", b)
    args = ["evaluate", "--sweep", "--model", "dcgan64", "--boundary", str(tmp_path / "dir.npy"), "--samples", "2",
            "--epsilons", "0.5,8", "--mechanisms", "laplace,rr", "--no-lpips", "--json", str(tmp_path / "s.json"),
            "--csv", str(tmp_path / "s.csv"), "--plot", str(tmp_path / "curve.png"), "--device", "cpu"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["generator"]["name"] == "dcgan64" and data["space"] == "z"
    assert [(s["mechanism"], s["epsilon"]) for s in data["summary"]] == [
        ("laplace", 0.5), ("laplace", 8.0), ("rr", 0.5), ("rr", 8.0)]
    assert data["noise"]["for_release"] is False and "not written" in data["ledger"]
    assert load_image(tmp_path / "curve.png").shape[1] > 400
    res = CliRunner().invoke(cli, ["evaluate", "--sweep", "--model", "dcgan64", "--samples", "2"])
    assert res.exit_code != 0 and "--attr" in res.output


def test_missing_face_extra_is_reported_not_fatal(face64, tmp_path, monkeypatch):
    import latentpriv.faces

    monkeypatch.setattr(latentpriv.faces, "available", lambda: False)
    save_image(tmp_path / "original.png", face64)
    save_image(tmp_path / "recon.png", face64)
    res = CliRunner().invoke(cli, ["evaluate", str(tmp_path), "--no-lpips", "--json", str(tmp_path / "o.json")])
    assert res.exit_code == 0, res.output
    assert "skipping identity distance and attribute scores" in res.output and 'pip install -e ".[face]"' in res.output
    data = json.loads((tmp_path / "o.json").read_text())
    assert "face extra not installed" in data["skipped"]["faces"] and data["skipped"]["lpips"] == "--no-lpips"
    assert data["rows"][0]["psnr"] == math.inf and "identity_distance" not in data["rows"][0]


def test_latent_files_of_one_space_are_stacked_others_refused():
    from types import SimpleNamespace

    from latentpriv.errors import InputError
    from latentpriv.evaluate.latents import stack_latents

    a = SimpleNamespace(latent=np.zeros((2, 4), np.float64), space="w")
    b = SimpleNamespace(latent=np.ones((3, 4), np.float32), space="w")
    lat, sp = stack_latents([a, b], "mixed {spaces}")
    assert lat.shape == (5, 4) and lat.dtype == np.float32 and sp == "w"
    with pytest.raises(InputError, match=r"^mixed \['w', 'z'\]$"):
        stack_latents([a, SimpleNamespace(latent=np.zeros((1, 4)), space="z")], "mixed {spaces}")


def test_mode_checks_delta_rule_and_outputs_come_before_the_work(tmp_path, monkeypatch):
    """evaluate's library entry points refuse a wrong request before anything slow runs, and write the
    --json/--csv files as one set (JSON last)."""
    from latentpriv.errors import ConfigError, InputError
    from latentpriv.evaluate import report

    with pytest.raises(ConfigError, match="applies to --sweep only"):
        report.check_mode(False, samples=3)
    with pytest.raises(ConfigError, match="drop RUN_DIR"):
        report.check_mode(True, run_dir=tmp_path, attrs=["smile"])
    # delta: a probability whatever the grid; the approximate mechanisms' own rule (registry) on top
    report.check_sweep_privacy(["laplace", "rr"], 1e-5)
    with pytest.raises(ConfigError, match="delta = 2 must be < 1"):
        report.check_sweep_privacy(["laplace", "rr"], 2.0)
    with pytest.raises(ConfigError, match="delta in \\(0, 1\\)"):
        report.check_sweep_privacy(["laplace", "gaussian"], 0.0)
    monkeypatch.setattr(report, "sweep_model", lambda *a, **k: pytest.fail("the sweep ran"))
    (tmp_path / "s.json").write_text("{}")
    with pytest.raises(InputError, match="already exists; pass --overwrite"):
        report.evaluate_sweep("dcgan64", mechanisms=["laplace"], delta=1e-5, json_path=tmp_path / "s.json")
    with pytest.raises(InputError, match="cannot write there"):
        report.evaluate_sweep("dcgan64", mechanisms=["laplace"], delta=1e-5,
                              csv_path=tmp_path / "s.json" / "x.csv")
    result = {"format": "latentpriv.evaluate/1", "original": {"file": "o.png", "psnr": None},
              "rows": [{"file": "r.png", "role": "reconstruction", "psnr": math.inf}], "boundaries": []}
    report.write_outputs(result, json_path=tmp_path / "o.json", csv_path=tmp_path / "o.csv")
    assert json.loads((tmp_path / "o.json").read_text())["rows"][0]["psnr"] == math.inf
    assert (tmp_path / "o.csv").read_text().splitlines()[1:] == ["o.png,original,", "r.png,reconstruction,inf"]
    assert report.console_lines(result)[1].split() == ["r.png", "reconstruction", "inf"]

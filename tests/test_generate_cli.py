"""``latentpriv generate``: PNGs are exactly G.to_uint8(G.synthesize(...)); bad input is one line, exit != 0."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from latentpriv.cli import cli
from latentpriv.io import load_image
from latentpriv.models.registry import load_generator


def run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def assert_user_error(result, *fragments: str) -> None:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    err = [ln for ln in lines if ln.startswith("Error:")]
    assert len(err) == 1, result.output
    for f in fragments:
        assert f in err[0], (f, err[0])


@pytest.fixture
def ckpt(synthetic_checkpoint, tmp_path):
    return synthetic_checkpoint(tmp_path, 32, fmap_max=32)


@pytest.fixture
def G(ckpt):
    return load_generator(ckpt, device="cpu")


def _expected(G, lat, space="w", **kw):
    with torch.no_grad():
        return G.to_uint8(G.synthesize(torch.from_numpy(lat), space, **kw))


def test_single_w_png_is_the_official_uint8(tmp_path, ckpt, G):
    w = np.random.default_rng(0).standard_normal((1, 512)).astype(np.float32)
    np.save(tmp_path / "w.npy", w)
    out = tmp_path / "face.png"
    res = run("generate", tmp_path / "w.npy", "-o", out, "--weights", ckpt, "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert "truncation psi 0.7 on 8 layers" in res.output
    np.testing.assert_array_equal(load_image(out), _expected(G, w)[0])
    res = run("generate", tmp_path / "w.npy", "-o", tmp_path / "nt.png", "--weights", ckpt, "--no-truncation")
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(load_image(tmp_path / "nt.png"), _expected(G, w, truncation_psi=None)[0])
    assert not np.array_equal(load_image(tmp_path / "nt.png"), load_image(out))


def test_rows_to_directory_pattern_and_batches(tmp_path, ckpt, G):
    w = np.random.default_rng(1).standard_normal((5, 512)).astype(np.float32)
    np.save(tmp_path / "ws.npy", w)
    res = run("generate", tmp_path / "ws.npy", "-o", tmp_path / "dir", "--weights", ckpt, "--batch-size", "2",
              "--truncation-psi", "0.5", "--truncation-layers", "4")
    assert res.exit_code == 0, res.output
    files = sorted((tmp_path / "dir").iterdir())
    assert [f.name for f in files] == [f"{i:04d}.png" for i in range(5)]
    exp = _expected(G, w, truncation_psi=0.5, truncation_layers=4)
    for f, e in zip(files, exp, strict=True):
        np.testing.assert_array_equal(load_image(f), e)
    res = run("generate", tmp_path / "ws.npy", "-o", tmp_path / "p" / "img_{i:02d}.png", "--weights", ckpt)
    assert res.exit_code == 0, res.output
    assert sorted(f.name for f in (tmp_path / "p").iterdir()) == [f"img_{i:02d}.png" for i in range(5)]
    assert_user_error(run("generate", tmp_path / "ws.npy", "-o", tmp_path / "one.png", "--weights", ckpt),
                      "5 images need a directory or a pattern")
    assert_user_error(run("generate", tmp_path / "ws.npy", "-o", tmp_path / "x_{j}.png", "--weights", ckpt), "{i}")


def test_wp_default_space_and_mismatch(tmp_path, ckpt, G):
    wp = np.random.default_rng(2).standard_normal((2, G.num_layers, 512)).astype(np.float32)
    np.save(tmp_path / "wp.npy", wp)
    res = run("generate", tmp_path / "wp.npy", "-o", tmp_path / "o_{i}.png", "--weights", ckpt)
    assert res.exit_code == 0 and "space wp" in res.output and "truncation off" in res.output
    np.testing.assert_array_equal(load_image(tmp_path / "o_1.png"), _expected(G, wp, "wp")[1])
    assert_user_error(run("generate", tmp_path / "wp.npy", "-o", tmp_path / "d", "--weights", ckpt, "--space", "w"),
                      "W+", "--space w")
    assert_user_error(run("generate", tmp_path / "wp.npy", "-o", tmp_path / "d", "--weights", ckpt,
                          "--truncation-psi", "0.5"), "never truncated")
    np.save(tmp_path / "w18.npy", wp[:, :5])
    assert_user_error(run("generate", tmp_path / "w18.npy", "-o", tmp_path / "d", "--weights", ckpt),
                      f"expected (N, {G.num_layers}, 512)")


def test_seeded_sampling(tmp_path, ckpt, G):
    res = run("generate", "--seed", "3", "--num", "2", "-o", tmp_path / "s", "--weights", ckpt,
              "--save-latent", tmp_path / "z.npy")
    assert res.exit_code == 0, res.output
    z = np.load(tmp_path / "z.npy")
    np.testing.assert_array_equal(z, G.sample_z(2, torch.Generator().manual_seed(3)).numpy())
    np.testing.assert_array_equal(load_image(tmp_path / "s" / "0001.png"), _expected(G, z, "z")[1])
    res2 = run("generate", "--seed", "3", "--num", "2", "-o", tmp_path / "s2", "--weights", ckpt)
    assert res2.exit_code == 0
    for name in ("0000.png", "0001.png"):
        np.testing.assert_array_equal(load_image(tmp_path / "s" / name), load_image(tmp_path / "s2" / name))


def test_bad_inputs_are_one_line_errors(tmp_path, ckpt, monkeypatch):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "short.npy", rng.standard_normal((2, 100)).astype(np.float32))
    assert_user_error(run("generate", tmp_path / "short.npy", "-o", tmp_path / "a.png", "--weights", ckpt),
                      "short.npy", "expected (N, 512)")
    bad = rng.standard_normal((1, 512)).astype(np.float32)
    bad[0, 3] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    assert_user_error(run("generate", tmp_path / "nan.npy", "-o", tmp_path / "a.png", "--weights", ckpt), "NaN/inf")
    bad[0, 3] = np.inf
    np.save(tmp_path / "inf.npy", bad)
    assert_user_error(run("generate", tmp_path / "inf.npy", "-o", tmp_path / "a.png", "--weights", ckpt), "NaN/inf")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert_user_error(run("generate", tmp_path / "obj.npy", "-o", tmp_path / "a.png", "--weights", ckpt), "pickled")
    (tmp_path / "pickle.npy").write_bytes(pickle.dumps([1, 2]))
    assert_user_error(run("generate", tmp_path / "pickle.npy", "-o", tmp_path / "a.png", "--weights", ckpt),
                      "pickle.npy")
    assert_user_error(run("generate", tmp_path / "absent.npy", "-o", tmp_path / "a.png", "--weights", ckpt),
                      "absent.npy", "no such file")
    np.save(tmp_path / "w.npy", rng.standard_normal((1, 512)).astype(np.float32))
    torch.save({"encoder.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    assert_user_error(run("generate", tmp_path / "w.npy", "-o", tmp_path / "a.png", "--weights", tmp_path / "other.pth"),
                      "other.pth", "encoder.weight")
    torch.save({"mapping.dense0.linear.weight": torch.zeros(4, 4), "synthesis.layer0.first_layer": torch.zeros(1)},
               tmp_path / "broken.pth")
    assert_user_error(run("generate", tmp_path / "w.npy", "-o", tmp_path / "a.png", "--weights",
                          tmp_path / "broken.pth"), "broken.pth")
    assert_user_error(run("generate", tmp_path / "w.npy", "-o", tmp_path / "a.png", "--weights", tmp_path / "nope.pth"),
                      "nope.pth")
    assert_user_error(run("generate", tmp_path / "w.npy", "-o", tmp_path / "w.npy", "--weights", ckpt), "suffix")
    assert_user_error(run("generate", tmp_path / "w.npy", "-o", tmp_path / "a.png", "--weights", ckpt,
                          "--save-latent", tmp_path / "w.npy"), "input file")
    assert_user_error(run("generate", tmp_path / "w.npy", "-o", tmp_path / "a.png", "--weights", ckpt,
                          "--no-truncation", "--truncation-psi", "0.5"), "conflicts")
    assert_user_error(run("generate", "-o", tmp_path / "a.png", "--weights", ckpt), "LATENT")
    monkeypatch.setenv("LATENTPRIV_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert_user_error(run("generate", tmp_path / "w.npy", "-o", tmp_path / "a.png"),
                      "stylegan_ffhq", "latentpriv weights fetch stylegan_ffhq")
    assert not (tmp_path / "a.png").exists()


def test_help_has_examples():
    res = run("generate", "--help")
    assert res.exit_code == 0 and "Examples:" in res.output and "latentpriv generate w.npy -o face.png" in res.output
    for sub in ("list", "fetch", "verify", "path"):
        res = run("weights", sub, "--help")
        assert res.exit_code == 0 and "Examples:" in res.output, sub


@pytest.mark.slow
def test_cli_reproduces_official_uint8_at_1024(tmp_path, synthetic_checkpoint_1024, shared_dir):
    """The issue's check: `generate w.npy -o out.png --weights synth.pth` gives the official uint8 image (+-1)."""
    fixture = shared_dir / "fixtures" / "stylegan_ffhq" / "seed0"
    res = run("generate", fixture / "input_w_raw.npy", "-o", tmp_path / "img_{i}.png", "--weights",
              synthetic_checkpoint_1024, "--device", "cpu", "--batch-size", "3")
    assert res.exit_code == 0, res.output
    ref = np.load(fixture / "W_trunc_default_uint8_crop_center32.npy")
    for i in range(3):
        img = load_image(tmp_path / f"img_{i}.png")
        assert img.shape == (1024, 1024, 3)
        diff = np.abs(img[496:528, 496:528].astype(int) - ref[i].astype(int))
        assert diff.max() <= 1 and (diff == 0).mean() >= 0.995  # float32 summation order flips a few roundings


def test_the_library_draws_its_bar_only_through_the_callers_factory(tmp_path, ckpt, capsys):
    from latentpriv.runs.generate import generate

    bars = []

    class Bar:
        def __init__(self, **kwargs):
            self.kwargs, self.done, self.closed = kwargs, 0, False
            bars.append(self)

        def update(self, n=1):
            self.done += n

        def close(self):
            self.closed = True

    w = np.random.default_rng(3).standard_normal((5, 512)).astype(np.float32)
    np.save(tmp_path / "ws.npy", w)
    generate(tmp_path / "ws.npy", str(tmp_path / "a"), weights=str(ckpt), device="cpu", batch_size=2, progress=Bar)
    (bar,) = bars
    assert bar.kwargs == {"total": 3, "desc": "generate", "unit": "batch"} and bar.done == 3 and bar.closed
    capsys.readouterr()
    generate(tmp_path / "ws.npy", str(tmp_path / "b"), weights=str(ckpt), device="cpu", batch_size=2)
    assert capsys.readouterr().err == ""   # no factory: no bar

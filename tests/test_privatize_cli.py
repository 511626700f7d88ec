"""The privatize / ledger / audit / sweep commands through click's CliRunner."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from shared_paths import IFG_BOUNDARIES

import latentpriv
from latentpriv.cli import cli

IFG = IFG_BOUNDARIES


@pytest.fixture
def env(ifg_home, monkeypatch, tmp_path):
    monkeypatch.setenv("LATENTPRIV_LEDGER", str(tmp_path / "ledger.jsonl"))
    w = np.random.default_rng(0).normal(size=(1, 512)).astype(np.float32)
    np.save(tmp_path / "w.npy", w)
    return tmp_path


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _charges(env) -> list[dict]:
    """The ledger's charges that count (one per released face), newest last."""
    from latentpriv.privacy.ledger import Ledger

    path = env / "ledger.jsonl"   # any name: the ledger is a SQLite file
    return [e for e in Ledger(path).entries() if e["state"] != "cancelled"] if path.exists() else []


def test_privatize_writes_latent_record_and_ledger(env):
    r = run("privatize", "w.npy", "--attr", "smile", "--epsilon", "1.0")
    assert r.exit_code == 0, r.output
    out = np.load(env / "w_private.npy")
    w = np.load(env / "w.npy")
    assert out.shape == w.shape and out.dtype == np.float32
    rec = json.loads((env / "w_private.json").read_text())
    assert rec["mechanism"] == "laplace" and rec["guarantee"]["coordinates"]["type"] == "pure-dp"
    # the file's guarantee: the coordinates' epsilon plus the residual dither's (epsilon, delta)
    assert rec["guarantee"]["type"] == "approx-dp" and rec["guarantee"]["epsilon"] == pytest.approx(1.01)
    assert rec["boundaries"][0]["name"] == "stylegan_ffhq_smile_w_boundary"
    assert rec["sampler"]["sampler"] == "opendp" and rec["for_release"] is True
    n = np.load(IFG / "stylegan_ffhq_smile_w_boundary.npy")[0]
    a_true = float(w.astype(np.float64)[0] @ n)
    assert f"{a_true:.5f}" not in json.dumps(rec)
    assert "input_sha256" not in json.dumps(rec)  # the hash of the true latent stays in the private ledger
    charges = _charges(env)
    assert len(charges) == 1 and charges[0]["release_id"] == rec["release_id"]
    # outputs are never overwritten silently, the input never
    r = run("privatize", "w.npy", "--attr", "smile", "--epsilon", "1.0")
    assert r.exit_code == 2 and "already exists; pass --overwrite" in r.output
    r = run("privatize", "w.npy", "--attr", "smile", "--epsilon", "1.0", "-o", "w.npy", "--overwrite")
    assert r.exit_code == 2 and "refusing to overwrite the input" in r.output
    assert np.array_equal(np.load(env / "w.npy"), w)
    r = run("privatize", "w.npy", "--attr", "smile", "--epsilon", "1.0", "--overwrite")
    assert r.exit_code == 0
    r = run("ledger", "show", "w.npy", "--json")
    assert r.exit_code == 0
    info = json.loads(r.output)["faces"][0]
    assert info["releases"] == 2 and info["epsilon"] == pytest.approx(2 * rec["spend"]["epsilon"])


def test_max_epsilon_refusal_writes_nothing(env):
    assert run("privatize", "w.npy", "--attr", "smile", "--epsilon", "1.5", "--max-epsilon", "2").exit_code == 0
    ledger_before = _charges(env)
    r = run("privatize", "w.npy", "--attr", "age", "--epsilon", "1.0", "--max-epsilon", "2", "-o", "b.npy")
    assert r.exit_code == 3
    assert "release refused" in r.output and "--force" in r.output
    assert not (env / "b.npy").exists() and not (env / "b.json").exists()
    assert _charges(env) == ledger_before
    r = run("privatize", "w.npy", "--attr", "age", "--epsilon", "1.0", "--max-epsilon", "2", "-o", "b.npy", "--force")
    assert r.exit_code == 0 and (env / "b.npy").exists()
    assert "--force" in r.output
    r = run("ledger", "show")   # smile then age: different protection profiles, so the face is unbounded
    assert "unbounded" in r.output and "smile" in r.output and "age" in r.output and r.exit_code == 0


@pytest.mark.parametrize("args,fragment", [
    (["--epsilon", "0"], "epsilon = 0 must be > 0"),
    (["--epsilon", "-1"], "must be > 0"),
    (["--epsilon", "1", "--delta", "1e-5"], "--delta does not apply to --mechanism laplace"),
    (["--epsilon", "1", "--mechanism", "gaussian"], "needs --delta in (0, 1)"),
    (["--epsilon", "1", "--mechanism", "gaussian", "--delta", "2"], "delta"),
    (["--epsilon", "1", "--clip-radius", "0"], "clip_radius = 0 must be > 0"),
    (["--epsilon", "1", "--space", "z", "--boundary", str(IFG / "stylegan_ffhq_smile_w_boundary.npy")],
     "W-space boundary cannot edit a Z latent"),
    (["--epsilon", "1", "--attr", "hat"], "no boundary stylegan_ffhq_hat_w_boundary.npy"),
    (["--epsilon", "1", "--layers", "0-3"], "--layers applies only to W+"),
    (["--epsilon", "1", "--max-epsilon", "-1"], "--max-epsilon"),
    (["--epsilon", "1", "--render", "."], "--render .: a folder; for a single latent give an image file"),
])
def test_validation_messages(env, args, fragment):
    base = [] if "--attr" in args or "--boundary" in args else ["--attr", "smile"]
    r = run("privatize", "w.npy", *base, *args)
    assert r.exit_code != 0
    assert fragment in r.output
    assert "Traceback" not in r.output
    assert not (env / "w_private.npy").exists() and not (env / "ledger.jsonl").exists()


def test_gaussian_multi_attr_wplus_and_seed_reproducibility(env):
    wp = np.random.default_rng(1).normal(size=(2, 18, 512)).astype(np.float32)
    np.save(env / "wp.npy", wp)
    common = ["wp.npy", "--attr", "smile", "--attr", "age", "--mechanism", "gaussian", "--delta", "1e-5",
              "--epsilon", "2", "--seed", "5"]
    # a layer subset would publish the other layers' coordinates exactly: refused before anything is drawn
    r = run("privatize", *common, "--layers", "0-7", "-o", "a.npy")
    assert r.exit_code == 2 and "every layer" in r.output and not (env / "a.npy").exists()
    r = run("privatize", *common, "-o", "a.npy")
    assert r.exit_code == 0 and "NOT private" in r.output
    r = run("privatize", *common, "-o", "b.npy")
    a, b = np.load(env / "a.npy"), np.load(env / "b.npy")
    assert a.shape == wp.shape and np.array_equal(a, b)
    # every layer carries the released coordinates
    dirs = np.stack([np.load(IFG / f"stylegan_ffhq_{x}_w_boundary.npy")[0] for x in ("smile", "age")]).astype(np.float64)
    coords = a.astype(np.float64) @ dirs.T
    assert np.abs(coords - coords[:, :1]).max() < 1e-4
    rec = json.loads((env / "a.json").read_text())
    assert rec["space"] == "wp" and rec["for_release"] is False and rec["directions"]["attributes"] == ["smile", "age"]
    r = run("ledger", "show", "wp.npy", "--json")
    rows = json.loads(r.output)["faces"]
    assert len(rows) == 2 and all(x["releases"] == 2 for x in rows)
    assert all(x["epsilon"] is None and "seeded" in x["unbounded_reason"] for x in rows)  # --seed: not private


def test_seed_mechanism_warns_and_is_unbounded(env):
    r = run("privatize", "w.npy", "--attr", "age", "--mechanism", "seed", "--delta", "1e-5", "--epsilon", "0.5")
    assert r.exit_code == 0
    assert "NO differential-privacy guarantee" in r.output
    rec = json.loads((env / "w_private.json").read_text())
    assert rec["guarantee"]["type"] == "none"
    r = run("ledger", "show", "w.npy")
    assert "unbounded" in r.output


def test_audit_command(env):
    r = run("audit", "--mechanism", "laplace", "--epsilon", "1", "--seed", "0", "--trials", "20000")
    assert r.exit_code == 0 and "PASS" in r.output
    r = run("audit", "--mechanism", "seed", "--epsilon", "0.5", "--delta", "1e-5", "--seed", "0", "--trials", "5000",
            "--json")
    assert r.exit_code == 1
    res = json.loads(r.output)
    assert res["result"] == "FAIL" and res["epsilon_lb"] > 0.5 and res["flags"]
    r = run("audit", "--mechanism", "gaussian", "--epsilon", "1", "--seed", "0", "--trials", "1000")
    assert r.exit_code == 2 and "needs --delta" in r.output


# ------------------------------------------------------------------------------------- rendering


class _FakeGenerator:
    """Implements the generator contract (docs/DEVELOPING.md) with a cheap deterministic image."""

    name, resolution, z_dim, w_dim, num_layers = "fake", 16, 512, 512, 4
    latent_spaces, default_space = ("z", "w", "wp"), "w"

    def __init__(self):
        import torch

        self.w_avg = torch.linspace(-0.1, 0.1, 512)
        self.proj = torch.randn(512, 3 * 16 * 16, generator=torch.Generator().manual_seed(0)) / 20

    def synthesize(self, latent, space="w", truncation_psi=0.7, truncation_layers=8):
        x = latent.mean(dim=1) if space == "wp" else latent
        return (x.float() @ self.proj).tanh().reshape(-1, 3, 16, 16)

    @staticmethod
    def to_uint8(images):
        return ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()

    def info(self):
        return {"name": self.name, "resolution": self.resolution, "weights": None}


@pytest.fixture
def fake_generator(monkeypatch):
    calls = []

    def load(path_or_name, device="auto"):
        calls.append((path_or_name, device))
        return _FakeGenerator()

    monkeypatch.setitem(vars(latentpriv), "load_generator", load)  # no import of the real registry
    return calls


def test_render_and_center_auto(env, fake_generator):
    r = run("privatize", "w.npy", "--attr", "smile", "--epsilon", "1", "--center", "auto", "--render", "p.png",
            "--weights", "g.pt", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert fake_generator == [("g.pt", "cpu")]
    from PIL import Image

    assert Image.open(env / "p.png").size == (16, 16)
    rec = json.loads((env / "w_private.json").read_text())
    n = np.load(IFG / "stylegan_ffhq_smile_w_boundary.npy")[0]
    assert rec["center_mode"].startswith("auto")
    assert rec["centers"][0] == pytest.approx(float(np.linspace(-0.1, 0.1, 512, dtype=np.float32) @ n), abs=1e-6)


def test_sweep_grid_and_ledger(env, fake_generator):
    r = run("sweep", "w.npy", "--attr", "smile", "--epsilons", "0.5,2,inf", "--samples", "3", "-o", "grid.png",
            "--seed", "1", "--cell", "24")
    assert r.exit_code == 0, r.output
    from PIL import Image

    img = np.asarray(Image.open(env / "grid.png"))
    assert img.shape[0] > 3 * 24 and img.shape[1] > 4 * 24
    rec = json.loads((env / "grid.json").read_text())
    assert rec["releases"] == 6 and rec["epsilon_spent"] is None   # --seed: not private, the face is unbounded
    assert rec["epsilons"] == [0.5, 2.0, None]
    assert len(_charges(env)) == 6  # every finite-epsilon draw is a release
    r = run("sweep", "w.npy", "--attr", "smile", "--epsilons", "1", "-o", "g2.png", "--max-epsilon", "8")
    assert r.exit_code == 3 and not (env / "g2.png").exists()
    r = run("sweep", "w.npy", "--attr", "smile", "--epsilons", "0,1", "-o", "g3.png")
    assert r.exit_code == 2 and "epsilon 0 must be a positive" in r.output


def test_sweep_on_a_full_disk_writes_nothing_and_charges_nothing(env, fake_generator, monkeypatch):
    """The grid and its record are one write set: the second temp file's fsync reports a full disk, so
    neither file lands, no temp file stays, and the sweep's pending charges are cancelled."""
    import errno
    import os

    real, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 2:   # one of the two temp files is complete, the other is not
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    r = CliRunner().invoke(cli, ["sweep", "w.npy", "--attr", "smile", "--epsilons", "0.5,2", "--samples", "2",
                                 "-o", "grid.png", "--cell", "24"])
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert r.exit_code != 0 and len(errors) == 1 and "No space left on device" in errors[0], r.output
    assert not (env / "grid.png").exists() and not (env / "grid.json").exists()
    assert not list(env.glob(".grid*"))
    assert _charges(env) == []


def test_render_and_sweep_with_a_real_generator(env, synthetic_checkpoint):
    """The generator contract end to end: synthetic StyleGAN weights at 32 px."""
    ckpt = synthetic_checkpoint(env, resolution=32, fmap_max=32)  # narrow: fast on 2 cores
    r = run("privatize", "w.npy", "--attr", "smile", "--epsilon", "1", "--center", "auto", "--render", "p.png",
            "--weights", str(ckpt), "--device", "cpu")
    assert r.exit_code == 0, r.output
    from PIL import Image

    assert Image.open(env / "p.png").size == (32, 32)
    rec = json.loads((env / "w_private.json").read_text())
    assert rec["center_mode"].startswith("auto") and rec["generator"]["resolution"] == 32
    r = run("sweep", "w.npy", "--attr", "smile", "--epsilons", "1,inf", "--samples", "2", "-o", "grid.png",
            "--weights", str(ckpt), "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert Image.open(env / "grid.png").size[0] > 3 * 32
    r = run("privatize", "w.npy", "--attr", "smile", "--epsilon", "1", "--center", "auto", "-o", "x.npy",
            "--weights", "missing.pt")
    assert r.exit_code != 0 and "missing.pt" in r.output and "Traceback" not in r.output

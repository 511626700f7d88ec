"""The released file carries the guarantee: float-level construction, directions, W+, seeds, oblique split."""

from __future__ import annotations

import math

import numpy as np
import pytest

from latentpriv.errors import ConfigError, InputError
from latentpriv.privacy.mechanisms import (
    DEFAULT_MAX_NORM,
    calibrate_dither,
    orthonormalize,
    privatize,
    split_basis,
)


def _unit(dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=dim)
    return v / np.linalg.norm(v)


def test_float16_refused_float64_released_as_float32():
    n = _unit(512, 0)[None]
    w = np.random.default_rng(1).normal(size=(2, 512))
    with pytest.raises(InputError, match="float16"):
        privatize(w.astype(np.float16), n, epsilon=1.0, seed=0)
    out = privatize(w, n, epsilon=1.0, seed=0)
    assert out.latent.dtype == np.float32
    assert out.record["latent"]["input_dtype"] == "float64" and out.record["latent"]["dtype"] == "float32"


def test_output_rebuilt_from_released_values_only():
    """With the noise fixed, two encodings of one face with coordinates 10 and 50 (both clamp to +B) give
    outputs that differ by far less than the dither: the bytes carry no trace of the input's coordinate."""
    n = _unit(512, 2)[None]
    r = np.random.default_rng(3).normal(size=512)
    r -= (r @ n[0]) * n[0]
    x10 = (r + 10.0 * n[0]).astype(np.float32)[None]
    x50 = (r + 50.0 * n[0]).astype(np.float32)[None]
    o10 = privatize(x10, n, epsilon=1.0, seed=5)
    o50 = privatize(x50, n, epsilon=1.0, seed=5)
    sigma = o10.record["residual_release"]["sigma"]
    gap = np.abs(o10.latent.astype(np.float64) - o50.latent.astype(np.float64)).max()
    # the inputs' residuals differ by float32 rounding (~1e-6); the released files by about as much, while
    # the 0.1 release (old construction: w + (atilde - a) n) kept the whole input encoding
    assert gap < 1e-4 * sigma * 512
    assert float(o10.latent[0] @ n[0]) == pytest.approx(float(o50.latent[0] @ n[0]), abs=1e-5)


def test_near_orthonormal_directions_are_reorthonormalised():
    rng = np.random.default_rng(4)
    q, _ = np.linalg.qr(rng.normal(size=(512, 2)))
    rows = q.T + 5e-6 * rng.normal(size=(2, 512))          # orthonormal only to ~5e-6
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    n = orthonormalize(rows)
    assert np.abs(n @ n.T - np.eye(2)).max() < 1e-14
    w = rng.normal(size=(4, 512))
    res = privatize(w, rows, epsilon=1.0, seed=1)
    out = res.latent.astype(np.float64)
    # the released coordinates lie exactly in [-B, B] along the re-orthonormalised rows, and the record
    # names those rows
    assert np.all(np.abs(out @ n.T) <= 3.0 + 1e-5)
    import hashlib

    want = [hashlib.sha256(np.ascontiguousarray(r, dtype="<f8").tobytes()).hexdigest() for r in n]
    assert res.record["directions"]["sha256_float64"] == want


def test_max_norm_sets_the_coverage_not_a_refusal():
    """Records above max_norm are released (a refusal would reveal a large coordinate); only absurd norms
    (> HARD_MAX_NORM) are refused; sigma is proportional to max_norm."""
    from latentpriv.privacy.mechanisms import HARD_MAX_NORM

    n = _unit(100, 5)[None]
    big = np.full((1, 100), 30.0, np.float32)               # norm 300 > 256
    res = privatize(big, n, epsilon=1.0, seed=0)
    assert res.latent.shape == big.shape
    rec_small = privatize(big / 10, n, epsilon=1.0, seed=0).record
    # nothing in the record depends on the input's norm
    assert res.record["residual_release"] == rec_small["residual_release"]
    with pytest.raises(InputError, match="not a latent"):
        privatize(np.full((1, 100), HARD_MAX_NORM, np.float32), n, epsilon=1.0, seed=0)
    res = privatize(big, n, epsilon=1.0, seed=0, max_norm=512)
    assert res.record["residual_release"]["max_norm"] == 512
    assert res.record["residual_release"]["sigma"] == pytest.approx(2 * rec_small["residual_release"]["sigma"],
                                                                     rel=1e-2)


def test_dither_calibration_covers_float32_rounding():
    d = calibrate_dither(dims=512)
    u = 2.0 ** -24
    assert d.tau == pytest.approx(2 * u * DEFAULT_MAX_NORM, rel=1e-6)
    assert d.sensitivity > d.tau and d.sensitivity < 1.01 * d.tau
    # float32 encodings of one face with coordinates +-1 .. +-50 stay within tau of each other's residual
    rng = np.random.default_rng(6)
    n = _unit(512, 7)
    worst = 0.0
    for _ in range(200):
        r = rng.normal(size=512) * rng.uniform(0.1, 12)
        r -= (r @ n) * n
        a0, a1 = rng.uniform(-50, 50, size=2)
        x0 = (r + a0 * n).astype(np.float32).astype(np.float64)
        x1 = (r + a1 * n).astype(np.float32).astype(np.float64)
        if max(np.linalg.norm(x0), np.linalg.norm(x1)) > DEFAULT_MAX_NORM:
            continue
        r0, r1 = x0 - (x0 @ n) * n, x1 - (x1 @ n) * n
        worst = max(worst, float(np.linalg.norm(r0 - r1)) / d.tau)
    assert 0 < worst <= 1.0
    # the oblique split's residual map is longer: tau scales with ||U||
    assert calibrate_dither(dims=512, op_norm=2.0).tau == pytest.approx(2 * d.tau)


def test_oblique_split_decorrelates_the_residual():
    rng = np.random.default_rng(8)
    dim = 64
    A = rng.normal(size=(dim, dim)) / math.sqrt(dim)
    sigma = A @ A.T + 0.1 * np.eye(dim)
    q, _ = np.linalg.qr(rng.normal(size=(dim, 2)))
    n = orthonormalize(q.T)
    U = split_basis(n, sigma)
    assert np.allclose(U @ n.T, np.eye(2), atol=1e-12)
    # Cov(r, a) = (I - U^T N) Sigma N^T = 0, and the orthogonal split does not have that property
    assert np.abs((np.eye(dim) - U.T @ n) @ sigma @ n.T).max() < 1e-12
    assert np.abs((np.eye(dim) - n.T @ n) @ sigma @ n.T).max() > 1e-2
    w = rng.multivariate_normal(np.zeros(dim), sigma, size=20_000)
    a = w @ n.T
    r = w - a @ U
    cross = (r - r.mean(0)).T @ (a - a.mean(0)) / len(w)
    assert np.abs(cross).max() < 0.05
    res = privatize(w[:3], n, epsilon=1.0, seed=0, covariance=sigma)
    assert res.record["split"] == "oblique"
    out = res.latent.astype(np.float64)
    assert np.all(np.abs(out @ n.T) <= 3.0 + 1e-5)
    with pytest.raises(InputError, match="shape"):
        split_basis(n, np.eye(dim + 1))


def test_seeded_release_is_not_for_release():
    n = _unit(512, 9)[None]
    w = np.random.default_rng(10).normal(size=(1, 512)).astype(np.float32)
    rec = privatize(w, n, epsilon=1.0, seed=123).record
    assert rec["for_release"] is False and rec["seed"] == 123
    rec = privatize(w, n, epsilon=1.0).record
    assert rec["for_release"] is True and rec["seed"] is None


def test_layer_subset_refused_with_a_reason():
    n = _unit(512, 11)[None]
    w = np.zeros((1, 18, 512), np.float32)
    with pytest.raises(ConfigError, match="publish theirs exactly"):
        privatize(w, n, epsilon=1.0, seed=0, layers=[0, 1, 2])


def test_gaussian_release_through_the_cli_composes_in_zcdp(tmp_path, monkeypatch):
    """An unseeded gaussian release: the record's spend matches the calibration's (coordinates' rho; the
    dither by basic composition), and two releases compose below basic composition's 2 x 1.01."""
    import json

    from click.testing import CliRunner

    from latentpriv.cli import cli

    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "z.npy", np.random.default_rng(0).normal(size=(1, 100)).astype(np.float32))
    args = ["privatize", "z.npy", "--model", "dcgan64", "--attr", "smile", "--mechanism", "gaussian", "--delta",
            "1e-5", "--epsilon", "1", "--no-decorrelate", "--ledger", str(tmp_path / "l.sqlite")]
    runner = CliRunner()
    for out in ("a.npy", "b.npy"):
        r = runner.invoke(cli, [*args, "-o", out])
        assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / "a.json").read_text())
    assert rec["spend"]["epsilon"] == pytest.approx(1.01) and rec["spend"]["delta"] == pytest.approx(1e-5 + 1e-10)
    r = runner.invoke(cli, ["ledger", "show", "--ledger", str(tmp_path / "l.sqlite"), "--json"])
    face = json.loads(r.output)["faces"][0]
    assert face["releases"] == 2 and 1.01 < face["epsilon"] < 2 * 1.01

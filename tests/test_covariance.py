"""Latent covariance: estimation, cache, CLI, and the held-out R^2 of a coordinate from the residual."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from latentpriv.edit import covariance as C
from latentpriv.errors import AssetError, InputError
from latentpriv.privacy.mechanisms import split_basis


def _gaussian(dim: int, seed: int):
    """A non-isotropic Gaussian (mean, Sigma) with strongly correlated coordinates."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((dim, dim)) * np.geomspace(3.0, 0.1, dim)
    return rng.standard_normal(dim) * 2.0, A @ A.T


def _orthonormal(k: int, dim: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, k)))
    return q.T.copy()


def _stats_from(train: np.ndarray, test: np.ndarray, **kw) -> C.LatentCovariance:
    m, c = C.moments(train)
    hm, hc = C.moments(test)
    return C.LatentCovariance(model="toy", model_sha256=kw.get("sha", "0" * 64), space="w", num=len(train),
                              dim=train.shape[1], mean=m, cov=c, heldout_mean=hm, heldout_cov=hc,
                              heldout_num=len(test), seed=0)


def _sklearn_r2(train, test, N, U) -> list[float]:
    from sklearn.linear_model import LinearRegression
    from sklearn.metrics import r2_score

    out = []
    for X in (train, test):
        a = X @ N.T
        out.append((a, X - a @ U))
    (a_tr, r_tr), (a_te, r_te) = out
    return [r2_score(a_te[:, i], LinearRegression().fit(r_tr, a_tr[:, i]).predict(r_te)) for i in range(N.shape[0])]


def test_moments_merge_batches_exactly():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 7)) * [1, 2, 3, 4, 5, 6, 7] + 1e4  # large mean: centring matters
    acc = C._Moments()
    for chunk in np.array_split(x, [3, 100, 101, 640]):
        acc.update(chunk)
    mean, cov = acc.result()
    np.testing.assert_allclose(mean, x.mean(0), rtol=0, atol=1e-9)
    np.testing.assert_allclose(cov, np.cov(x.T), rtol=1e-10, atol=1e-10)
    assert np.array_equal(cov, cov.T)


@pytest.mark.parametrize("oblique", [False, True])
def test_residual_r2_is_sklearn_held_out_r2(oblique):
    """With the moments of explicit samples, the analytic value is sklearn's held-out R^2 exactly."""
    mu, S = _gaussian(12, 1)
    rng = np.random.default_rng(2)
    train = rng.multivariate_normal(mu, S, size=3000)
    test = rng.multivariate_normal(mu, S, size=2000)
    N = _orthonormal(2, 12, 3)
    stats = _stats_from(train, test)
    U = split_basis(N, stats.cov if oblique else None)
    got = C.residual_r2(stats, N, U)
    np.testing.assert_allclose(got, _sklearn_r2(train, test, N, U), rtol=0, atol=1e-7)


def test_residual_r2_population_moments_match_samples_within_sampling_error():
    mu, S = _gaussian(10, 4)
    N = _orthonormal(1, 10, 5)
    pop = C.LatentCovariance(model="toy", model_sha256=None, space="w", num=10**9, dim=10, mean=mu, cov=S,
                             heldout_mean=mu, heldout_cov=S, heldout_num=10**9)
    expected = C.residual_r2(pop, N, N)[0]
    assert expected > 0.3  # correlated latents: the orthogonal residual predicts the coordinate
    rng = np.random.default_rng(6)
    train, test = rng.multivariate_normal(mu, S, size=20000), rng.multivariate_normal(mu, S, size=20000)
    assert abs(_sklearn_r2(train, test, N, N)[0] - expected) < 0.02  # SE of R^2 here is ~0.005


def test_oblique_split_decorrelates_on_held_out_samples():
    mu, S = _gaussian(16, 7)
    rng = np.random.default_rng(8)
    stats = _stats_from(rng.multivariate_normal(mu, S, size=20000), rng.multivariate_normal(mu, S, size=5000))
    N = _orthonormal(3, 16, 9)
    off = C.residual_r2(stats, N, split_basis(N))
    on = C.residual_r2(stats, N, split_basis(N, stats.cov))
    assert min(off) > 0.1, off
    assert max(on) <= 0.01, on
    # isotropic latents: the orthogonal split is already decorrelated
    iso = _stats_from(rng.standard_normal((20000, 16)), rng.standard_normal((5000, 16)))
    assert max(C.residual_r2(iso, N, N)) <= 0.01


def test_residual_r2_rejects_bad_shapes():
    rng = np.random.default_rng(0)
    stats = _stats_from(rng.standard_normal((50, 4)), rng.standard_normal((50, 4)))
    with pytest.raises(InputError):
        C.residual_r2(stats, np.ones((1, 5)), np.ones((1, 5)))
    with pytest.raises(InputError):
        C.residual_r2(stats, np.ones((2, 4)), np.ones((1, 4)))


def _explicit_w(G, n: int, seed: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return G.mapping(G.preprocess_z(G.sample_z(n, g))).double().numpy()


def test_estimate_w_of_synthetic_stylegan_matches_explicit_samples(synthetic_generator):
    G = synthetic_generator(resolution=8)
    stats = C.estimate_covariance(G, space="wp", num=1000, heldout_num=400, batch_size=500,
                                  generator=torch.Generator().manual_seed(3))
    assert (stats.space, stats.num, stats.heldout_num, stats.dim, stats.seed) == ("w", 1000, 400, G.w_dim, 3)
    w = _explicit_w(G, 1400, 3)  # the fit sample first, then the held-out one, from one stream
    # W = mapping output before truncation: what `generate`/`invert` hand to privatize
    np.testing.assert_allclose(stats.mean, w[:1000].mean(0), atol=1e-9)
    np.testing.assert_allclose(stats.cov, np.cov(w[:1000].T), atol=1e-9)
    np.testing.assert_allclose(stats.heldout_cov, np.cov(w[1000:].T), atol=1e-9)
    ev = np.linalg.eigvalsh(stats.cov)
    assert ev[-1] / ev[0] > 100  # StyleGAN's W is far from isotropic
    # so the residual of the orthogonal split predicts random directions' coordinates (~0.9 measured);
    # the oblique split with this Sigma does not, on the held-out sample
    N = _orthonormal(2, G.w_dim, 4)
    assert min(C.residual_r2(stats, N, split_basis(N))) > 0.5
    assert max(C.residual_r2(stats, N, split_basis(N, stats))) <= 0.01

    z = C.estimate_covariance(G, space="z", num=1000, heldout_num=100, generator=torch.Generator().manual_seed(0))
    assert z.dim == G.z_dim and np.abs(z.cov - np.eye(G.z_dim)).max() < 0.3


def test_estimate_rejects_missing_space_and_bad_num(synthetic_generator):
    G = synthetic_generator(resolution=8)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(InputError):
        C.estimate_covariance(G, space="x", num=10, heldout_num=10, generator=g)
    with pytest.raises(InputError):
        C.estimate_covariance(G, space="w", num=1, heldout_num=10, generator=g)


def _isolate_cache(monkeypatch, tmp_path):
    """Only tmp_path/home is searched (not the user's cache, which may hold the same synthetic model's Sigma)."""
    monkeypatch.setenv("LATENTPRIV_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("LATENTPRIV_COVARIANCE_DIR")  # conftest's isolation; this test checks the search path
    monkeypatch.chdir(tmp_path)


def test_cache_roundtrip_and_lookup(synthetic_checkpoint, tmp_path, monkeypatch):
    _isolate_cache(monkeypatch, tmp_path)
    ckpt = synthetic_checkpoint(tmp_path, resolution=8)
    assert C.covariance_for(ckpt, "w", num=400, heldout_num=200) is None  # nothing cached, not asked to estimate
    made = C.covariance_for(ckpt, "w", num=400, heldout_num=200, estimate=True, device="cpu", batch_size=256)
    assert made.path and made.path.startswith(str(tmp_path / "home" / "covariance"))
    assert sorted(p.name for p in (tmp_path / "home" / "covariance").iterdir()) == [made.path.rsplit("/", 1)[1]]
    sha = C.model_sha256(ckpt)
    assert made.model_sha256 == sha
    again = C.covariance_for(ckpt, "wp")  # W+ uses W's statistics; largest cached num
    assert again.path == made.path and again.cov_sha256 == made.cov_sha256
    assert np.array_equal(again.heldout_cov, made.heldout_cov)
    assert C.load_covariance(sha, space="w", num=401) is None
    assert C.load_covariance(sha, space="z") is None
    assert [e["num"] for e in C.cached_entries()] == [400]
    # a second, same-key estimate is reproducible (same seed, same samples)
    forced = C.covariance_for(ckpt, "w", num=400, heldout_num=200, estimate=True, force=True, device="cpu")
    np.testing.assert_allclose(forced.cov, made.cov, atol=1e-9)


def _tamper(src, dst, **changes):
    with np.load(src, allow_pickle=False) as z:
        d = {k: z[k] for k in z.files}
    d.update(changes)
    np.savez(dst, **d)


def test_corrupt_cache_files_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    stats = C.save_covariance(_stats_from(rng.standard_normal((100, 5)), rng.standard_normal((80, 5))),
                              tmp_path / "good.npz")
    assert C.read_covariance(stats.path).cov_sha256 == stats.cov_sha256
    with pytest.raises(AssetError, match="computed for model"):
        C.read_covariance(stats.path, model_sha256="1" * 64)
    bad_cov = stats.cov.copy()
    bad_cov[0, 1] += 1.0
    nan_mean = stats.mean.copy()
    nan_mean[2] = np.nan
    meta = json.loads(str(np.load(stats.path)["meta"][()]))
    for name, change, msg in [("asym", {"cov": bad_cov}, "symmetric"),
                              ("nan", {"mean": nan_mean}, "NaN"),
                              ("shape", {"heldout_mean": np.zeros(4)}, "shape"),
                              ("f32", {"cov": stats.cov.astype(np.float32)}, "dtype"),
                              ("edited", {"cov": stats.cov * 2}, "sha256"),
                              ("format", {"meta": np.array(json.dumps({**meta, "format": "x"}))}, "format"),
                              ("pickle", {"cov": np.array([object()], dtype=object)}, "unreadable")]:
        path = tmp_path / f"{name}.npz"
        _tamper(stats.path, path, **change)
        with pytest.raises(AssetError, match=msg):
            C.read_covariance(path)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(AssetError, match="unreadable"):
        C.read_covariance(tmp_path / "junk.npz")


def test_cli_covariance_estimates_caches_and_shows(synthetic_checkpoint, tmp_path, monkeypatch):
    from latentpriv.cli import cli as main

    _isolate_cache(monkeypatch, tmp_path)
    ckpt = synthetic_checkpoint(tmp_path, resolution=8)
    args = ["boundary", "covariance", "--model", str(ckpt), "--num", "500", "--heldout", "200", "--device", "cpu"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    path = res.stdout.strip().splitlines()[-1]
    assert path.endswith("_w_n500_h200_seed0.npz") and "effective rank" in res.stderr
    res = CliRunner().invoke(main, [*args, "--space", "wp", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["path"] == path and info["num"] == 500 and info["space"] == "w"
    res = CliRunner().invoke(main, ["boundary", "covariance", "--show"])
    assert res.exit_code == 0 and path in res.stdout
    res = CliRunner().invoke(main, ["boundary", "covariance"])
    assert res.exit_code != 0 and "--model is required" in res.output

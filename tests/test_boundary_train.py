"""Boundary training (InterFaceGAN's train_boundary, spec 7.3), `latentpriv boundary`, the demo boundaries."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from latentpriv import assets
from latentpriv.cli import cli
from latentpriv.edit.training import npy_bytes, train_boundary
from latentpriv.errors import InputError

REPO = Path(__file__).resolve().parents[1]
DEMO_BOUNDARIES = ("smile", "mouth_open", "pose")


def _data(n: int = 400, d: int = 16, seed: int = 0, noise: float = 0.3):
    rng = np.random.default_rng(seed)
    true = rng.standard_normal(d)
    true /= np.linalg.norm(true)
    x = rng.standard_normal((n, d)).astype(np.float32)
    s = x @ true + noise * rng.standard_normal(n)
    return x, s, true


def _face_extra() -> bool:
    from latentpriv.faces.models import available

    return available()


needs_face = pytest.mark.skipif(not _face_extra(), reason='the optional face extra (dlib) is not installed: '
                                                          'pip install -e ".[face]"')


@pytest.fixture(scope="module")
def G():
    if assets.find("dcgan64") is None:
        pytest.fail("dcgan64 weights are not on this machine; run `latentpriv weights fetch dcgan64`", pytrace=False)
    from latentpriv.models.registry import load_generator

    return load_generator("dcgan64", device="cpu")


# ------------------------------------------------------------------------------ the algorithm


def test_recovers_a_planted_direction_and_points_to_high_scores():
    x, s, true = _data()
    r = train_boundary(x, s, rng=np.random.default_rng(0), ratio=0.2)
    assert r.boundary.shape == (1, 16) and r.boundary.dtype == np.float64
    assert abs(np.linalg.norm(r.boundary) - 1) < 1e-12
    assert float(r.boundary[0] @ true) > 0.9
    assert r.val_accuracy >= 0.95 and 0 <= r.train_accuracy <= 1
    # chosen = int(N * ratio) per class, split 0.7 / 0.3 (spec 7.3)
    assert (r.chosen, r.num_train, r.num_val) == (80, 56, 24)
    assert r.positive_min_score > r.negative_max_score
    # flipping the scores flips the normal
    r2 = train_boundary(x, -s, rng=np.random.default_rng(0), ratio=0.2)
    assert float(r2.boundary[0] @ r.boundary[0]) < -0.9


def test_same_seed_same_bytes_other_seed_other_split():
    x, s, _ = _data()
    a = train_boundary(x, s, rng=np.random.default_rng(7), ratio=0.2)
    b = train_boundary(x, s, rng=np.random.default_rng(7), ratio=0.2)
    c = train_boundary(x, s, rng=np.random.default_rng(8), ratio=0.2)
    assert npy_bytes(a.boundary) == npy_bytes(b.boundary)
    assert a.val_accuracy == b.val_accuracy
    assert npy_bytes(a.boundary) != npy_bytes(c.boundary)


def test_invalid_scores_are_dropped_not_ranked():
    x, s, true = _data(n=500)
    s = s.copy()
    s[:100] = np.nan
    s[100:120] = -999.0
    r = train_boundary(x, s[:, None], rng=np.random.default_rng(0), ratio=0.1, invalid_value=-999.0)
    assert (r.num_samples, r.num_valid, r.chosen) == (500, 380, 38)
    assert r.as_dict()["num_invalid"] == 120
    assert float(r.boundary[0] @ true) > 0.85


def test_ratio_as_count_and_cap_and_linearsvc():
    x, s, true = _data()
    assert train_boundary(x, s, rng=np.random.default_rng(0), ratio=50).chosen == 50
    assert train_boundary(x, s, rng=np.random.default_rng(0), ratio=1.0).chosen == 200  # capped at N // 2
    r = train_boundary(x, s, rng=np.random.default_rng(0), ratio=0.2, classifier="linearsvc", C=0.1)
    assert r.classifier == "linearsvc" and float(r.boundary[0] @ true) > 0.9
    r1 = train_boundary(x, s, rng=np.random.default_rng(0), ratio=0.2, classifier="linearsvc", C=0.1)
    assert npy_bytes(r.boundary) == npy_bytes(r1.boundary)


@pytest.mark.parametrize("kwargs, match", [
    ({"latents": np.zeros((10, 4, 2))}, r"expected a real \(N, D\)"),
    ({"scores": np.zeros(7)}, "to match latents"),
    ({"ratio": 0.0}, "ratio=0.0"),
    ({"ratio": 0.005}, "need at least 2"),
    ({"split_ratio": 1.0}, "split_ratio"),
    ({"C": 0.0}, "C=0.0"),
    ({"classifier": "rbf"}, "classifier"),
    ({"rng": 3}, "numpy.random.Generator"),
    ({"scores": np.ones(400)}, "all 400 valid scores equal"),
    ({"scores": np.full(400, np.nan)}, "only 0 valid samples"),
])
def test_bad_inputs_are_input_errors(kwargs, match):
    x, s, _ = _data()
    args = {"latents": x, "scores": s, "rng": np.random.default_rng(0), "ratio": 0.1} | kwargs
    with pytest.raises(InputError, match=match):
        train_boundary(args.pop("latents"), args.pop("scores"), **args)


def test_non_finite_latents_rejected():
    x, s, _ = _data()
    x[3, 2] = np.inf
    with pytest.raises(InputError, match="NaN/inf"):
        train_boundary(x, s, rng=np.random.default_rng(0))


# ------------------------------------------------------------------------------ CLI


def test_cli_train_from_files_is_reproducible_and_records_provenance(tmp_path):
    x, s, true = _data(n=300)
    s[:10] = np.nan
    np.save(tmp_path / "z.npy", x)
    np.save(tmp_path / "s.npy", s)
    runner = CliRunner()
    outs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}_boundary.npy"
        res = runner.invoke(cli, ["boundary", "train", "--latents", str(tmp_path / "z.npy"), "--scores",
                                  str(tmp_path / "s.npy"), "--attr", "age", "--seed", "3", "--ratio", "0.2",
                                  "-o", str(out)])
        assert res.exit_code == 0, res.output
        assert "validation accuracy" in res.output and str(out) in res.output
        outs.append(out)
    assert outs[0].read_bytes() == outs[1].read_bytes()
    b = np.load(outs[0], allow_pickle=False)
    assert b.shape == (1, 16) and b.dtype == np.float64 and float(b[0] @ true) > 0.9
    rec = json.loads(outs[0].with_suffix(".json").read_text())
    assert rec["sha256"] == hashlib.sha256(outs[0].read_bytes()).hexdigest()
    assert rec["attribute"] == "age" and rec["ratio"] == 0.2 and rec["split_seed"] == 3
    assert rec["training"]["num_invalid"] == 10 and 0.5 <= rec["accuracy"] <= 1
    assert rec["scores_file"].endswith("s.npy") and rec["sampler"] is None
    assert {"numpy", "scikit-learn", "torch", "latentpriv"} <= set(rec["versions"]) and rec["date"]


def test_cli_train_errors(tmp_path):
    x, s, _ = _data(n=100)
    np.save(tmp_path / "z.npy", x)
    np.save(tmp_path / "s.npy", s)
    runner = CliRunner()
    base = ["boundary", "train", "--attr", "age"]
    cases = [
        (["--latents", str(tmp_path / "z.npy"), "-o", str(tmp_path / "o.npy")], "go together"),
        (["--latents", str(tmp_path / "z.npy"), "--scores", str(tmp_path / "s.npy"), "-o", str(tmp_path / "z.npy")],
         "refusing to overwrite the input"),
        (["--latents", str(tmp_path / "z.npy"), "--scores", str(tmp_path / "s.npy"), "-o", str(tmp_path / "o.txt")],
         "must end in .npy"),
        (["-o", str(tmp_path / "o.npy")], "--model is required"),
        (["--latents", str(tmp_path / "none.npy"), "--scores", str(tmp_path / "s.npy"), "-o", str(tmp_path / "o.npy")],
         "no such file"),
    ]
    for args, match in cases:
        res = runner.invoke(cli, base + args)
        assert res.exit_code != 0 and "Error:" in res.output and match in res.output, res.output
        assert "Traceback" not in res.output
    assert np.array_equal(np.load(tmp_path / "z.npy"), x)  # the input was not touched


def test_cli_list_shows_interfacegan_and_project_boundaries(monkeypatch):
    monkeypatch.chdir(REPO)
    res = CliRunner().invoke(cli, ["boundary", "list", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.output)}
    for attr in DEMO_BOUNDARIES:
        r = rows[f"dcgan64_{attr}_boundary"]
        assert r["present"] and r["space"] == "z" and r["model"] == "dcgan64"
    assert rows["stylegan_ffhq_smile_w_boundary"]["space"] == "w"
    assert rows["stylegan_ffhq_smile_boundary"]["space"] == "z"
    text = CliRunner().invoke(cli, ["boundary", "list"]).output
    assert "dcgan64_smile_boundary" in text and "present" in text


@needs_face
def test_cli_samples_scores_and_reproduces_with_a_seed(tmp_path):
    """The full path: registry model -> samples -> dlib scores -> SVM; same seed, same bytes."""
    runner = CliRunner()
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name / "dcgan64_smile_boundary.npy"
        res = runner.invoke(cli, ["boundary", "train", "--model", "dcgan64", "--attr", "smile", "--num", "48",
                                  "--seed", "11", "--ratio", "0.3", "--device", "cpu", "-o", str(out)])
        assert res.exit_code == 0, res.output
        outs.append(out)
    assert outs[0].read_bytes() == outs[1].read_bytes()
    rec = json.loads(outs[0].with_suffix(".json").read_text())
    assert rec["model"] == "dcgan64" and rec["space"] == "z" and rec["sampler"]["seed"] == 11
    assert rec["sampler"]["num"] == 48 and "smile" in rec["scorer"]
    assert rec["model_info"]["sha256"] == assets.get_asset("dcgan64").sha256


# ------------------------------------------------------------------------------ the demo boundaries


@pytest.mark.parametrize("attr", DEMO_BOUNDARIES)
def test_committed_demo_boundaries_are_unit_normals_with_records(attr):
    from latentpriv.edit.boundaries import resolve_attr

    path = REPO / "boundaries" / f"dcgan64_{attr}_boundary.npy"
    b = np.load(path, allow_pickle=False)
    assert b.shape == (1, 100) and b.dtype == np.float64 and abs(np.linalg.norm(b) - 1) < 1e-9
    rec = json.loads(path.with_suffix(".json").read_text())
    assert rec["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert rec["model"] == "dcgan64" and rec["space"] == "z" and rec["attribute"] == attr
    assert rec["sampler"]["seed"] == 0 and rec["sampler"]["num"] >= 2000
    assert rec["model_info"]["sha256"] == assets.get_asset("dcgan64").sha256
    assert rec["accuracy"] >= (0.85 if attr == "smile" else 0.8)
    # privatize finds it by name
    found = resolve_attr(attr, model="dcgan64", space="z")
    assert np.allclose(found.vector, b[0])


@needs_face
def test_smile_boundary_generalises_to_fresh_samples(G):
    """Held-out check of the committed smile boundary: 400 new faces (seed 99, not the training seed),
    top/bottom 10 % by measured smile, classified by the sign of <z, n> + intercept: >= 0.85."""
    import torch

    from latentpriv.faces.attributes import score_images

    path = REPO / "boundaries" / "dcgan64_smile_boundary.npy"
    n = np.load(path)[0]
    intercept = json.loads(path.with_suffix(".json").read_text())["training"]["intercept"]
    z = G.sample_z(400, torch.Generator().manual_seed(99))
    with torch.no_grad():
        s = np.concatenate([score_images(G.to_uint8(G.synthesize(c)))["smile"] for c in z.split(100)])
    ok = np.isfinite(s)
    assert ok.mean() > 0.5
    zs, ss = z.numpy()[ok].astype(np.float64), s[ok]
    order = np.argsort(-ss)
    k = int(0.1 * len(ss))
    pos, neg = zs[order[:k]], zs[order[-k:]]
    acc = (np.sum(pos @ n + intercept > 0) + np.sum(neg @ n + intercept <= 0)) / (2 * k)
    assert acc >= 0.85, acc


@needs_face
def test_moving_along_the_smile_boundary_raises_the_smile_score(G):
    """40 fresh latents moved by alpha in (-2, -1, 0, 1, 2) along the committed smile normal. Tolerance:
    at every step the mean change of the measured smile score (faces found at both steps) is > +0.01
    (observed ~ +0.04 to +0.07 per unit), and >= 80 % of faces smile more at +2 than at -2."""
    import torch

    from latentpriv.faces.attributes import score_images

    n = torch.from_numpy(np.load(REPO / "boundaries" / "dcgan64_smile_boundary.npy")).float()
    z = G.sample_z(40, torch.Generator().manual_seed(1234))
    alphas = (-2.0, -1.0, 0.0, 1.0, 2.0)
    with torch.no_grad():
        S = np.stack([score_images(G.to_uint8(G.synthesize(z + a * n)))["smile"] for a in alphas])
    for k in range(len(alphas) - 1):
        both = np.isfinite(S[k]) & np.isfinite(S[k + 1])
        assert both.sum() >= 10, f"too few faces found at alpha {alphas[k]}..{alphas[k + 1]}"
        step = float(np.mean(S[k + 1, both] - S[k, both]))
        assert step > 0.01, (alphas[k], step)
    ends = np.isfinite(S[0]) & np.isfinite(S[-1])
    assert np.mean(S[-1, ends] > S[0, ends]) >= 0.8


def test_sample_and_score_does_not_depend_on_the_batch_size(G):
    import torch

    from latentpriv.edit.training import sample_and_score

    def brightness(images):  # a stand-in scorer: mean intensity, NaN for the darkest third
        m = images.reshape(len(images), -1).mean(1).astype(np.float64)
        return {"bright": np.where(m > np.quantile(m, 0.33), m, np.nan) if len(m) > 2 else m}

    seen = []
    a_lat, a_sc = sample_and_score(G, brightness, 20, generator=torch.Generator().manual_seed(4), batch_size=7,
                                   progress=seen.append)
    b_lat, b_sc = sample_and_score(G, lambda im: {"bright": im.reshape(len(im), -1).mean(1)}, 20,
                                   generator=torch.Generator().manual_seed(4), batch_size=64)
    assert seen == [7, 7, 6]
    assert a_lat.shape == (20, 100) and a_lat.dtype == np.float32
    assert np.array_equal(a_lat, b_lat)
    assert np.array_equal(a_lat, G.sample_z(20, torch.Generator().manual_seed(4)).numpy())
    finite = np.isfinite(a_sc["bright"])
    assert 0 < finite.sum() < 20
    np.testing.assert_allclose(a_sc["bright"][finite], b_sc["bright"][finite], atol=0.05)
    with pytest.raises(InputError, match="space 'wp'"):
        sample_and_score(G, brightness, 4, generator=torch.Generator(), space="wp")


def test_attribute_names_map_to_scorers(tmp_path):
    from latentpriv.edit.training_run import scorer_for

    assert scorer_for("pose")[0] == "yaw" and scorer_for("smile")[0] == "smile"
    with pytest.raises(InputError, match="no scorer"):
        scorer_for("age")
    res = CliRunner().invoke(cli, ["boundary", "train", "--model", "dcgan64", "--attr", "age", "-o",
                                   str(tmp_path / "a.npy")])
    assert res.exit_code == 2 and "Error: --attr age: no scorer" in res.output

"""``latentpriv attack``: the accuracy bound, the adversaries, and the command's outputs.

Seeded noise everywhere (``--seed-noise``) so that every number is reproducible: these tests measure the
harness, not a release.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from latentpriv.cli import cli
from latentpriv.evaluate.attack import AttackData, accuracy_bound, fit_threshold, run_attack
from latentpriv.faces import available
from latentpriv.privacy.mechanisms import privatize, split_basis


def test_accuracy_bound_values():
    e = math.e
    assert accuracy_bound(1.0) == pytest.approx(e / (1 + e))
    assert accuracy_bound(1.0, 1e-3) == pytest.approx((e + 1e-3) / (1 + e))
    assert accuracy_bound(2.0, 0.1) == pytest.approx((math.exp(2) + 0.1) / (1 + math.exp(2)))
    # an unbalanced label: always guessing the larger class can beat e^eps / (1 + e^eps)
    assert accuracy_bound(0.1, majority=0.8) == pytest.approx(0.8)
    assert accuracy_bound(0.1, 0.01, majority=0.8) == pytest.approx(0.8 + 0.2 * 0.01)
    assert accuracy_bound(1000.0) == 1.0          # no overflow
    assert accuracy_bound(None) is None           # no guarantee, no bound
    assert 0.5 < accuracy_bound(1e-9) < 0.5 + 1e-9


def test_fit_threshold_finds_the_separating_cut_and_its_orientation():
    x = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    t, upper = fit_threshold(x, np.array([0, 0, 0, 1, 1, 1], bool))
    assert upper and 0.3 < t < 0.7
    t, upper = fit_threshold(x, np.array([1, 1, 1, 0, 0, 0], bool))
    assert not upper and 0.3 < t < 0.7
    t, upper = fit_threshold(np.ones(4), np.array([1, 1, 0, 1], bool))   # no cut: the majority everywhere
    assert ((np.ones(4) > t) if upper else (np.ones(4) <= t)).all()


def _correlated(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Latents [n, 6] whose coordinate 0 is strongly correlated with coordinate 1 (a residual direction)."""
    cov = np.eye(6)
    cov[0, 1] = cov[1, 0] = 0.9
    return rng.multivariate_normal(np.zeros(6), cov, size=n), cov


@pytest.mark.parametrize("oblique", [False, True])
def test_coordinate_adversary_within_bound_residual_leaks_unless_decorrelated(oblique):
    rng = np.random.default_rng(0)
    test, cov = _correlated(400, rng)
    train, _ = _correlated(400, rng)
    dirs = np.eye(6)[:1]
    covariance = cov if oblique else None

    noise_rng = np.random.default_rng(1)

    def release(latent, eps):
        r = privatize(latent, dirs, epsilon=eps, seed=noise_rng, covariance=covariance)
        return np.asarray(r.latent), r.record

    data = AttackData(test=test, train=train, directions=dirs, centers=np.zeros(1), attributes=["a"],
                      split_basis=split_basis(dirs, covariance))
    out = run_attack(data, epsilons=[0.25, 1.0, 4.0], release=release,
                     render=lambda x: np.zeros((len(x), 16, 16, 3), np.uint8), networks=None, faces=False)
    assert [r["epsilon"] for r in out["results"]] == [0.25, 1.0, 4.0]
    for r in out["results"]:
        coord = r["adversaries"]["coordinate"]
        assert coord["n"] == 400 and coord["ci"][0] <= coord["accuracy"] <= coord["ci"][1]
        assert coord["ci"][0] <= r["bound"]
        assert r["adversaries"]["image"]["accuracy"] is None      # constant renders: no features, said so
    low = out["results"][0]
    resid = low["adversaries"]["residual"]
    if oblique:   # under Sigma the residual is independent of the coordinate (Gaussian): chance level
        assert resid["ci"][0] <= low["bound"]
    else:         # the orthogonal split leaves the correlated coordinate in the residual: beats the bound
        assert resid["ci"][0] > low["bound"]
    assert "faces" in out["skipped"] and "lpips" in out["skipped"]


def _run(tmp_path, *extra):
    args = ["attack", "--model", "dcgan64", "--attr", "smile", "--num", "40", "--seed", "3", "--seed-noise",
            "--no-decorrelate", "-o", str(tmp_path / "out"), *extra]
    return CliRunner().invoke(cli, args)


def test_cli_outputs_have_the_issue_shape(tmp_path):
    res = _run(tmp_path, "--epsilons", "1", "--ledger", str(tmp_path / "ledger.jsonl"))
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "out" / "attack.json").read_text())
    for key in ("model", "attributes", "mechanism", "num", "results"):
        assert key in data
    assert data["model"] == "dcgan64" and data["attributes"] == ["smile"] and data["num"] == 40
    assert data["release_private"] is False and data["noise"]["seeded"] is True   # --seed-noise says so
    assert [r["epsilon"] for r in data["results"]] == [1.0]
    for r in data["results"]:
        assert set(r) >= {"epsilon", "bound", "adversaries", "identity", "lpips_median"}
        assert set(r["adversaries"]) == {"coordinate", "residual", "image"}
        for adv in r["adversaries"].values():
            lo, hi = adv["ci"]
            assert 0 <= lo <= adv["accuracy"] <= hi <= 1
        assert r["adversaries"]["coordinate"]["ci"][0] <= r["bound"]
        assert set(r["identity"]) >= {"same_person_rate", "distance_median", "reid_top1"}
        assert r["lpips_median"] > 0
        if available():
            assert r["identity"]["pairs_with_faces"] > 0 and r["identity"]["distance_median"] is not None
            assert "perceived" in r["adversaries"]["coordinate"]
        else:   # loudly skipped, never silently
            assert r["identity"]["same_person_rate"] is None and "faces" in data["skipped"]
            assert "skipped faces" in res.output
    rows = list(csv.DictReader((tmp_path / "out" / "attack.csv").open()))
    assert len(rows) == 1 and float(rows[0]["coordinate_accuracy"]) == data["results"][0]["adversaries"][
        "coordinate"]["accuracy"]
    assert (tmp_path / "out" / "attack.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the ledger was asked for: the test faces' releases are accounted in it
    assert (tmp_path / "ledger.jsonl").stat().st_size > 0
    # outputs are not replaced without --overwrite
    res = _run(tmp_path, "--epsilons", "1", "--no-faces", "--no-lpips")
    assert res.exit_code != 0 and "already exists" in res.output


def test_cli_seed_mechanism_has_no_bound_and_errors_are_one_line(tmp_path):
    res = _run(tmp_path, "--epsilons", "0.5,4", "--mechanism", "seed", "--delta", "1e-5", "--no-faces",
               "--no-lpips")
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "out" / "attack.json").read_text())
    assert [r["epsilon"] for r in data["results"]] == [0.5, 4.0]
    assert all(r["bound"] is None for r in data["results"]) and data["release_private"] is False
    assert data["skipped"]["faces"].startswith("faces disabled") and data["results"][0]["lpips_median"] is None
    assert "NO differential-privacy guarantee" in res.output
    res = CliRunner().invoke(cli, ["attack", "--model", "dcgan64", "--num", "40", "-o", str(tmp_path / "x")])
    assert res.exit_code != 0 and "--attr" in res.output
    res = _run(tmp_path / "y", "--epsilons", "0,1")
    assert res.exit_code != 0 and "positive" in res.output


def test_cli_attacks_a_folder_of_latents(tmp_path):
    """--latents DIR: the folder's .npy files (sorted, hidden ones skipped) are the test faces, at most --num."""
    from latentpriv.io import save_npy

    rng = np.random.default_rng(5)
    folder = tmp_path / "lat"
    save_npy(folder / "b.npy", rng.normal(size=(30, 100)).astype(np.float32))
    save_npy(folder / "a.npy", rng.normal(size=(20, 100)).astype(np.float32))
    save_npy(folder / ".hidden.npy", rng.normal(size=(3, 100)).astype(np.float32))
    res = _run(tmp_path, "--epsilons", "2", "--latents", str(folder), "--train-num", "40", "--no-faces",
               "--no-lpips")
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "out" / "attack.json").read_text())
    assert data["source"] == {"latents": str(folder), "files": [str(folder / "a.npy"), str(folder / "b.npy")]}
    assert data["num"] == 40 and data["num_train"] == 40 and data["space"] == "z"
    assert "files" not in data   # the record's keys are those attack.json always had
    res = _run(tmp_path / "empty", "--latents", str(tmp_path / "out"))
    assert res.exit_code != 0 and "no .npy latents" in res.output and "Traceback" not in res.output


def test_seed_mechanism_with_decorrelate_is_refused_before_anything_runs(tmp_path, monkeypatch):
    """As in privatize (runs.privatize.release_decorrelate): an explicit --decorrelate with --mechanism seed is an
    error, raised before the generator is loaded or the output folder is touched."""
    from latentpriv.errors import ConfigError
    from latentpriv.evaluate import attack_run

    def never(*a, **k):
        raise AssertionError("loaded the generator")

    monkeypatch.setattr("latentpriv.models.render.load_generator_for", never)
    s = attack_run.AttackSettings(model="dcgan64", epsilons=[1.0], attrs=["smile"], mechanism="seed", decorrelate=True)
    with pytest.raises(ConfigError, match="drop --decorrelate"):
        attack_run.run_attack_files(tmp_path / "out", s)
    assert not (tmp_path / "out").exists()

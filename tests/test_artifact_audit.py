"""The artifact audit: its attackers break a leaky write-back release, and the library's release survives them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from latentpriv.cli import cli
from latentpriv.errors import InputError
from latentpriv.io import save_npy
from latentpriv.privacy.artifact_audit import (
    audit_artifact,
    default_pairs,
    make_pair,
    npy_bytes,
)
from latentpriv.privacy.mechanisms import calibrate, release_coordinates
from latentpriv.privacy.noise import SeededNoise


def leaky_release(batch, pair, noise):
    """The write-back construction of issue 11: ``out = fl_in(w + (atilde - a) n)`` on the rows as given
    (not re-orthonormalised), so the output keeps the input's rounding."""
    x = np.asarray(batch, dtype=np.float64)
    rows = np.asarray(pair.directions, dtype=np.float64)
    rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    calib = calibrate(pair.mechanism, epsilon=pair.epsilon, delta=pair.delta, clip_radius=pair.clip_radius,
                      k=len(rows), grid_slack=noise.grid_slack())
    a = x @ rows.T
    atilde = release_coordinates(a.reshape(len(x), -1), calib, np.full(len(rows), pair.center), noise)
    out = x + (atilde - a) @ rows
    return out.astype(batch.dtype), {"epsilon": pair.epsilon, "delta": 0.0, "guarantee": {"type": "pure-dp"}}


def test_npy_bytes_are_the_writers_bytes(tmp_path):
    for arr in (np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((4, 2, 3))):
        save_npy(tmp_path / "x.npy", arr)
        assert (tmp_path / "x.npy").read_bytes() == npy_bytes(arr)


def test_attackers_break_the_leaky_write_back_release():
    """Power: on fl32(w + (atilde - a) n) the float attackers prove epsilon far above the claim of 1."""
    rng = np.random.default_rng(3)
    pairs = [
        make_pair("f32 +-1", rng, dim=64, surface="api"),
        make_pair("10 vs 50", rng, dim=64, a0=10.0, a1=50.0, surface="api"),
        make_pair("near-orthonormal f64", rng, dim=64, k=3, moved=1, dtype=np.float64, near_orthonormal=5e-6,
                  surface="api"),
    ]
    res = audit_artifact(pairs, trials=400, lattice_trials=400, release=leaky_release, noise=SeededNoise(0))
    by = {p.pair["name"]: {a.attacker: a.epsilon_lb for a in p.attacks} for p in res.pairs}
    assert by["f32 +-1"]["sieve"] > 2.0 and by["f32 +-1"]["replay"] > 2.0
    assert by["10 vs 50"]["sieve"] > 2.0
    assert by["f32 +-1"]["coordinate"] < 1.0            # the coordinate itself is fine: the leak is in the bytes
    assert by["near-orthonormal f64"]["grid"] > 2.0
    assert not res.passed and res.epsilon_lb > 2.0
    for p in res.pairs:  # one file per release unless batching gives the same bytes
        assert p.checks["headers_equal"] and p.checks["rows_per_release"] == (1000 if p.checks["batch_consistent"]
                                                                               is True else 1)


def test_a_refused_input_is_reported_not_raised():
    def refuse(batch, pair, noise):
        raise InputError("float16 is refused")

    pair = make_pair("f16", np.random.default_rng(0), dim=16, dtype=np.float16, surface="api")
    res = audit_artifact([pair], trials=40, lattice_trials=40, release=refuse, noise=SeededNoise(0))
    (p,) = res.pairs
    assert p.status == "refused" and "float16" in p.refusal and p.passed and res.passed


def test_refusing_one_input_only_fails_the_pair():
    def refuse_large(batch, pair, noise):
        if np.linalg.norm(batch[0]) > 100:
            raise InputError("norm above max_norm")
        return leaky_release(batch, pair, noise)

    pair = make_pair("10 vs 600", np.random.default_rng(0), dim=16, a0=10.0, a1=600.0, surface="api")
    res = audit_artifact([pair], trials=40, lattice_trials=40, release=refuse_large, noise=SeededNoise(0))
    assert res.pairs[0].status == "refused-one-side" and not res.passed


def test_validation():
    with pytest.raises(ValueError):
        audit_artifact([], trials=10)
    with pytest.raises(ValueError):
        audit_artifact([], attackers=["psychic"])


def test_cli_artifact_quick_library_release_within_claim(tmp_path):
    """The library's release, through the CLI's reader and writer, with OpenDP noise: every audited pair's
    bound <= its claimed total epsilon (99.9 % confidence: OpenDP cannot be seeded), output float32, and
    the float16 file and the W+ layer subset are refused."""
    report = tmp_path / "r.json"
    r = CliRunner().invoke(cli, ["audit", "artifact", "--quick", "--trials", "200", "--lattice-trials", "200",
                                 "--confidence", "0.999", "-o", str(report)], catch_exceptions=False)
    res = json.loads(report.read_text())
    assert r.exit_code == 0, r.output
    assert res["result"] == "PASS" and "artifact audit" in r.output
    assert len(res["pairs"]) == len(default_pairs(quick=True))
    status = {p["pair"]["name"]: p for p in res["pairs"]}
    assert status["W float16 file via the CLI, a = +-1"]["status"] == "refused"
    assert status["W+ mixed layers, --layers 0-1"]["status"] == "refused"
    for p in res["pairs"]:
        if p["status"] == "audited":
            assert p["epsilon_lb"] <= p["claimed_epsilon"]
            assert p["out_dtype"] == "float32" and p["checks"]["headers_equal"]


def test_cli_modes_refuse_each_others_options():
    r = CliRunner().invoke(cli, ["audit", "--mechanism", "laplace", "--seed", "0", "--trials", "1000"])
    assert r.exit_code == 2 and "--epsilon" in r.output
    r = CliRunner().invoke(cli, ["audit", "artifact", "--quick", "--seed", "0"])
    assert r.exit_code == 2 and "do not apply" in r.output
    r = CliRunner().invoke(cli, ["audit", "--epsilon", "1", "--quick"])
    assert r.exit_code == 2 and "audit artifact" in r.output

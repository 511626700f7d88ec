"""One accounted release (privacy/release.py): refusal before any draw, ledger line before the outputs,
--force warns, the record carries the guarantee but never the true coordinate."""

from __future__ import annotations

import json

import numpy as np
import pytest

from latentpriv.errors import PrivacyBudgetError
from latentpriv.privacy.ledger import Ledger
from latentpriv.privacy.noise import OpenDPNoise, SeededNoise
from latentpriv.privacy.release import ReleaseParams, accounted_release


def _setup(tmp_path, n=2, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(n, 16)).astype(np.float32)
    d = rng.normal(size=(1, 16))
    d /= np.linalg.norm(d)
    return w, d, Ledger(tmp_path / "ledger.jsonl")


def test_release_appends_the_ledger_before_commit_and_returns_totals(tmp_path):
    w, d, ledger = _setup(tmp_path)
    seen = {}

    def commit(latent, record):
        # called under the lock, after the ledger line: the line is already on disk
        seen["lines"] = (tmp_path / "ledger.jsonl").read_text().splitlines()
        seen["shape"] = latent.shape

    rel = accounted_release(w, d, params=ReleaseParams(epsilon=1.0), noise=OpenDPNoise(), ledger=ledger,
                            attributes=["a"], max_epsilon=3.0, record_info={"input": "x.npy"},
                            ledger_info={"input_file": "x.npy"}, commit=commit)
    assert len(seen["lines"]) == 2 and seen["shape"] == (2, 16)
    entries = [json.loads(line) for line in seen["lines"]]
    assert {e["release_id"] for e in entries} == {rel.record["release_id"]}
    assert all(e["input_file"] == "x.npy" and e["attributes"] == ["a"] and not e["forced"] for e in entries)
    assert rel.record["input"] == "x.npy" and rel.record["ledger"] == str(ledger.path)
    assert rel.worst_epsilon == pytest.approx(1.0) and len(rel.keys) == 2
    # the released rows moved along d only, and the record does not hold the true coordinates
    diff = rel.latent.astype(np.float64) - w
    assert np.allclose(diff - (diff @ d.T) @ d, 0, atol=1e-5)
    text = json.dumps(rel.record)
    for coord in (w @ d.T).ravel():
        assert f"{coord:.6f}" not in text


def test_refusal_draws_and_writes_nothing(tmp_path):
    w, d, ledger = _setup(tmp_path, n=1)
    params = ReleaseParams(epsilon=1.5)
    accounted_release(w, d, params=params, noise=OpenDPNoise(), ledger=ledger, max_epsilon=2.0)

    class NoDraw(OpenDPNoise):
        def laplace(self, *a, **k):  # pragma: no cover - must not be reached
            raise AssertionError("noise drawn for a refused release")

    committed = []
    with pytest.raises(PrivacyBudgetError, match="--force"):
        accounted_release(w, d, params=params, noise=NoDraw(), ledger=ledger, max_epsilon=2.0,
                          commit=lambda *a: committed.append(a))
    assert committed == [] and len(ledger.entries()) == 1


def test_force_warns_and_marks_the_ledger(tmp_path):
    w, d, ledger = _setup(tmp_path, n=1)
    msgs = []
    for _ in range(2):
        rel = accounted_release(w, d, params=ReleaseParams(epsilon=1.5), noise=SeededNoise(1), ledger=ledger,
                                max_epsilon=2.0, force=True, warn=msgs.append)
    assert len(msgs) == 1 and "past --max-epsilon 2" in msgs[0]
    assert [e["forced"] for e in ledger.entries()] == [True, True]
    assert rel.worst_epsilon == pytest.approx(3.0) and rel.record["for_release"] is False

"""One accounted release (privacy/release.py): refusal before any draw, a pending charge committed only once
the output is written, failed writes cost nothing, profiles, the record never holds the true coordinate."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest

from latentpriv.errors import InputError, PrivacyBudgetError
from latentpriv.io import save_npy
from latentpriv.privacy.ledger import Ledger
from latentpriv.privacy.noise import OpenDPNoise, SeededNoise
from latentpriv.privacy.release import ReleaseParams, accounted_release, check_ledger_path


def _setup(tmp_path, n=2, seed=0, k=2):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(n, 16)).astype(np.float32)
    d = rng.normal(size=(k, 16))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return w, d, Ledger(tmp_path / "ledger.sqlite")


def _states(ledger):
    return [r["state"] for r in ledger.releases()]


def test_release_charges_pending_then_commits_after_the_write(tmp_path):
    w, d, ledger = _setup(tmp_path)
    seen = {}

    def commit(latent, record):
        seen["states"] = _states(ledger)             # the charge is filed (pending) before the write
        seen["shape"] = latent.shape
        save_npy(tmp_path / "out.npy", latent)

    rel = accounted_release(w, d[:1], params=ReleaseParams(epsilon=1.0), noise=OpenDPNoise(), ledger=ledger,
                            attributes=["a"], max_epsilon=3.0, record_info={"input": "x.npy"},
                            ledger_info={"input_file": "x.npy"}, commit=commit, output=tmp_path / "out.npy")
    assert seen["states"] == ["pending"] and seen["shape"] == (2, 16)
    (r,) = ledger.releases()
    assert r["state"] == "committed" and r["release_id"] == rel.record["release_id"]
    assert r["info"]["input_file"] == "x.npy" and r["info"]["attributes"] == ["a"] and not r["forced"]
    assert r["output"] == str((tmp_path / "out.npy").resolve()) and len(r["output_sha256"]) == 64
    assert rel.record["input"] == "x.npy" and rel.record["ledger"] == str(ledger.path)
    assert rel.worst_epsilon == pytest.approx(rel.record["spend"]["epsilon"]) and len(rel.keys) == 2
    diff = rel.latent.astype(np.float64) - w         # moved along d (up to the residual dither)
    assert np.abs(diff - (diff @ d[:1].T) @ d[:1]).max() < 0.5
    text = json.dumps(rel.record)
    for coord in (w @ d[:1].T).ravel():
        assert f"{coord:.6f}" not in text
    for key in rel.keys:
        assert key not in text


def test_refusal_draws_and_writes_nothing(tmp_path):
    w, d, ledger = _setup(tmp_path, n=1)
    params = ReleaseParams(epsilon=1.5)
    accounted_release(w, d[:1], params=params, noise=OpenDPNoise(), ledger=ledger, max_epsilon=2.0)

    class NoDraw(OpenDPNoise):
        def laplace(self, *a, **k):  # pragma: no cover - must not be reached
            raise AssertionError("noise drawn for a refused release")

    committed = []
    with pytest.raises(PrivacyBudgetError, match="--force"):
        accounted_release(w, d[:1], params=params, noise=NoDraw(), ledger=ledger, max_epsilon=2.0,
                          commit=lambda *a: committed.append(a))
    assert committed == [] and _states(ledger) == ["committed"]


def test_seeded_releases_make_the_face_unbounded_and_force_warns(tmp_path):
    w, d, ledger = _setup(tmp_path, n=1)
    msgs = []
    rel = accounted_release(w, d[:1], params=ReleaseParams(epsilon=1.5), noise=SeededNoise(1), ledger=ledger,
                            max_epsilon=20.0, force=True, warn=msgs.append)
    assert rel.record["for_release"] is False and rel.worst_epsilon is None
    assert len(msgs) == 1 and "past --max-epsilon 20" in msgs[0] and "seeded" in msgs[0]
    with pytest.raises(PrivacyBudgetError, match="seeded"):
        accounted_release(w, d[:1], params=ReleaseParams(epsilon=0.1), noise=OpenDPNoise(), ledger=ledger,
                          max_epsilon=20.0)
    assert [r["forced"] for r in ledger.releases()] == [True]


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS])
def test_a_failed_write_cancels_the_charge(tmp_path, err):
    w, d, ledger = _setup(tmp_path, n=1)

    def commit(latent, record):
        raise OSError(err, "simulated", str(tmp_path / "out.npy"))

    with pytest.raises(InputError, match="nothing was charged"):
        accounted_release(w, d[:1], params=ReleaseParams(epsilon=1.0), noise=OpenDPNoise(), ledger=ledger,
                          max_epsilon=1.5, commit=commit, output=tmp_path / "out.npy")
    assert _states(ledger) == ["cancelled"] and ledger.verify() == []
    # the budget is intact: the next attempt is not refused
    accounted_release(w, d[:1], params=ReleaseParams(epsilon=1.0), noise=OpenDPNoise(), ledger=ledger,
                      max_epsilon=1.5)


def test_an_unwritable_output_folder_is_refused_before_anything_is_charged(tmp_path):
    w, d, ledger = _setup(tmp_path, n=1)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="cannot write there"):
        accounted_release(w, d[:1], params=ReleaseParams(epsilon=1.0), noise=OpenDPNoise(), ledger=ledger,
                          output=tmp_path / "file" / "out.npy")
    assert _states(ledger) == []


def test_smile_then_age_is_refused_or_forced_unbounded(tmp_path):
    w, d, ledger = _setup(tmp_path, n=1)
    kw = dict(params=ReleaseParams(epsilon=1.0), noise=OpenDPNoise(), ledger=ledger, max_epsilon=5.0, model="m",
              space="w")
    accounted_release(w, d[:1], attributes=["smile"], **kw)
    accounted_release(w + np.float32(1e-7), d[:1], attributes=["smile"], **kw)    # the same face, same profile
    with pytest.raises(PrivacyBudgetError, match="different protection profiles"):
        accounted_release(w, d[1:], attributes=["age"], **kw)
    rel = accounted_release(w, d[1:], attributes=["age"], force=True, warn=lambda m: None, **kw)
    (t,) = rel.totals.values()
    assert t.epsilon is None and "smile" in t.reason and "age" in t.reason
    assert _states(ledger) == ["committed"] * 3


def test_deferred_commit_and_crash_recovery(tmp_path):
    w, d, ledger = _setup(tmp_path, n=1)
    out = tmp_path / "o.npy"
    rel = accounted_release(w, d[:1], params=ReleaseParams(epsilon=1.0), noise=OpenDPNoise(), ledger=ledger,
                            output=out, defer=True)
    assert _states(ledger) == ["pending"]
    save_npy(out, rel.latent)                      # the write happened, then the process "died"
    ledger.connect().execute("UPDATE releases SET pid = 999999999")
    assert Ledger(ledger.path).recover().committed == [rel.record["release_id"]]
    rel.cancel()                                   # too late: a committed charge stays committed
    assert _states(ledger) == ["committed"]


def test_a_ledger_that_is_an_input_or_output_is_refused(tmp_path):
    led = Ledger(tmp_path / "x.npy")
    with pytest.raises(InputError, match="is also an output"):
        check_ledger_path(led, inputs=[tmp_path / "w.npy"], outputs=[tmp_path / "x.npy"])
    with pytest.raises(InputError, match="is also an input"):
        check_ledger_path(led, inputs=[tmp_path / "x.npy"])
    with pytest.raises(InputError, match="lies in the run's folder"):
        check_ledger_path(led, folders=[tmp_path])
    check_ledger_path(led, inputs=[tmp_path / "a.npy"], outputs=[tmp_path / "b.npy"], folders=[tmp_path / "out"])

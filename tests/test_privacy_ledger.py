"""The privacy ledger (SQLite): composition, constraints, profiles, face keys, import/export, recovery,
concurrent processes."""

from __future__ import annotations

import io
import json
import math
import multiprocessing as mp
import sqlite3

import numpy as np
import pytest

from latentpriv.errors import InputError, PrivacyBudgetError
from latentpriv.privacy.accounting import zcdp_to_dp
from latentpriv.privacy.ledger import (
    Ledger,
    Profile,
    Spend,
    default_ledger_path,
    face_keys,
    latent_key,
    legacy_key,
    legacy_ledger_path,
    public_set,
    spend_from_record,
    total_of,
)
from latentpriv.privacy.mechanisms import privatize

LAP = Spend("laplace", 1.0)
GAUSS = Spend("gaussian", 1.0, 1e-5, 0.05)
SMILE = Profile.make("coordinate", {"d": "smile"}, "smile")
AGE = Profile.make("coordinate", {"d": "age"}, "age")
SECRET = b"k" * 32


def _faces(led: Ledger, latent, directions=(), **kw):
    return led.keys_for(np.asarray(latent), family="m:w", directions=directions, **kw)[0]


def test_default_path_and_the_old_jsonl(monkeypatch, tmp_path):
    monkeypatch.setenv("LATENTPRIV_LEDGER", str(tmp_path / "x.sqlite"))
    assert default_ledger_path() == tmp_path / "x.sqlite"
    monkeypatch.delenv("LATENTPRIV_LEDGER")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_ledger_path() == tmp_path / "latentpriv" / "ledger.sqlite"
    legacy_ledger_path().parent.mkdir(parents=True)
    legacy_ledger_path().write_text('{"input_sha256": "' + "a" * 64 + '", "mechanism": "laplace", "epsilon": 1.0}\n')
    with pytest.raises(InputError, match="ledger import"):   # a 0.1 ledger at the old default: import it first
        Ledger().connect()
    Ledger(migrating=True).import_jsonl(legacy_ledger_path())
    Ledger().connect()
    # a JSONL file given as --ledger is named as such
    with pytest.raises(InputError, match="0.1 JSONL ledger"):
        Ledger(legacy_ledger_path()).connect()


def test_composition_rules():
    assert total_of("k", [LAP, LAP, Spend("rr", 0.5)]).epsilon == pytest.approx(2.5)
    t = total_of("k", [GAUSS] * 10)  # zCDP: 10 gaussian releases compose to less than 10 x epsilon
    assert t.rho == pytest.approx(0.5) and t.delta == pytest.approx(1e-4)
    assert t.epsilon == pytest.approx(zcdp_to_dp(0.5, 1e-4)) and t.epsilon < 10.0
    assert total_of("k", [GAUSS]).epsilon == pytest.approx(min(1.0, zcdp_to_dp(0.05, 1e-5)))
    mixed = total_of("k", [LAP, GAUSS, GAUSS])
    assert mixed.epsilon == pytest.approx(1.0 + min(2.0, zcdp_to_dp(0.1, 2e-5)))
    assert total_of("k", [LAP, Spend("seed", None, 1e-5)]).epsilon is None
    # the residual dither adds by basic composition on top of the zCDP bound
    dith = Spend("gaussian", 1.01, 1e-5 + 1e-10, 0.05, 0.01, 1e-10)
    t = total_of("k", [dith] * 10)
    assert t.epsilon == pytest.approx(min(10.1, zcdp_to_dp(0.5, 1e-4) + 0.1))


def test_check_constraints_reject_nan_infinite_and_negative_spends(tmp_path):
    for bad in (Spend("laplace", float("nan")), Spend("laplace", -math.inf), Spend("laplace", -10.0),
                Spend("laplace", math.inf), Spend("gaussian", 1.0, 1.0, 0.1), Spend("gaussian", 1.0, 0.1, -1.0)):
        with pytest.raises(InputError):
            bad.validate()
    led = Ledger(tmp_path / "l.sqlite")
    con = led.connect()
    con.execute("INSERT INTO profiles VALUES ('p', 'coordinate', 'p', '{}')")
    base = ("INSERT INTO releases (release_id, state, time, updated, mechanism, epsilon, delta, profile, forced) "
            "VALUES (?, 'committed', 't', 't', 'laplace', ?, ?, 'p', 0)")
    for i, (eps, delta) in enumerate([(-10.0, 0.0), (math.inf, 0.0), (-math.inf, 0.0), (1.0, 1.0), (1.0, -0.1),
                                      (None, 0.0)]):   # None: NaN reaches SQLite as NULL, refused without a reason
        with pytest.raises(sqlite3.IntegrityError):
            con.execute(base, (f"r{i}", eps, delta))
    assert led.verify() == []


def test_reserve_commit_totals_and_refusal(tmp_path):
    led = Ledger(tmp_path / "sub" / "ledger.sqlite")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 64))
    fa, fb = _faces(led, [a, b])
    led.commit(led.reserve([fa, fb], LAP, SMILE))
    led.commit(led.reserve([fa], LAP, SMILE, max_epsilon=2.0))
    totals = led.totals_for([fa, fb])
    assert totals[fa.primary.hex()].epsilon == 2.0 and totals[fb.primary.hex()].epsilon == 1.0
    with pytest.raises(PrivacyBudgetError, match="spent epsilon 2 in 2 release"):
        led.reserve([fa, fb], LAP, SMILE, max_epsilon=2.5)
    assert len(led.releases()) == 2                         # nothing filed on refusal
    res = led.reserve([fa, fb], LAP, SMILE, max_epsilon=2.5, force=True)
    assert [t.key for t in res.over] == [fa.primary.hex()]
    led.commit(res)
    assert [r["forced"] for r in led.releases()] == [False, False, True]
    # duplicate rows of one face in one release count twice
    with pytest.raises(PrivacyBudgetError):
        led.reserve([fb, fb], LAP, SMILE, max_epsilon=3.5)
    # pending charges count; cancelled ones do not
    p = led.reserve([fb], LAP, SMILE)
    assert led.totals_for([fb])[fb.primary.hex()].epsilon == 3.0 and led.totals_for([fb])[fb.primary.hex()].pending
    led.cancel(p)
    assert led.totals_for([fb])[fb.primary.hex()].epsilon == 2.0
    with pytest.raises(PrivacyBudgetError, match="unbounded"):
        led.reserve([fb], Spend("seed", None, 1e-5, unbounded="seed"), SMILE, max_epsilon=100.0)


def test_only_one_profile_composes(tmp_path):
    led = Ledger(tmp_path / "l.sqlite")
    (f,) = _faces(led, np.ones(32))
    led.commit(led.reserve([f], LAP, SMILE, max_epsilon=5))
    with pytest.raises(PrivacyBudgetError, match="different protection profiles: smile .* age"):
        led.reserve([f], LAP, AGE, max_epsilon=5)
    led.commit(led.reserve([f], LAP, AGE, max_epsilon=5, force=True))
    t = led.totals_for([f])[f.primary.hex()]
    assert t.epsilon is None and "smile" in t.reason and dict(t.profiles) == {"smile": 1, "age": 1}
    rr = Profile.make("label", {"d": "smile"}, "smile, label only")
    assert rr.id != SMILE.id


def test_face_keys_follow_the_face():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(1, 512)).astype(np.float32)
    n = rng.normal(size=(3, 512))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    sets = [public_set(n[:1]), public_set(n[1:2])]

    def key(x, store=0, **kw):
        return face_keys(np.asarray(x), secret=SECRET, family="m:w", public_sets=sets, store_set=sets[store][0],
                         **kw)[0]

    base = key(w)
    flipped = w.copy().view(np.uint32)
    flipped[0, 7] ^= 1                                          # one flipped low bit
    variants = [w + np.float32(1e-7), flipped.view(np.float32), w.astype(np.float64), w.astype(np.float16),
                w[0], np.repeat(w[:, None], 18, axis=1)]          # dtype, shape, W+ tiling (layer mean)
    for v in variants:
        k = key(v, space="wp" if np.ndim(v) == 3 else None)
        assert set(base.store) & set(k.lookup) and set(k.store) & set(base.lookup)
    # neighbours along a protected (public) direction share that view's key; smile then age share the full view
    moved = w + 2.5 * n[0]
    assert set(key(moved).lookup) & set(base.store)
    assert set(key(w, store=1).store) & set(base.lookup)
    # another face, another secret or another family: no shared key
    other = key(rng.normal(size=(1, 512)))
    assert not set(other.lookup) & set(base.store)
    k2 = face_keys(w, secret=b"x" * 32, family="m:w", public_sets=sets)[0]
    assert not set(k2.lookup) & set(base.store)
    k3 = face_keys(w, secret=SECRET, family="m:z", public_sets=sets)[0]   # only the exact bytes' (0.1) key links
    assert set(k3.lookup) & set(base.store) == {legacy_key(SECRET, latent_key(w[0]))}
    # a subject key ignores the latent
    s1 = face_keys(w, secret=SECRET, family="m:w", subject="alice")[0]
    s2 = face_keys(rng.normal(size=(1, 512)), secret=SECRET, family="m:w", subject="alice")[0]
    assert s1.store == s2.store and not set(s1.store) & set(base.lookup)
    # never the plain hash of the latent
    assert latent_key(w[0]) not in {k.hex() for k in base.lookup}


def test_spend_from_privatize_record():
    n = np.eye(16)[:1]
    w = np.zeros((1, 16))
    rec = privatize(w, n, epsilon=1.0, delta=1e-5, mechanism="gaussian").record
    s = spend_from_record(rec)
    assert s.kind == "zcdp" and s.epsilon == pytest.approx(rec["spend"]["epsilon"])
    assert s.delta == pytest.approx(rec["spend"]["delta"])
    seeded = spend_from_record(privatize(w, n, epsilon=2.0, seed=0).record)
    assert seeded.kind == "none" and "seed" in seeded.unbounded


def test_import_reports_torn_lines_and_marks_skipped_faces_unbounded(tmp_path):
    rng = np.random.default_rng(2)
    w = rng.normal(size=(2, 16)).astype(np.float32)
    k0, k1 = latent_key(w[0]), latent_key(w[1])
    lines = [json.dumps({"input_sha256": k0, "mechanism": "laplace", "epsilon": 1.0, "delta": 0.0, "row": 0}),
             '{"input_sha256": "' + k1 + '", "mechanism": "laplace", "epsilon": NaN}',
             json.dumps({"input_sha256": k0, "mechanism": "laplace", "epsilon": 0.5}),
             '{"input_sha256": "' + k0[:20]]                                 # torn last line
    old = tmp_path / "old.jsonl"
    old.write_text("\n".join(lines))
    led = Ledger(tmp_path / "l.sqlite")
    with pytest.raises(InputError, match=r"old.jsonl:2: invalid ledger line .* and 1 more"):
        led.import_jsonl(old)
    assert led.releases() == []
    out = led.import_jsonl(old, skip_invalid=True)
    assert out["imported"] == 2 and [b["line"] for b in out["invalid"]] == [2, 4]
    assert [b["face_marked_unbounded"] for b in out["invalid"]] == [True, False]
    led.import_jsonl(old, skip_invalid=True)                                 # idempotent
    f0, f1 = _faces(led, w)
    totals = led.totals_for([f0, f1])
    assert totals[f0.primary.hex()].epsilon == pytest.approx(1.5)
    assert totals[f1.primary.hex()].epsilon is None and "old.jsonl:2" in totals[f1.primary.hex()].reason
    buf = io.StringIO()
    assert led.export_jsonl(buf) == 3
    exported = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert {e["state"] for e in exported} == {"committed"} and all(e["keys"] for e in exported)
    assert k0 not in buf.getvalue()                                           # keyed, not the plain hash
    assert led.verify() == []


def test_recover_commits_written_outputs_and_cancels_the_rest(tmp_path):
    from latentpriv.io import save_npy
    from latentpriv.privacy.ledger import npy_sha256

    led = Ledger(tmp_path / "l.sqlite")
    faces = _faces(led, np.random.default_rng(3).normal(size=(3, 16)))
    arr = np.arange(4, dtype=np.float32)
    written, missing, mismatch = (led.reserve([f], LAP, SMILE) for f in faces)
    for res, name in ((written, "a.npy"), (missing, "b.npy"), (mismatch, "c.npy")):
        led.set_output(res, tmp_path / name, npy_sha256(arr))
    save_npy(tmp_path / "a.npy", arr)
    save_npy(tmp_path / "c.npy", arr + 1)
    assert led.recover().live                     # this process's own pending charges are left alone
    con = led.connect()
    con.execute("UPDATE releases SET pid = 999999999")  # as if their process had been killed
    report = Ledger(led.path).recover()
    assert report.committed == written.release_ids and sorted(report.cancelled) == sorted(
        missing.release_ids + mismatch.release_ids)
    states = {r["release_id"]: r["state"] for r in led.releases()}
    assert states[written.release_ids[0]] == "committed" and states[missing.release_ids[0]] == "cancelled"


def _spender(path: str, eps: float, max_eps: float, barrier, queue) -> None:
    led = Ledger(path)
    (face,) = _faces(led, np.full(16, 0.25))
    barrier.wait()
    try:
        res = led.reserve([face], Spend("laplace", eps), SMILE, max_epsilon=max_eps)
    except PrivacyBudgetError:
        queue.put("refused")
        return
    led.commit(res)
    queue.put("ok")


@pytest.mark.parametrize("k", [3, 5])
def test_sixteen_processes_with_budget_for_k_releases(tmp_path, k):
    path = str(tmp_path / "l.sqlite")
    Ledger(path).connect()
    ctx = mp.get_context("fork")
    barrier, queue = ctx.Barrier(16), ctx.Queue()
    procs = [ctx.Process(target=_spender, args=(path, 0.5, 0.5 * k, barrier, queue)) for _ in range(16)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    results = [queue.get(timeout=5) for _ in procs]
    assert results.count("ok") == k and results.count("refused") == 16 - k
    (face,) = _faces(Ledger(path), np.full(16, 0.25))
    assert Ledger(path).totals_for([face])[face.primary.hex()].epsilon == pytest.approx(0.5 * k)


def test_ledger_commands(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from latentpriv.cli import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LATENTPRIV_LEDGER", str(tmp_path / "l.sqlite"))
    w = np.random.default_rng(4).normal(size=(1, 16)).astype(np.float32)
    np.save("w.npy", w)
    np.save("b.npy", np.eye(16)[:1])
    (tmp_path / "old.jsonl").write_text(
        json.dumps({"input_sha256": latent_key(w[0]), "mechanism": "laplace", "epsilon": 1.0}) + "\n"
        + '{"input_sha256": "' + latent_key(w[0]) + '", "epsilon": -10}\n')

    def run(*args):
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)

    r = run("ledger", "import", "old.jsonl")
    assert r.exit_code == 2 and "old.jsonl:2: invalid ledger line" in r.output and "--skip-invalid" in r.output
    r = run("ledger", "import", "old.jsonl", "--skip-invalid")
    assert r.exit_code == 0 and "old.jsonl:2: skipped" in r.output and "imported 1 entry" in r.output
    r = run("ledger", "show", "w.npy", "--space", "w", "--json")
    (face,) = json.loads(r.output)["faces"]
    assert face["epsilon"] is None and "old.jsonl:2" in face["unbounded_reason"]
    # a --ledger that is the run's own output is refused before anything happens
    r = run("privatize", "w.npy", "--boundary", "b.npy", "--space", "w", "--epsilon", "1", "--no-decorrelate",
            "-o", "x.npy", "--ledger", "x.npy")
    assert r.exit_code == 2 and "is also an output" in r.output and not (tmp_path / "x.npy").exists()
    r = run("privatize", "w.npy", "--boundary", "b.npy", "--space", "w", "--epsilon", "1", "--no-decorrelate",
            "-o", "y.npy", "--label", "study 7", "--force", "--max-epsilon", "5")
    assert r.exit_code == 0, r.output
    r = run("ledger", "show", "--label", "study 7")
    assert "labels: study 7" in r.output and "y.npy" in r.output and "unbounded" in r.output
    assert run("ledger", "verify").output.strip() == "ok"
    assert "committed 0, cancelled 0" in run("ledger", "recover").output
    r = run("ledger", "export", "-o", "audit.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and {e["state"] for e in lines} == {"committed"}

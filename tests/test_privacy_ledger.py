"""The privacy ledger: keys, composition, refusal, concurrent appends."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest

from latentpriv.errors import InputError, PrivacyBudgetError
from latentpriv.privacy.accounting import zcdp_to_dp
from latentpriv.privacy.ledger import (
    Ledger,
    Spend,
    default_ledger_path,
    latent_key,
    row_keys,
    spend_from_record,
    total_of,
)
from latentpriv.privacy.mechanisms import privatize

LAP = Spend("laplace", 1.0)
GAUSS = Spend("gaussian", 1.0, 1e-5, 0.05)


def test_keys_are_per_row_and_dtype_canonical():
    w = np.random.default_rng(0).normal(size=(3, 512))
    keys = row_keys(w)
    assert len(keys) == 3 and len(set(keys)) == 3
    assert keys[0] == latent_key(w[0].astype(np.float32)) == row_keys(w[0])[0]
    assert row_keys(w.astype(np.float32)) == keys  # float64 and float32 copies of a face are one input
    assert len(row_keys(np.zeros((2, 18, 512)))) == 2
    assert len(row_keys(np.zeros((18, 512)), space="wp")) == 1


def test_default_path(monkeypatch, tmp_path):
    monkeypatch.setenv("LATENTPRIV_LEDGER", str(tmp_path / "x.jsonl"))
    assert default_ledger_path() == tmp_path / "x.jsonl"
    monkeypatch.delenv("LATENTPRIV_LEDGER")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_ledger_path() == tmp_path / "latentpriv" / "ledger.jsonl"


def test_composition_rules():
    assert total_of("k", [LAP, LAP, Spend("rr", 0.5)]).epsilon == pytest.approx(2.5)
    # zCDP: 10 gaussian releases compose to less than 10 x epsilon
    t = total_of("k", [GAUSS] * 10)
    assert t.rho == pytest.approx(0.5) and t.delta == pytest.approx(1e-4)
    assert t.epsilon == pytest.approx(zcdp_to_dp(0.5, 1e-4))
    assert t.epsilon < 10.0
    # basic composition is used when it is smaller (a single release: its own epsilon)
    assert total_of("k", [GAUSS]).epsilon == pytest.approx(min(1.0, zcdp_to_dp(0.05, 1e-5)))
    mixed = total_of("k", [LAP, GAUSS, GAUSS])
    assert mixed.epsilon == pytest.approx(1.0 + min(2.0, zcdp_to_dp(0.1, 2e-5)))
    assert total_of("k", [LAP, Spend("seed", None, 1e-5)]).epsilon is None


def test_append_totals_and_refusal(tmp_path):
    led = Ledger(tmp_path / "sub" / "ledger.jsonl")
    keys = ["a" * 64, "b" * 64]
    led.append(keys, LAP, {"release_id": "r1"})
    led.append(keys[:1], LAP, max_epsilon=2.0)
    totals = led.totals()
    assert totals["a" * 64].epsilon == 2.0 and totals["b" * 64].epsilon == 1.0
    before = (tmp_path / "sub" / "ledger.jsonl").read_bytes()
    with pytest.raises(PrivacyBudgetError, match="spent epsilon 2 in 2 release"):
        led.append(keys, LAP, max_epsilon=2.5)
    assert (tmp_path / "sub" / "ledger.jsonl").read_bytes() == before  # nothing written
    led.append(keys, LAP, max_epsilon=2.5, force=True)
    lines = [json.loads(x) for x in before.decode().splitlines()]
    assert lines[0]["release_id"] == "r1" and lines[0]["row"] == 0 and lines[1]["row"] == 1
    entries = led.entries()
    assert entries[-1]["forced"] is True and len(entries) == 5
    with pytest.raises(PrivacyBudgetError, match="unbounded"):
        led.append(keys[1:], Spend("seed", None, 1e-5), max_epsilon=100.0)


def test_duplicate_rows_count_twice(tmp_path):
    led = Ledger(tmp_path / "l.jsonl")
    with pytest.raises(PrivacyBudgetError):
        led.append(["d" * 64, "d" * 64], LAP, max_epsilon=1.5)
    led.append(["d" * 64, "d" * 64], LAP, max_epsilon=2.0)
    assert led.totals()["d" * 64].epsilon == 2.0


def test_unknown_input_has_zero_spend(tmp_path):
    led = Ledger(tmp_path / "none.jsonl")
    assert led.entries() == []
    t = led.totals(["c" * 64])["c" * 64]
    assert t.releases == 0 and t.epsilon == 0.0


def test_corrupt_line_is_an_error(tmp_path):
    p = tmp_path / "l.jsonl"
    Ledger(p).append(["a" * 64], LAP)
    with open(p, "a") as fh:
        fh.write('{"input_sha256": "x", "epsilon": 1.0\n')
    with pytest.raises(InputError, match=":2: corrupt ledger line"):
        Ledger(p).totals()


def test_spend_from_privatize_record():
    n = np.eye(512)[:1]
    w = np.zeros((1, 512))
    rec = privatize(w, n, epsilon=1.0, delta=1e-5, mechanism="gaussian", seed=0).record
    s = spend_from_record(rec)
    assert s.kind == "zcdp" and s.rho == pytest.approx(rec["noise"]["rho_zcdp"]) and s.delta == 1e-5
    assert spend_from_record(privatize(w, n, epsilon=2.0, seed=0).record) == Spend("laplace", 2.0, 0.0, None)


def _writer(path: str, tag: int, count: int, barrier) -> None:
    led = Ledger(path)
    keys = [f"{tag:064d}", "f" * 64]
    barrier.wait()
    for i in range(count):
        led.append(keys, Spend("laplace", 0.25), {"release_id": f"{tag}-{i}", "pad": "x" * 3000})


def test_concurrent_appends_lose_nothing(tmp_path):
    path = str(tmp_path / "ledger.jsonl")
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(2)
    count = 100
    procs = [ctx.Process(target=_writer, args=(path, t, count, barrier)) for t in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = Path(path).read_text().splitlines()
    assert len(lines) == 2 * 2 * count
    parsed = [json.loads(x) for x in lines]  # no torn or interleaved line
    ids = {e["release_id"] for e in parsed}
    assert len(ids) == 2 * count
    totals = Ledger(path).totals()
    assert totals["f" * 64].releases == 2 * count
    assert math.isclose(totals["f" * 64].epsilon, 0.25 * 2 * count)


def test_incremental_reads_see_other_writers_and_a_replaced_file(tmp_path):
    path = tmp_path / "ledger.jsonl"
    mine, other = Ledger(path), Ledger(path)
    k = "a" * 64
    mine.append([k], LAP)
    with mine.transaction() as txn:
        assert txn.totals([k])[k].epsilon == 1.0
    other.append([k], LAP)           # another process's line: read by mine's next transaction
    with mine.transaction() as txn:
        assert txn.prospective([k], LAP)[k].epsilon == 3.0
    # the file replaced by a shorter one (restored from a backup): read again from the start
    tmp = tmp_path / "new.jsonl"
    tmp.write_text(path.read_text().splitlines()[0] + "\n")
    tmp.replace(path)
    with mine.transaction() as txn:
        assert txn.totals([k])[k].epsilon == 1.0
    # rewritten in place with the same length: the changed tail is noticed
    text = path.read_text().replace('"epsilon": 1.0', '"epsilon": 2.0')
    assert len(text) == len(path.read_text())
    path.write_text(text)
    with mine.transaction() as txn:
        assert txn.totals([k])[k].epsilon == 2.0
    with open(path, "a") as fh:     # a torn line is named, as on a full read
        fh.write('{"input_sha256": "b')
    with pytest.raises(InputError, match=r":2: corrupt ledger line"), mine.transaction() as txn:
        txn.totals([k])

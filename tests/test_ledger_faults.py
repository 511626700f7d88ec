"""The ledger under faults: a folder run killed (SIGKILL) or stopped (SIGTERM) mid-run and rerun releases every
face exactly once; a full disk or a read-only output charges nothing for the failed writes.
(A small version of scripts/ledger_faults.py, whose 20+ trials per signal are in docs/BENCHMARKS.md.)"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import signal
import time
from pathlib import Path

import pytest

import latentpriv.cli  # noqa: F401  (imported before the harness forks: the runs start at once)
import latentpriv.io
import latentpriv.runs.engine as batch
from latentpriv.privacy.ledger import Ledger
from latentpriv.runs.privatize import PrivatizeOptions, privatize_task

_spec = importlib.util.spec_from_file_location(
    "ledger_faults", Path(__file__).resolve().parents[1] / "scripts" / "ledger_faults.py")
faults = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(faults)


@pytest.fixture(scope="module")
def full_run_s(tmp_path_factory):
    faults.preload()
    root = tmp_path_factory.mktemp("calib")
    faults.make_inputs(root, 6, dim=64)
    t0 = time.perf_counter()
    assert faults.run_to_end(faults.privatize_args(root, root / "out")) == 0
    return time.perf_counter() - t0


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_folder_run_and_its_rerun_release_every_face_once(tmp_path, full_run_s, sig):
    faults.make_inputs(tmp_path, 6, dim=64, seed=1)
    res = faults.kill_trial(tmp_path, sig, 0.6 * full_run_s)
    assert res["ok"], res
    assert res["released_once"] == 6 and not res["charged_without_output"] and res["pending"] == 0


def _task(root: Path):
    return privatize_task(PrivatizeOptions(epsilon=1.0, boundary_files=[root / "b.npy"], space="w",
                                           ledger_path=root / "ledger.sqlite", max_epsilon=1.5, decorrelate=False),
                          outdir=root / "out")


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS])
def test_failed_writes_charge_nothing_and_the_ledger_stays_readable(tmp_path, monkeypatch, err):
    faults.make_inputs(tmp_path, 5, dim=64)
    real = latentpriv.io.atomic_write
    writes = {"n": 0}

    @contextlib.contextmanager
    def failing(path, mode="wb"):
        if Path(path).parent == tmp_path / "out" and Path(path).name.startswith("f"):
            writes["n"] += 1
            if writes["n"] > 4:           # the disk fills after two files (sidecar + output each)
                raise OSError(err, "simulated", str(path))
        with real(path, mode) as fh:
            yield fh

    monkeypatch.setattr(latentpriv.io, "atomic_write", failing)
    summary = batch.run_batch(_task(tmp_path), tmp_path / "in", tmp_path / "out")
    assert (summary.ok, summary.failed) == (2, 3)
    with Ledger(tmp_path / "ledger.sqlite") as led:
        states = sorted(r["state"] for r in led.releases())
        assert states == ["cancelled"] * 3 + ["committed"] * 2 and led.verify() == []
    monkeypatch.setattr(latentpriv.io, "atomic_write", real)
    again = batch.run_batch(_task(tmp_path), tmp_path / "in", tmp_path / "out")   # the budget was kept
    assert (again.ok, again.skipped, again.failed) == (3, 2, 0)


def test_an_unwritable_output_folder_is_refused_before_any_charge(tmp_path, monkeypatch):
    import latentpriv.outputs as outputs  # the release probes its output folder with outputs.check_writable

    faults.make_inputs(tmp_path, 3, dim=64)

    real = outputs.tempfile.mkstemp

    def read_only(*a, prefix="", **k):   # the output folder refuses new files; the ledger's folder does not
        if prefix.startswith(".latentpriv-probe"):
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*a, prefix=prefix, **k)

    monkeypatch.setattr(outputs.tempfile, "mkstemp", read_only)
    summary = batch.run_batch(_task(tmp_path), tmp_path / "in", tmp_path / "out")
    assert summary.failed == 3 and all("cannot write there" in e for e in summary.errors.values())
    assert not (tmp_path / "ledger.sqlite").exists() or Ledger(tmp_path / "ledger.sqlite").releases() == []

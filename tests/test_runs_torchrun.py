"""The batch engine across processes: torchrun ranks (gloo, CPU) equal one process, SIGTERM then resume, the
launch scripts (shellcheck, argument checks) and bench_batch's markdown section.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import batch_standin  # tests/ is on sys.path: pytest's default (prepend) import mode puts it there
import numpy as np
import pytest
import runs_helpers as h

from latentpriv.runs.engine import (
    SUMMARY_NAME,
    read_results,
    run_batch,
)

# ---------------------------------------------------------------------------------- separate processes


def _wait_for_oks(out: Path, n: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(h.oks(read_results(out))) >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"run ended (rc {proc.returncode}) before {n} items were done")
        time.sleep(0.05)
    pytest.fail(f"fewer than {n} items done after {timeout} s")


def test_torchrun_two_ranks_equal_single_process_and_each_item_once(tmp_path):
    names = h.images(tmp_path / "in", 6)
    single = run_batch(batch_standin.make_task(), tmp_path / "in", tmp_path / "one", batch_size=2, seed=5)
    assert single.ok == 6
    multi = subprocess.run([*h.torchrun(2), str(h.STANDIN), str(tmp_path / "in"), str(tmp_path / "two"),
                            "--seed", "5", "--batch-size", "2"], env=h.env(), capture_output=True, text=True,
                           timeout=180)
    assert multi.returncode == 0, multi.stderr[-3000:]
    assert "6 ok, 0 skipped, 0 failed (of 6)" in multi.stdout and "on 2 processes" in multi.stdout
    records = read_results(tmp_path / "two")
    assert h.oks(records) == sorted(names) and len(records) == 6          # each item done exactly once
    assert {r["rank"] for r in records} == {0, 1}                        # both ranks did work
    by_rank = {r["item"]: r["rank"] for r in records}
    assert by_rank == {n: (i // 2) % 2 for i, n in enumerate(sorted(names))}   # batches r, r+W, ...
    for name in names:
        stem = Path(name).stem
        np.testing.assert_array_equal(np.load(tmp_path / "one" / f"{stem}.npy"),
                                      np.load(tmp_path / "two" / f"{stem}.npy"))
    summary = json.loads((tmp_path / "two" / SUMMARY_NAME).read_text())
    assert summary["world_size"] == 2 and summary["ok"] == 6


def test_sigterm_under_torchrun_then_resume_in_one_process(tmp_path):
    names = h.images(tmp_path / "in", 8)
    out = tmp_path / "out"
    proc = subprocess.Popen([*h.torchrun(2), str(h.STANDIN), str(tmp_path / "in"), str(out), "--seed", "1",
                             "--sleep", "0.4"], env=h.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        _wait_for_oks(out, 2, proc)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    first = h.oks(read_results(out))
    assert 2 <= len(first) < 8, stderr[-2000:]
    assert len(set(first)) == len(first)
    assert not (out / SUMMARY_NAME).exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]   # no half-written temp files

    rerun = subprocess.run([sys.executable, str(h.STANDIN), str(tmp_path / "in"), str(out), "--seed", "1"],
                           env=h.env(), capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads((out / SUMMARY_NAME).read_text())
    second = read_results(out, summary["run_id"])
    assert sorted(r["item"] for r in second if r["status"] == "skipped") == first   # finished: not redone
    assert sorted(h.oks(second) + first) == sorted(names)                          # the rest: done once
    # and the resumed outputs equal an uninterrupted run's
    ref = tmp_path / "ref"
    run_batch(batch_standin.make_task(), tmp_path / "in", ref, seed=1)
    for name in names:
        stem = Path(name).stem
        np.testing.assert_array_equal(np.load(out / f"{stem}.npy"), np.load(ref / f"{stem}.npy"))


# ------------------------------------------------------------------------------------ scripts (CPU parts)

SCRIPTS = h.REPO / "scripts"


def test_shell_scripts_parse_and_pass_shellcheck():
    import shutil

    scripts = sorted(SCRIPTS.glob("*.sh")) + [SCRIPTS / "slurm_invert.sbatch"]
    assert len(scripts) >= 5
    for script in scripts:
        subprocess.run(["bash", "-n", str(script)], check=True)
        assert "set -euo pipefail" in script.read_text() or script.name == "launch_common.sh"
    if shutil.which("shellcheck") is None:   # the linter is an optional tool; bash -n above always runs
        return
    result = subprocess.run(["shellcheck", "-x", *map(str, scripts)], capture_output=True, text=True, cwd=h.REPO)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("argv, message", [
    (["invert_dir.sh"], "Usage"),
    (["invert_dir.sh", "/nonexistent/faces", "OUT"], "is not a folder"),
    (["invert_dir.sh", "{in}", "{out}", "two"], "NUM_GPUS must be a positive integer"),
    (["privatize_dir.sh", "{in}", "{out}"], "Usage"),
    (["sweep_epsilon.sh", "{in}", "{out}", "1 x"], "epsilon 'x' is not a positive number"),
])
def test_scripts_reject_bad_arguments_before_running_anything(tmp_path, argv, message):
    (tmp_path / "in").mkdir()
    args = [a.format(**{"in": tmp_path / "in", "out": tmp_path / "out"}) for a in argv]
    result = subprocess.run(["bash", str(SCRIPTS / args[0]), *args[1:]], capture_output=True, text=True,
                            timeout=30, env=h.env())
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "out").exists()


def _bench():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_batch", SCRIPTS / "bench_batch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_section_replaces_only_its_own_part_of_the_markdown(tmp_path):
    bench = _bench()
    info = {"date": "d", "device": "GPU X", "torch": "t", "resolution": 1024, "config": "preset default",
            "iterations": 1000, "space": "auto", "steps_timed": 10, "stopped": None, "command": "python b.py",
            "results": [
                {"batch_size": 1, "amp": "none", "step_seconds": 0.04, "batch_overhead_seconds": 0.1,
                 "seconds_per_image": 40.1, "images_per_hour": 89.8, "peak_memory_gib": 1.5},
                {"batch_size": 8, "amp": "none", "step_seconds": 0.1, "batch_overhead_seconds": 0.2,
                 "seconds_per_image": 12.5, "images_per_hour": 288.0, "peak_memory_gib": 9.0},
                {"batch_size": 16, "amp": "none", "oom": True}]}
    section = bench.markdown(info)
    assert "| 8 | float32 | 100.0 | 0.20 | 12.50 | 288 | 9.0 GiB |" in section
    assert "Best float32: batch 8, 288 images/hour (3.2x batch 1 float32)" in section
    assert "| 16 | float32 | out of memory |" in section
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\n## Other\nkeep me\n")
    bench.write_section(md, section)
    bench.write_section(md, section.replace("GPU X", "GPU Y"))   # a rerun replaces, never duplicates
    text = md.read_text()
    assert "keep me" in text and text.count(bench.START) == 1 and "GPU Y" in text and "GPU X" not in text


def test_privatize_dir_script_on_two_ranks_shares_the_ledger_logs_and_resumes(tmp_path):
    names = h.latents(tmp_path / "in", 4)
    env = {**h.env(), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    opts = ["--", "--boundary", str(h.boundary(tmp_path / "b.npy")), "--space", "w", "--ledger",
            str(tmp_path / "l.jsonl"), "--seed", "0", "--device", "cpu"]
    script = ["bash", str(SCRIPTS / "privatize_dir.sh"), str(tmp_path / "in"), str(tmp_path / "out"), "1.0"]
    first = subprocess.run([*script, "2", *opts], capture_output=True, text=True, timeout=180, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "privatize: 4 ok, 0 skipped, 0 failed (of 4) in" in first.stdout and "on 2 processes" in first.stdout
    records = read_results(tmp_path / "out")
    assert h.oks(records) == sorted(names) and {r["rank"] for r in records} == {0, 1}
    ledger = h.ledger_lines(tmp_path / "l.jsonl")                      # both ranks appended to one ledger
    assert len(ledger) == 4 and sorted(line["batch_item"] for line in ledger) == sorted(names)
    logs = list((tmp_path / "out" / "logs").glob("privatize-*.log"))
    assert len(logs) == 1 and "4 ok" in logs[0].read_text() and "exit status 0" in logs[0].read_text()
    second = subprocess.run([*script, *opts], capture_output=True, text=True, timeout=120, env=env)
    assert second.returncode == 0 and "0 ok, 4 skipped" in second.stdout                   # one process now
    assert len(h.ledger_lines(tmp_path / "l.jsonl")) == 4

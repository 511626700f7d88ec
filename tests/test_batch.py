"""The batch engine: sharding, verified resume, records, failures, SIGTERM, and torchrun (gloo, CPU).

The engine is exercised with the stand-in task in ``tests/batch_standin.py`` (cheap and seeded), so
these tests pin the engine's own guarantees; the real invert/privatize commands are tested on top.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import batch_standin  # tests/ is on sys.path: pytest's default (prepend) import mode puts it there
import numpy as np
import pytest
from PIL import Image

from latentpriv.errors import InputError
from latentpriv.runs import engine as batch
from latentpriv.runs.engine import (
    SUMMARY_NAME,
    BatchInterrupted,
    BatchTask,
    ItemOutput,
    item_seed,
    list_inputs,
    make_batches,
    read_results,
    run_batch,
    shard_batches,
)

STANDIN = Path(__file__).parent / "batch_standin.py"
REPO = Path(__file__).resolve().parents[1]


def _images(folder: Path, n: int, size: int = 8, start: int = 0) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(start, start + n):
        arr = np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8)
        name = f"face{i:02d}.png"
        Image.fromarray(arr).save(folder / name)
        names.append(name)
    return names


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _torchrun(nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]


def _oks(records: list[dict]) -> list[str]:
    return sorted(r["item"] for r in records if r["status"] == "ok")


# ------------------------------------------------------------------------------------------ pure helpers


def test_item_seed_depends_only_on_base_seed_and_name():
    assert item_seed(3, "a.png") == item_seed(3, "a.png")
    assert item_seed(3, "a.png") != item_seed(4, "a.png")
    assert item_seed(3, "a.png") != item_seed(3, "b.png")
    seeds = {item_seed(0, f"{i}.png") for i in range(1000)}
    assert len(seeds) == 1000 and all(0 <= s < 2**63 for s in seeds)


@pytest.mark.parametrize("n", [0, 1, 5, 6, 7, 33])
@pytest.mark.parametrize("batch_size", [1, 2, 4])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shards_are_disjoint_cover_and_batches_do_not_depend_on_world_size(n, batch_size, world):
    shards = [shard_batches(n, batch_size, r, world) for r in range(world)]
    flat = [i for shard in shards for b in shard for i in b]
    assert sorted(flat) == list(range(n))  # every item exactly once
    batches = {tuple(b) for shard in shards for b in shard}
    assert batches == {tuple(b) for b in make_batches(n, batch_size)}


def test_bad_batch_size_and_rank_are_rejected():
    with pytest.raises(InputError, match="batch-size 0"):
        make_batches(3, 0)
    with pytest.raises(ValueError):
        shard_batches(3, 1, 2, 2)


def test_list_inputs_sorted_filtered_and_collisions(tmp_path):
    _images(tmp_path, 3)
    (tmp_path / ".hidden.png").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "B.PNG").write_bytes(b"x")
    assert list_inputs(tmp_path, (".png",)) == ["B.PNG", "face00.png", "face01.png", "face02.png"]
    (tmp_path / "face01.jpg").write_bytes(b"x")
    with pytest.raises(InputError, match="same stem"):
        list_inputs(tmp_path, (".png", ".jpg"))
    with pytest.raises(InputError, match="no input files"):
        list_inputs(tmp_path, (".npy",))
    with pytest.raises(InputError, match="not a folder"):
        list_inputs(tmp_path / "missing", (".png",))


def test_outdir_equal_to_input_dir_is_refused(tmp_path):
    _images(tmp_path, 2)
    with pytest.raises(InputError, match="output folder is the input folder"):
        run_batch(batch_standin.make_task(), tmp_path, tmp_path)


def _append_many(path: str, tag: int, n: int) -> None:
    for i in range(n):
        batch.append_jsonl(path, {"writer": tag, "i": i, "pad": "x" * 3000})


def test_append_jsonl_is_safe_across_processes(tmp_path):
    path = tmp_path / "r.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(path), t, 150)) for t in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    lines = path.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # a torn or interleaved line would not parse
    assert len(records) == 600
    for t in range(4):
        assert [r["i"] for r in records if r["writer"] == t] == list(range(150))


# --------------------------------------------------------------------------------------- in-process runs


def test_run_writes_mirrored_outputs_records_and_summary(tmp_path):
    names = _images(tmp_path / "in", 5)
    out = tmp_path / "out"
    summary = run_batch(batch_standin.make_task(), tmp_path / "in", out, batch_size=2, seed=7)
    assert (summary.ok, summary.skipped, summary.failed, summary.total) == (5, 0, 0, 5)
    assert summary.exit_code == 0
    for name in names:
        stem = Path(name).stem
        value = np.load(out / f"{stem}.npy")
        assert value.shape == (3,) and value.dtype == np.float32
        side = json.loads((out / f"{stem}.json").read_text())
        assert side["batch"]["input"] == name
        assert side["batch"]["seed"] == item_seed(7, name)
        assert side["batch"]["input_sha256"] == batch.sha256_file(tmp_path / "in" / name)
    records = read_results(out, summary.run_id)
    assert _oks(records) == sorted(names)
    assert {r["rank"] for r in records} == {0}
    on_disk = json.loads((out / SUMMARY_NAME).read_text())
    assert on_disk["ok"] == 5 and on_disk["run_id"] == summary.run_id
    assert "5 ok, 0 skipped, 0 failed (of 5)" in summary.line()
    # no temp files left behind
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_outputs_do_not_depend_on_batch_size_and_follow_the_seed(tmp_path):
    _images(tmp_path / "in", 5)
    run_batch(batch_standin.make_task(), tmp_path / "in", tmp_path / "a", batch_size=1, seed=1)
    run_batch(batch_standin.make_task(), tmp_path / "in", tmp_path / "b", batch_size=3, seed=1)
    run_batch(batch_standin.make_task(), tmp_path / "in", tmp_path / "c", batch_size=3, seed=2)
    for i in range(5):
        a, b, c = (np.load(tmp_path / d / f"face{i:02d}.npy") for d in "abc")
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def test_rerun_skips_complete_items_and_redoes_damaged_ones(tmp_path):
    _images(tmp_path / "in", 6)
    out = tmp_path / "out"
    task = batch_standin.make_task()
    run_batch(task, tmp_path / "in", out, seed=0)
    again = run_batch(task, tmp_path / "in", out, seed=0)
    assert (again.ok, again.skipped, again.failed) == (0, 6, 0)

    # damage outputs in the ways a crash or a user could
    (out / "face00.json").unlink()                                   # sidecar missing
    (out / "face01.npy").write_bytes((out / "face01.npy").read_bytes()[:-4])   # truncated output
    (out / "face02.npy").unlink()                                    # output missing
    (out / "face03.json").write_text("{not json")                    # sidecar corrupt
    _images(tmp_path / "in", 1, start=40)
    os.replace(tmp_path / "in" / "face40.png", tmp_path / "in" / "face04.png")   # input changed
    third = run_batch(task, tmp_path / "in", out, seed=0)
    records = read_results(out, third.run_id)
    assert _oks(records) == [f"face{i:02d}.png" for i in range(5)]
    assert [r["item"] for r in records if r["status"] == "skipped"] == ["face05.png"]

    # a different configuration (here the base seed) makes every earlier output stale
    fourth = run_batch(task, tmp_path / "in", out, seed=1)
    assert fourth.ok == 6
    # --overwrite redoes complete items
    fifth = run_batch(task, tmp_path / "in", out, seed=1, overwrite=True)
    assert (fifth.ok, fifth.skipped) == (6, 0)


def test_corrupt_image_fails_alone_and_is_counted(tmp_path):
    names = _images(tmp_path / "in", 4)
    (tmp_path / "in" / "face02.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "out"
    summary = run_batch(batch_standin.make_task(), tmp_path / "in", out, batch_size=4, seed=0)
    assert (summary.ok, summary.failed) == (3, 1)
    assert summary.failed_items == ["face02.png"] and summary.exit_code == 1
    assert "face02.png: not a readable image" in summary.errors["face02.png"]
    assert not (out / "face02.npy").exists() and not (out / "face02.json").exists()
    for name in names:
        if name != "face02.png":
            assert (out / name.replace(".png", ".npy")).is_file()
    failed = [r for r in read_results(out) if r["status"] == "failed"]
    assert len(failed) == 1 and "face02.png" in failed[0]["error"]
    assert json.loads((out / SUMMARY_NAME).read_text())["failed"] == 1
    # failed items are retried on the next run; complete ones are not
    again = run_batch(batch_standin.make_task(), tmp_path / "in", out, batch_size=4, seed=0)
    assert (again.skipped, again.failed) == (3, 1)


def test_failed_batch_is_retried_item_by_item(tmp_path):
    _images(tmp_path / "in", 4)
    out = tmp_path / "out"
    summary = run_batch(batch_standin.make_task(fail_batch=True), tmp_path / "in", out, batch_size=4, seed=0)
    assert (summary.ok, summary.failed) == (4, 0)
    ref = tmp_path / "ref"
    run_batch(batch_standin.make_task(), tmp_path / "in", ref, batch_size=1, seed=0)
    for i in range(4):
        np.testing.assert_array_equal(np.load(out / f"face{i:02d}.npy"), np.load(ref / f"face{i:02d}.npy"))


def test_per_item_exceptions_and_bad_outputs_fail_only_that_item(tmp_path):
    _images(tmp_path / "in", 3)

    def process(items, payloads):
        outs = []
        for item in items:
            if item.name == "face00.png":
                outs.append(InputError("face00.png: refused"))
            elif item.name == "face01.png":
                outs.append(ItemOutput(files={".wrong": np.zeros(3)}))   # not what the task declared
            else:
                outs.append(ItemOutput(files={".npy": np.zeros(3)}))
        return outs

    task = BatchTask(name="t", input_suffixes=(".png",), output_suffixes=(".npy",), load=lambda item: None,
                     process=process)
    summary = run_batch(task, tmp_path / "in", tmp_path / "out", batch_size=3)
    assert summary.failed_items == ["face00.png", "face01.png"] and summary.ok == 1
    errors = {r["item"]: r["error"] for r in read_results(tmp_path / "out") if r["status"] == "failed"}
    assert errors["face00.png"] == "face00.png: refused"
    assert "expected ['.npy']" in errors["face01.png"]


def test_verify_hook_and_nonfinite_outputs_make_items_incomplete(tmp_path):
    _images(tmp_path / "in", 2)
    out = tmp_path / "out"
    calls = []

    def verify(item, paths):
        calls.append(item.name)
        if np.load(paths[".npy"]).shape != (3,):
            raise InputError("wrong shape")

    task = BatchTask(name="t", input_suffixes=(".png",), output_suffixes=(".npy",),
                     load=lambda item: None, verify=verify,
                     process=lambda items, p: [ItemOutput(files={".npy": np.zeros(3)}) for _ in items])
    run_batch(task, tmp_path / "in", out)
    assert run_batch(task, tmp_path / "in", out).skipped == 2 and sorted(calls) == ["face00.png", "face01.png"]
    # rewrite face00's output with a different shape and re-hash it in the sidecar: only verify catches it
    np.save(out / "face00.npy", np.zeros(4))
    side = json.loads((out / "face00.json").read_text())
    side["batch"]["outputs"]["face00.npy"] = batch.sha256_file(out / "face00.npy")
    (out / "face00.json").write_text(json.dumps(side))
    item = batch._with_sha(batch.BatchItem(0, "face00.png", tmp_path / "in" / "face00.png"))
    reason = batch.check_complete(task, out, item, task.config_sha256)
    assert reason is not None and "wrong shape" in reason


def test_sigterm_in_process_raises_batch_interrupted_and_keeps_finished_items(tmp_path):
    _images(tmp_path / "in", 4)
    out = tmp_path / "out"

    def process(items, payloads):
        if items[0].name == "face02.png":
            os.kill(os.getpid(), signal.SIGTERM)   # arrives while this batch is being computed
            time.sleep(1)
        return [ItemOutput(files={".npy": np.zeros(3)}) for _ in items]

    task = BatchTask(name="t", input_suffixes=(".png",), output_suffixes=(".npy",),
                     load=lambda item: None, process=process)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(BatchInterrupted) as info:
        run_batch(task, tmp_path / "in", out, batch_size=1)
    assert info.value.exit_code == 128 + signal.SIGTERM and info.value.done == 2
    assert signal.getsignal(signal.SIGTERM) is before   # handler restored
    assert sorted(p.name for p in out.glob("*.npy")) == ["face00.npy", "face01.npy"]
    assert not (out / SUMMARY_NAME).exists()
    calm = dataclasses.replace(task, process=lambda items, p: [ItemOutput(files={".npy": np.zeros(3)})
                                                               for _ in items])
    summary = run_batch(calm, tmp_path / "in", out)
    assert (summary.ok, summary.skipped) == (2, 2)


# ---------------------------------------------------------------------------------- separate processes


def _wait_for_oks(out: Path, n: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(_oks(read_results(out))) >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"run ended (rc {proc.returncode}) before {n} items were done")
        time.sleep(0.05)
    pytest.fail(f"fewer than {n} items done after {timeout} s")


def test_torchrun_two_ranks_equal_single_process_and_each_item_once(tmp_path):
    names = _images(tmp_path / "in", 6)
    single = run_batch(batch_standin.make_task(), tmp_path / "in", tmp_path / "one", batch_size=2, seed=5)
    assert single.ok == 6
    multi = subprocess.run([*_torchrun(2), str(STANDIN), str(tmp_path / "in"), str(tmp_path / "two"),
                            "--seed", "5", "--batch-size", "2"], env=_env(), capture_output=True, text=True,
                           timeout=180)
    assert multi.returncode == 0, multi.stderr[-3000:]
    assert "6 ok, 0 skipped, 0 failed (of 6)" in multi.stdout and "on 2 processes" in multi.stdout
    records = read_results(tmp_path / "two")
    assert _oks(records) == sorted(names) and len(records) == 6          # each item done exactly once
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
    names = _images(tmp_path / "in", 8)
    out = tmp_path / "out"
    proc = subprocess.Popen([*_torchrun(2), str(STANDIN), str(tmp_path / "in"), str(out), "--seed", "1",
                             "--sleep", "0.4"], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        _wait_for_oks(out, 2, proc)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    first = _oks(read_results(out))
    assert 2 <= len(first) < 8, stderr[-2000:]
    assert len(set(first)) == len(first)
    assert not (out / SUMMARY_NAME).exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]   # no half-written temp files

    rerun = subprocess.run([sys.executable, str(STANDIN), str(tmp_path / "in"), str(out), "--seed", "1"],
                           env=_env(), capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads((out / SUMMARY_NAME).read_text())
    second = read_results(out, summary["run_id"])
    assert sorted(r["item"] for r in second if r["status"] == "skipped") == first   # finished: not redone
    assert sorted(_oks(second) + first) == sorted(names)                          # the rest: done once
    # and the resumed outputs equal an uninterrupted run's
    ref = tmp_path / "ref"
    run_batch(batch_standin.make_task(), tmp_path / "in", ref, seed=1)
    for name in names:
        stem = Path(name).stem
        np.testing.assert_array_equal(np.load(out / f"{stem}.npy"), np.load(ref / f"{stem}.npy"))


# ------------------------------------------------------------------------------- privatize over a folder


def _latents(folder: Path, n: int, dim: int = 512, same: bool = False) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(11)
    base = rng.standard_normal((1, dim)).astype(np.float32)
    names = []
    for i in range(n):
        name = f"w{i:02d}.npy"
        np.save(folder / name, base if same else rng.standard_normal((1, dim)).astype(np.float32))
        names.append(name)
    return names


def _boundary(path: Path, dim: int = 512) -> Path:
    b = np.random.default_rng(5).standard_normal((1, dim))
    np.save(path, b / np.linalg.norm(b))
    return path


def _privatize_task(tmp_path: Path, **kw):
    opts = dict(outdir=tmp_path / "out", epsilon=1.0, boundary_files=[_boundary(tmp_path / "b.npy")],
                ledger_path=tmp_path / "ledger.jsonl", space="w", seed=3)
    opts.update(kw)
    from latentpriv.runs.privatize import PrivatizeOptions, privatize_task

    outdir = opts.pop("outdir")
    return privatize_task(PrivatizeOptions(**opts), outdir=outdir)


def _ledger_lines(path: Path) -> list[dict]:
    """The ledger's charges that count (committed or pending), one per released file, with their info fields."""
    from latentpriv.privacy.ledger import Ledger

    return [{**e, **e["info"]} for e in Ledger(path).entries() if e["state"] != "cancelled"]


def test_privatize_folder_releases_each_file_once_and_resume_spends_nothing(tmp_path):
    names = _latents(tmp_path / "in", 4)
    task = _privatize_task(tmp_path)
    first = run_batch(task, tmp_path / "in", tmp_path / "out", seed=3)
    assert first.ok == 4
    assert len(_ledger_lines(tmp_path / "ledger.jsonl")) == 4
    shifts = []
    for name in names:
        stem = Path(name).stem
        w = np.load(tmp_path / "in" / name)
        released = np.load(tmp_path / "out" / f"{stem}_private.npy")
        assert released.shape == w.shape
        text = (tmp_path / "out" / f"{stem}_private.json").read_text()
        record = json.loads(text)
        assert record["mechanism"] == "laplace" and record["batch"]["input"] == name
        # the release record must not let anyone test a guessed input: no plain hash of the true latent
        assert batch.sha256_file(tmp_path / "in" / name) not in text
        assert "input_sha256" not in record["batch"] and len(record["batch"]["input_hmac_sha256"]) == 64
        shifts.append(float(((released - w) @ np.load(tmp_path / "b.npy").T).item()))
    assert len(set(np.round(shifts, 6))) == 4     # per-file seeds: no shared noise stream
    again = run_batch(_privatize_task(tmp_path), tmp_path / "in", tmp_path / "out", seed=3)   # key re-read
    assert (again.ok, again.skipped) == (0, 4)
    assert len(_ledger_lines(tmp_path / "ledger.jsonl")) == 4   # skipped files spend nothing
    assert oct((tmp_path / "ledger.jsonl.batch-key").stat().st_mode & 0o777) == "0o600"


def _release_repeatedly(task: BatchTask, item: batch.BatchItem, n: int) -> None:
    for _ in range(n):
        (out,) = task.process([item], [task.load(item)])
        if not isinstance(out, Exception):
            out.on_written()     # as the engine does once the output is on disk: the charge is committed


def test_processes_sharing_one_ledger_never_overspend(tmp_path):
    """4 processes race to release the same latent 5 times each under --max-epsilon 7.5 at epsilon 1 (1.01 with
    the residual dither: room for exactly 7)."""
    _latents(tmp_path / "in", 1)
    task = _privatize_task(tmp_path, max_epsilon=7.5, seed=None)   # secure noise; imports done before fork
    item = batch._with_sha(batch.BatchItem(0, "w00.npy", tmp_path / "in" / "w00.npy"))
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_release_repeatedly, args=(task, item, 5)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = _ledger_lines(tmp_path / "ledger.jsonl")
    assert len(lines) == 7                                  # exactly the budget, not one release more
    assert len({line["release_id"] for line in lines}) == 7


def _read_key(path: str, queue) -> None:
    queue.put(batch.secret_key(Path(path)))


def test_secret_key_is_made_once_even_when_processes_race(tmp_path):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_read_key, args=(str(tmp_path / "k" / "ledger.batch-key"), queue)) for _ in range(4)]
    for p in procs:
        p.start()
    keys = [queue.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(30)
    assert len(set(keys)) == 1 and len(keys[0]) == 32
    assert [p.name for p in (tmp_path / "k").iterdir()] == ["ledger.batch-key"]   # no temp files left
    (tmp_path / "k" / "ledger.batch-key").write_bytes(b"short")
    with pytest.raises(InputError, match="not a 32-byte batch key"):
        batch.secret_key(tmp_path / "k" / "ledger.batch-key")


# ------------------------------------------------------------------------------------ scripts (CPU parts)

SCRIPTS = REPO / "scripts"


def test_shell_scripts_parse_and_pass_shellcheck():
    import shutil

    scripts = sorted(SCRIPTS.glob("*.sh")) + [SCRIPTS / "slurm_invert.sbatch"]
    assert len(scripts) >= 5
    for script in scripts:
        subprocess.run(["bash", "-n", str(script)], check=True)
        assert "set -euo pipefail" in script.read_text() or script.name == "launch_common.sh"
    if shutil.which("shellcheck") is None:   # the linter is an optional tool; bash -n above always runs
        return
    result = subprocess.run(["shellcheck", "-x", *map(str, scripts)], capture_output=True, text=True, cwd=REPO)
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
                            timeout=30, env=_env())
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


# ---------------------------------------------------------------- the real commands over a folder (CLI)

INVERT_FAST = ["--preset", "seed", "--iterations", "3", "--set", "loss.resize.size=32",
               "--set", "metrics_lpips_size=32", "--device", "cpu", "--batch-size", "2", "--quiet"]


def test_invert_folder_under_torchrun_equals_one_process_and_counts_a_corrupt_image(tmp_path, synthetic_checkpoint):
    import torch
    from click.testing import CliRunner

    from latentpriv.cli import cli

    ckpt = synthetic_checkpoint(tmp_path, resolution=32, fmap_max=32)
    names = _images(tmp_path / "in", 6, size=24)
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    args = ["--weights", str(ckpt), *INVERT_FAST]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # as each torchrun worker (OMP_NUM_THREADS=1): same float reduction order
    try:
        one = CliRunner().invoke(cli, ["invert", str(tmp_path / "in"), "-o", str(tmp_path / "one"), *args])
    finally:
        torch.set_num_threads(threads)
    assert one.exit_code == 1, one.output
    assert "invert: 6 ok, 0 skipped, 1 failed (of 7)" in one.output
    assert "Error: 1 of 7 inputs failed:" in one.output and "broken.png: not a readable image" in one.output

    two = subprocess.run([*_torchrun(2), "-m", "latentpriv", "invert", str(tmp_path / "in"), "-o",
                          str(tmp_path / "two"), *args], env=_env(), capture_output=True, text=True, timeout=240)
    assert two.returncode != 0                                          # one input failed
    assert "invert: 6 ok, 0 skipped, 1 failed (of 7)" in two.stdout and "on 2 processes" in two.stdout
    records = read_results(tmp_path / "two")
    assert len(records) == 7 and _oks(records) == sorted(names)        # every image done exactly once
    assert [r["item"] for r in records if r["status"] == "failed"] == ["broken.png"]
    assert {r["rank"] for r in records} == {0, 1}
    summary = json.loads((tmp_path / "two" / SUMMARY_NAME).read_text())
    assert (summary["ok"], summary["failed"], summary["world_size"]) == (6, 1, 2)
    for name in names:
        stem = Path(name).stem
        single = np.load(tmp_path / "one" / f"{stem}.npy")
        assert single.shape == (1, 512) and single.dtype == np.float32
        np.testing.assert_array_equal(single, np.load(tmp_path / "two" / f"{stem}.npy"))
        record = json.loads((tmp_path / "two" / f"{stem}.json").read_text())
        assert record["command"] == "invert" and record["seed"] == 42 and record["iterations"] == 3
        assert record["batch"]["input_sha256"] == batch.sha256_file(tmp_path / "in" / name)
    assert not (tmp_path / "two" / "broken.npy").exists()

    again = CliRunner().invoke(cli, ["invert", str(tmp_path / "in"), "-o", str(tmp_path / "two"), *args])
    assert again.exit_code == 1 and "0 ok, 6 skipped, 1 failed (of 7)" in again.output   # resumed across world sizes


def test_privatize_folder_cli_resumes_and_shares_the_ledger(tmp_path):
    from click.testing import CliRunner

    from latentpriv.cli import cli

    names = _latents(tmp_path / "in", 3)
    args = ["privatize", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--epsilon", "1",
            "--boundary", str(_boundary(tmp_path / "b.npy")), "--space", "w", "--ledger", str(tmp_path / "l.jsonl"),
            "--max-epsilon", "1.5", "--device", "cpu"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "privatize: 3 ok, 0 skipped, 0 failed (of 3)" in first.output
    assert sorted(p.name for p in (tmp_path / "out").glob("*_private.npy")) == [
        n.replace(".npy", "_private.npy") for n in names]
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and "0 ok, 3 skipped" in again.output
    assert len(_ledger_lines(tmp_path / "l.jsonl")) == 3
    # --overwrite releases again: the ledger refuses (1 + 1 > 1.5) and each file is counted as failed
    refused = CliRunner().invoke(cli, [*args, "--overwrite"])
    assert refused.exit_code == 1 and "0 ok, 0 skipped, 3 failed (of 3)" in refused.output
    assert len(_ledger_lines(tmp_path / "l.jsonl")) == 3
    errors = [r["error"] for r in read_results(tmp_path / "out") if r["status"] == "failed"]
    assert len(errors) == 3 and all("max-epsilon" in e for e in errors)


def _dcgan_latents(folder: Path, rows: dict[str, int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(21)
    for stem, n in rows.items():
        np.save(folder / f"{stem}.npy", rng.standard_normal((n, 100)).astype(np.float32))


@pytest.mark.parametrize("extra,fragment", [
    (["--model", "dcgan64", "--attr", "nosuch"], "no boundary dcgan64_nosuch_boundary.npy"),
    (["--model", "dcgan64", "--boundary", "missing.npy"], "missing.npy: no such file"),
    (["--model", "dcgan64", "--attr", "smile", "--layers", "0-3"], "--layers applies only to W+"),
    (["--attr", "smile", "--space", "w"], "boundary dimension 512 does not match the latent's 100"),
    (["--model", "dcgan64", "--attr", "smile", "--mechanism", "gaussian"], "needs --delta"),
    (["--model", "dcgan64", "--attr", "smile", "--center", "auto", "--weights", "missing.pth"],
     "missing.pth: file not found"),
    (["--model", "dcgan64", "--attr", "smile", "--render", "r", "--weights", "missing.pth"],
     "missing.pth: file not found"),
    (["--attr", "smile", "--render", "r"], "asset 'stylegan_ffhq'"),
])
def test_privatize_folder_setup_errors_fail_once_and_leave_nothing(tmp_path, monkeypatch, extra, fragment):
    """An error every input would hit is one line, before OUTDIR (results.jsonl, summary, run lock) exists."""
    from click.testing import CliRunner

    from latentpriv.cli import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LATENTPRIV_HOME", str(tmp_path / "home"))   # no StyleGAN weights found
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _dcgan_latents(tmp_path / "in", {"a": 1, "b": 1, "c": 2})
    res = CliRunner().invoke(cli, ["privatize", "in", "-o", "out", "--epsilon", "1", "--ledger", "l.sqlite",
                                   "--device", "cpu", *extra])
    assert res.exit_code == 2, res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and fragment in errors[0] and res.output.count(fragment) == 1, res.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "r").exists()


def test_privatize_folder_a_file_of_its_own_kind_still_fails_alone(tmp_path, monkeypatch):
    """Not a setup error: one latent of another dimension fails as an item, the others are released."""
    from click.testing import CliRunner

    from latentpriv.cli import cli

    monkeypatch.chdir(tmp_path)
    _dcgan_latents(tmp_path / "in", {"a": 1, "b": 1})
    np.save(tmp_path / "in" / "odd.npy", np.zeros((1, 512), np.float32))
    res = CliRunner().invoke(cli, ["privatize", "in", "-o", "out", "--epsilon", "1", "--ledger", "l.sqlite",
                                   "--model", "dcgan64", "--attr", "smile", "--device", "cpu"])
    assert res.exit_code == 1 and "2 ok, 0 skipped, 1 failed (of 3)" in res.output, res.output
    assert (tmp_path / "out" / "a_private.npy").is_file() and not (tmp_path / "out" / "odd_private.npy").exists()


@pytest.mark.parametrize("extra,fragment", [
    (["--space", "wp"], "space 'wp' is not available for model 'dcgan64'"),
    (["--set", "init=mean"], "init: mean needs a W space"),
    (["--set", "nosuch=1"], "unknown key(s) nosuch"),
])
def test_invert_folder_setup_errors_fail_once_and_leave_nothing(tmp_path, monkeypatch, extra, fragment):
    from click.testing import CliRunner

    from latentpriv.cli import cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "img").mkdir()
    for i in range(2):
        Image.fromarray(np.full((64, 64, 3), 40 * i, np.uint8)).save(tmp_path / "img" / f"{i}.png")
    res = CliRunner().invoke(cli, ["invert", "img", "-o", "out", "--model", "dcgan64", "--iterations", "1",
                                   "--device", "cpu", *extra])
    assert res.exit_code == 2 and res.output.count(fragment) == 1, res.output
    assert not (tmp_path / "out").exists()


def test_privatize_folder_render_with_dcgan64(tmp_path, monkeypatch):
    """--render RENDER_DIR: every released latent rendered (STEM_private.png, STEM_private_0000.png for N rows)
    as the single-file --render renders it; a resume renders only what is missing; a failed render loses
    neither the releases nor the other renders."""
    from click.testing import CliRunner

    import latentpriv
    from latentpriv.cli import cli
    from latentpriv.models.render import render_latents
    from latentpriv.privacy.ledger import Ledger

    monkeypatch.chdir(tmp_path)
    _dcgan_latents(tmp_path / "in", {"a": 1, "b": 1, "m": 2})
    args = ["privatize", "in", "-o", "out", "--render", "r", "--epsilon", "1", "--ledger", "l.sqlite",
            "--model", "dcgan64", "--attr", "smile", "--device", "cpu"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "3 ok" in res.output and "rendered 4 image(s) to r" in res.output
    names = ["a_private.png", "b_private.png", "m_private_0000.png", "m_private_0001.png"]
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == names
    G = latentpriv.load_generator("dcgan64", device="cpu")
    m = np.load(tmp_path / "out" / "m_private.npy")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "r" / "m_private_0001.png")), render_latents(G, m, "z")[1])
    charges = len(Ledger(tmp_path / "l.sqlite").entries())

    (tmp_path / "r" / "b_private.png").unlink()
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and "0 ok, 3 skipped" in again.output and "rendered 1 image(s)" in again.output
    assert (tmp_path / "r" / "b_private.png").is_file()
    assert len(Ledger(tmp_path / "l.sqlite").entries()) == charges   # rendering spends nothing

    (tmp_path / "r2" / "b_private.png").mkdir(parents=True)   # this render cannot be written
    bad = CliRunner().invoke(cli, [*args[:3], "out2", "--render", "r2", *args[6:], "--overwrite",
                                   "--max-epsilon", "100"])
    assert bad.exit_code == 1 and "3 ok" in bad.output and "1 render(s) failed" in bad.output, bad.output
    assert "rendered 3 image(s) to r2, 1 failed" in bad.output
    assert (tmp_path / "out2" / "b_private.npy").is_file() and (tmp_path / "r2" / "m_private_0001.png").is_file()


def test_privatize_folder_render_refuses_images_no_run_made(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from latentpriv.cli import cli

    monkeypatch.chdir(tmp_path)
    _dcgan_latents(tmp_path / "in", {"a": 1})
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "a_private.png").write_bytes(b"someone's")
    res = CliRunner().invoke(cli, ["privatize", "in", "-o", "out", "--render", "r", "--epsilon", "1", "--ledger",
                                   "l.sqlite", "--model", "dcgan64", "--attr", "smile", "--device", "cpu"])
    assert res.exit_code == 2 and "r/a_private.png: already exists" in res.output
    assert not (tmp_path / "out").exists() and (tmp_path / "r" / "a_private.png").read_bytes() == b"someone's"


def test_privatize_dir_script_on_two_ranks_shares_the_ledger_logs_and_resumes(tmp_path):
    names = _latents(tmp_path / "in", 4)
    env = {**_env(), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    opts = ["--", "--boundary", str(_boundary(tmp_path / "b.npy")), "--space", "w", "--ledger",
            str(tmp_path / "l.jsonl"), "--seed", "0", "--device", "cpu"]
    script = ["bash", str(SCRIPTS / "privatize_dir.sh"), str(tmp_path / "in"), str(tmp_path / "out"), "1.0"]
    first = subprocess.run([*script, "2", *opts], capture_output=True, text=True, timeout=180, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "privatize: 4 ok, 0 skipped, 0 failed (of 4) in" in first.stdout and "on 2 processes" in first.stdout
    records = read_results(tmp_path / "out")
    assert _oks(records) == sorted(names) and {r["rank"] for r in records} == {0, 1}
    ledger = _ledger_lines(tmp_path / "l.jsonl")                      # both ranks appended to one ledger
    assert len(ledger) == 4 and sorted(line["batch_item"] for line in ledger) == sorted(names)
    logs = list((tmp_path / "out" / "logs").glob("privatize-*.log"))
    assert len(logs) == 1 and "4 ok" in logs[0].read_text() and "exit status 0" in logs[0].read_text()
    second = subprocess.run([*script, *opts], capture_output=True, text=True, timeout=120, env=env)
    assert second.returncode == 0 and "0 ok, 4 skipped" in second.stdout                   # one process now
    assert len(_ledger_lines(tmp_path / "l.jsonl")) == 4

"""The batch engine in one process: pure helpers (seeds, sharding, listing, results.jsonl), verified resume,
failures, retries and SIGTERM, exercised with the stand-in task of ``tests/batch_standin.py``.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import batch_standin  # tests/ is on sys.path: pytest's default (prepend) import mode puts it there
import numpy as np
import pytest
import runs_helpers as h

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
    h.images(tmp_path, 3)
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
    h.images(tmp_path, 2)
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
    names = h.images(tmp_path / "in", 5)
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
    assert h.oks(records) == sorted(names)
    assert {r["rank"] for r in records} == {0}
    on_disk = json.loads((out / SUMMARY_NAME).read_text())
    assert on_disk["ok"] == 5 and on_disk["run_id"] == summary.run_id
    assert "5 ok, 0 skipped, 0 failed (of 5)" in summary.line()
    # no temp files left behind
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_outputs_do_not_depend_on_batch_size_and_follow_the_seed(tmp_path):
    h.images(tmp_path / "in", 5)
    run_batch(batch_standin.make_task(), tmp_path / "in", tmp_path / "a", batch_size=1, seed=1)
    run_batch(batch_standin.make_task(), tmp_path / "in", tmp_path / "b", batch_size=3, seed=1)
    run_batch(batch_standin.make_task(), tmp_path / "in", tmp_path / "c", batch_size=3, seed=2)
    for i in range(5):
        a, b, c = (np.load(tmp_path / d / f"face{i:02d}.npy") for d in "abc")
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def test_rerun_skips_complete_items_and_redoes_damaged_ones(tmp_path):
    h.images(tmp_path / "in", 6)
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
    h.images(tmp_path / "in", 1, start=40)
    os.replace(tmp_path / "in" / "face40.png", tmp_path / "in" / "face04.png")   # input changed
    third = run_batch(task, tmp_path / "in", out, seed=0)
    records = read_results(out, third.run_id)
    assert h.oks(records) == [f"face{i:02d}.png" for i in range(5)]
    assert [r["item"] for r in records if r["status"] == "skipped"] == ["face05.png"]

    # a different configuration (here the base seed) makes every earlier output stale
    fourth = run_batch(task, tmp_path / "in", out, seed=1)
    assert fourth.ok == 6
    # --overwrite redoes complete items
    fifth = run_batch(task, tmp_path / "in", out, seed=1, overwrite=True)
    assert (fifth.ok, fifth.skipped) == (6, 0)


def test_corrupt_image_fails_alone_and_is_counted(tmp_path):
    names = h.images(tmp_path / "in", 4)
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
    h.images(tmp_path / "in", 4)
    out = tmp_path / "out"
    summary = run_batch(batch_standin.make_task(fail_batch=True), tmp_path / "in", out, batch_size=4, seed=0)
    assert (summary.ok, summary.failed) == (4, 0)
    ref = tmp_path / "ref"
    run_batch(batch_standin.make_task(), tmp_path / "in", ref, batch_size=1, seed=0)
    for i in range(4):
        np.testing.assert_array_equal(np.load(out / f"face{i:02d}.npy"), np.load(ref / f"face{i:02d}.npy"))


def test_per_item_exceptions_and_bad_outputs_fail_only_that_item(tmp_path):
    h.images(tmp_path / "in", 3)

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
    h.images(tmp_path / "in", 2)
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
    h.images(tmp_path / "in", 4)
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


def test_the_cli_maps_an_interrupted_or_quietly_failed_folder_run_to_its_exit_status(capsys):
    """The engine raises, never exits: cli/folder.py shows rank 0's line and exits 128 + signal; a rank other
    than 0 whose items failed (ItemsFailed quiet) exits 1 without a second message; other errors pass on."""
    from latentpriv.cli.folder import folder_run
    from latentpriv.runs.engine import ItemsFailed

    exc = BatchInterrupted(signal.SIGTERM, done=2)
    exc.report = "Error: invert interrupted by SIGTERM after 2 item(s) on this process"
    with pytest.raises(SystemExit) as stop, folder_run():
        raise exc
    assert stop.value.code == 143 and "after 2 item(s)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop, folder_run():
        raise BatchInterrupted(signal.SIGTERM)              # another rank: no line
    assert stop.value.code == 143 and capsys.readouterr().err == ""
    with pytest.raises(SystemExit) as stop, folder_run():
        raise ItemsFailed("", quiet=True)
    assert stop.value.code == 1 and capsys.readouterr().err == ""
    with pytest.raises(ItemsFailed, match="2 of 3 inputs failed"), folder_run():
        raise ItemsFailed("2 of 3 inputs failed: ...")     # rank 0: the CLI prints it as one Error: line


class _RecordingBar:
    """A tqdm-like bar that records what it is told (the progress factory the CLI would pass)."""

    made: list[_RecordingBar] = []

    def __init__(self, **kwargs):
        self.kwargs, self.updates, self.postfix, self.closed = kwargs, [], None, False
        _RecordingBar.made.append(self)

    def update(self, n=1):
        self.updates.append(n)

    def set_postfix(self, **kw):
        self.postfix = kw

    def close(self):
        self.closed = True


def test_progress_is_the_callers_factory_and_the_engine_draws_no_bar_itself(tmp_path, capsys):
    h.images(tmp_path / "in", 5)
    _RecordingBar.made.clear()
    run_batch(batch_standin.make_task(), tmp_path / "in", tmp_path / "out", batch_size=2, progress=_RecordingBar)
    (bar,) = _RecordingBar.made
    assert bar.kwargs == {"total": 5, "desc": "standin", "unit": "item"}
    assert sum(bar.updates) == 5 and len(bar.updates) == 3 and bar.closed
    assert bar.postfix == {"ok": 5, "skipped": 0, "failed": 0}
    capsys.readouterr()
    run_batch(batch_standin.make_task(), tmp_path / "in", tmp_path / "out2", batch_size=2)   # progress=None
    assert capsys.readouterr().err == ""

"""The invert task over a folder: torchrun ranks equal one process, a corrupt image fails alone, setup errors
fail once and leave nothing.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import runs_helpers as h  # tests/ is on sys.path: pytest's default (prepend) import mode puts it there
from PIL import Image

from latentpriv.runs import engine as batch
from latentpriv.runs.engine import (
    SUMMARY_NAME,
    read_results,
)

INVERT_FAST = ["--preset", "seed", "--iterations", "3", "--set", "loss.resize.size=32",
               "--set", "metrics_lpips_size=32", "--device", "cpu", "--batch-size", "2", "--quiet"]


def test_invert_folder_under_torchrun_equals_one_process_and_counts_a_corrupt_image(tmp_path, synthetic_checkpoint):
    import torch
    from click.testing import CliRunner

    from latentpriv.cli import cli

    ckpt = synthetic_checkpoint(tmp_path, resolution=32, fmap_max=32)
    names = h.images(tmp_path / "in", 6, size=24)
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

    two = subprocess.run([*h.torchrun(2), "-m", "latentpriv", "invert", str(tmp_path / "in"), "-o",
                          str(tmp_path / "two"), *args], env=h.env(), capture_output=True, text=True, timeout=240)
    assert two.returncode != 0                                          # one input failed
    assert "invert: 6 ok, 0 skipped, 1 failed (of 7)" in two.stdout and "on 2 processes" in two.stdout
    records = read_results(tmp_path / "two")
    assert len(records) == 7 and h.oks(records) == sorted(names)        # every image done exactly once
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


def test_invert_file_and_folder_run_the_same_inversion(tmp_path, synthetic_checkpoint):
    """One path: ``invert FILE`` and ``invert DIR`` give the same latent, image and record (the folder's
    sidecar adds its batch section; the single file's record names its output)."""
    from click.testing import CliRunner

    from latentpriv.cli import cli

    ckpt = synthetic_checkpoint(tmp_path, resolution=32, fmap_max=32)
    h.images(tmp_path / "in", 1, size=24)
    args = ["--weights", str(ckpt), *INVERT_FAST, "--save-every", "2"]
    single = CliRunner().invoke(cli, ["invert", str(tmp_path / "in" / "face00.png"), "-o", str(tmp_path / "f.npy"),
                                      "--save-image", str(tmp_path / "f.png"), *args])
    assert single.exit_code == 0, single.output
    folder = CliRunner().invoke(cli, ["invert", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                                      "--save-image", str(tmp_path / "img"), *args])
    assert folder.exit_code == 0, folder.output
    np.testing.assert_array_equal(np.load(tmp_path / "f.npy"), np.load(tmp_path / "out" / "face00.npy"))
    np.testing.assert_array_equal(np.load(tmp_path / "f_000002.npy"), np.load(tmp_path / "out" / "face00_000002.npy"))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "f.png")), np.asarray(Image.open(tmp_path / "img" / "face00.png")))
    assert (tmp_path / "f_000002.png").is_file() and (tmp_path / "img" / "face00_000002.png").is_file()
    a = json.loads((tmp_path / "f.json").read_text())
    b = json.loads((tmp_path / "out" / "face00.json").read_text())
    assert a.pop("output") == str(tmp_path / "f.npy") and b.pop("batch")["input"] == "face00.png"
    for rec in (a, b):
        rec.pop("seconds")
    assert a == b


def test_under_torchrun_reads_world_size_through_the_distributed_module(monkeypatch):
    from latentpriv.errors import InputError
    from latentpriv.runs.invert import under_torchrun

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not under_torchrun()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert under_torchrun()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(InputError, match="WORLD_SIZE='two' is not an integer"):
        under_torchrun()

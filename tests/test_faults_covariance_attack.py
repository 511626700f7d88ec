"""Faults of `latentpriv boundary covariance` and `latentpriv attack`: kill -9 at the worst moment, a read-only
output folder and a full disk.

Both commands write atomically (temp file + rename). Here they are killed with SIGKILL *at* a rename (the
process kills itself when ``os.replace`` is called for the k-th output: deterministic, and the hardest
moment, since the temp file is complete and the rename has not happened), and their output folder is a
read-only or a tiny tmpfs (``mount -t tmpfs``: root only; CI runs as root; elsewhere these tests skip
and say why). After every fault: a one-line ``Error:``, a non-zero exit, no file under an output name that
is not whole, the inputs (the dcgan64 weights) unchanged, and a rerun that works.

Uses the offline model dcgan64 with a few hundred samples / 8 faces.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from latentpriv import assets
from latentpriv.cli import cli
from latentpriv.edit import covariance as cov
from latentpriv.errors import InputError

COVARIANCE_ARGS = ["boundary", "covariance", "--model", "dcgan64", "--num", "200", "--heldout", "100",
                   "--device", "cpu"]
ATTACK_ARGS = ["attack", "--model", "dcgan64", "--attr", "smile", "--num", "8", "--epsilons", "1", "--seed", "1",
               "--seed-noise", "--no-faces", "--no-lpips", "--device", "cpu"]

# Runs the latentpriv CLI (argv[3:]) and SIGKILLs itself at the argv[1]-th os.replace into folder argv[2].
_KILL_AT_RENAME = """
import os, signal, sys
k, folder = int(sys.argv[1]), os.path.realpath(sys.argv[2])
real, seen = os.replace, [0]
def replace(src, dst, *a, **kw):
    if os.path.realpath(os.path.dirname(os.path.abspath(os.fspath(dst)))) == folder:
        seen[0] += 1
        if seen[0] == k:
            os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *a, **kw)
os.replace = replace
sys.argv = ["latentpriv", *sys.argv[3:]]
from latentpriv.cli import main
main()
"""


def _killed_at_rename(k: int, folder: Path, args: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-c", _KILL_AT_RENAME, str(k), str(folder), *args],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-2000:])
    return proc


def _run(args: list[str]):
    return CliRunner().invoke(cli, args)


def _error_line(res, *fragments: str) -> str:
    """The run failed with exactly one ``Error:`` line (containing ``fragments``) and no traceback."""
    assert res.exit_code not in (0, None), res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in res.output, res.output
    assert all(f in errors[0] for f in fragments), errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def dcgan_weights() -> tuple[Path, str]:
    path = assets.locate("dcgan64")   # fetched for the test suite (offline model)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _untouched(weights: tuple[Path, str]) -> None:
    path, digest = weights
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, f"{path} changed"


@pytest.fixture
def tmpfs(tmp_path):
    """``make(name, size_kb, read_only=False) -> Path``: a tiny tmpfs mounted in tmp_path (unmounted after)."""
    mounts: list[Path] = []
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a full disk and a read-only folder are simulated with `mount -t tmpfs`: needs root")

    def make(name: str, size_kb: int, read_only: bool = False) -> Path:
        mnt = tmp_path / name
        mnt.mkdir()
        opts = f"size={size_kb}k" + (",ro" if read_only else "")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"mount -t tmpfs is not permitted here ({r.stderr.strip()})")
        mounts.append(mnt)
        return mnt

    yield make
    for mnt in mounts:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


# ------------------------------------------------------------------------------------------ covariance


def _cache_dir() -> Path:
    return Path(os.environ[cov.COVARIANCE_DIR_ENV])   # a fresh folder per test (conftest)


def _only_whole_estimates(folder: Path) -> list[Path]:
    """Every visible file in the cache folder is a whole, verified estimate; returns them."""
    found = sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []
    for p in found:
        cov.read_covariance(p)   # AssetError if cut or corrupt
    return found


def test_covariance_killed_at_its_write_leaves_no_estimate_and_a_rerun_works(dcgan_weights):
    folder = _cache_dir()
    _killed_at_rename(1, folder, COVARIANCE_ARGS)
    assert _only_whole_estimates(folder) == []
    # what the kill leaves: at most the complete temp file, hidden and never read as an estimate
    assert all(p.name.startswith(".") and p.name.endswith(".tmp") for p in folder.iterdir())
    res = _run(["boundary", "covariance", "--show"])
    assert res.exit_code == 0 and "no cached covariance estimates" in res.output, res.output
    res = _run(COVARIANCE_ARGS)
    assert res.exit_code == 0, res.output
    (made,) = _only_whole_estimates(folder)
    assert res.output.strip().endswith(str(made))
    _untouched(dcgan_weights)


@pytest.mark.parametrize("fault", ["read-only", "full"])
def test_covariance_on_a_read_only_or_full_disk_is_one_line_and_writes_nothing(tmpfs, monkeypatch, dcgan_weights,
                                                                                fault):
    roomy = _cache_dir()
    # the estimate is ~160 KiB: it does not fit in 64 KiB
    folder = tmpfs("cov", 64, read_only=fault == "read-only") / "covariance"
    monkeypatch.setenv(cov.COVARIANCE_DIR_ENV, str(folder))
    res = _run(COVARIANCE_ARGS)
    line = _error_line(res, "cannot write", "Read-only file system" if fault == "read-only"
                       else "No space left on device")
    assert str(folder) in line
    assert not folder.exists() or list(folder.iterdir()) == []   # not even a temp file
    _untouched(dcgan_weights)
    monkeypatch.setenv(cov.COVARIANCE_DIR_ENV, str(roomy))
    res = _run(COVARIANCE_ARGS)
    assert res.exit_code == 0 and len(_only_whole_estimates(roomy)) == 1, res.output


def test_an_unwritable_covariance_cache_is_refused_before_any_sampling(tmp_path, monkeypatch):
    """The estimate (100,000 samples by default) is not computed when its cache folder cannot be written."""
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv(cov.COVARIANCE_DIR_ENV, str(tmp_path / "file" / "covariance"))

    def estimate(*_args, **_kwargs):
        raise AssertionError("sampled although the cache cannot be written")

    monkeypatch.setattr(cov, "estimate_covariance", estimate)
    with pytest.raises(InputError, match="cannot write there"):
        cov.covariance_for("dcgan64", "z", num=200, heldout_num=100, estimate=True, device="cpu")


# ------------------------------------------------------------------------------------------ attack

NAMES = ("attack.json", "attack.csv", "attack.png")


def _whole_outputs(outdir: Path) -> set[str]:
    """The attack outputs present, each checked whole (JSON parses, CSV has its row, PNG has its end chunk)."""
    present = {p.name for p in outdir.iterdir() if not p.name.startswith(".")} if outdir.is_dir() else set()
    assert present <= set(NAMES), present
    if "attack.json" in present:
        assert json.loads((outdir / "attack.json").read_text())["format"].startswith("latentpriv.attack/")
    if "attack.csv" in present:
        with open(outdir / "attack.csv", newline="") as fh:
            assert len(list(csv.DictReader(fh))) == 1
    if "attack.png" in present:
        data = (outdir / "attack.png").read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and data.endswith(b"IEND\xaeB`\x82")
    return present


def test_attack_killed_between_its_files_leaves_whole_files_and_a_rerun_works(tmp_path, dcgan_weights):
    """The three files are one write set renamed csv, png, then json (json marks a complete result): killed at
    the last rename, the csv and png are whole and there is no attack.json."""
    outdir = tmp_path / "out"
    _killed_at_rename(3, outdir, [*ATTACK_ARGS, "-o", str(outdir)])
    assert _whole_outputs(outdir) == {"attack.csv", "attack.png"}
    assert all(p.name.endswith(".tmp") for p in outdir.iterdir() if p.name.startswith("."))
    # the overwrite rule: a file this run did not write is kept unless --overwrite
    _error_line(_run([*ATTACK_ARGS, "-o", str(outdir)]), "attack.csv: already exists", "--overwrite")
    res = _run([*ATTACK_ARGS, "-o", str(outdir), "--overwrite"])
    assert res.exit_code == 0, res.output
    assert _whole_outputs(outdir) == set(NAMES)
    _untouched(dcgan_weights)


@pytest.mark.parametrize("fault", ["read-only", "full"])
def test_attack_on_a_read_only_or_full_disk_is_one_line_and_writes_nothing(tmpfs, dcgan_weights, fault):
    """A read-only folder is refused before the attack runs; on a full disk (8 KiB: the csv fits, the png
    does not) the write set fails as a whole: no output file, no temp file."""
    outdir = tmpfs("att", 8, read_only=fault == "read-only") / "out"
    res = _run([*ATTACK_ARGS, "-o", str(outdir)])
    line = _error_line(res, "cannot write", "Read-only file system" if fault == "read-only" else "No space left on device")
    assert str(outdir) in line
    if fault == "read-only":
        assert "epsilon" not in res.output   # refused up front: no attack ran
    assert _whole_outputs(outdir) == set()
    assert not outdir.exists() or not list(outdir.glob(".*"))   # no temp file left
    _untouched(dcgan_weights)

"""The privatize task over a folder: one release per file, resume spends nothing, a shared ledger never
overspends, the batch key, setup errors up front, --render.
"""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import runs_helpers as h  # tests/ is on sys.path: pytest's default (prepend) import mode puts it there
from PIL import Image

from latentpriv.errors import InputError
from latentpriv.runs import engine as batch
from latentpriv.runs.engine import (
    BatchTask,
    read_results,
    run_batch,
)

# ------------------------------------------------------------------------------- privatize over a folder


def _privatize_task(tmp_path: Path, **kw):
    opts = dict(outdir=tmp_path / "out", epsilon=1.0, boundary_files=[h.boundary(tmp_path / "b.npy")],
                ledger_path=tmp_path / "ledger.jsonl", space="w", seed=3)
    opts.update(kw)
    from latentpriv.runs.privatize import PrivatizeOptions, privatize_task

    outdir = opts.pop("outdir")
    return privatize_task(PrivatizeOptions(**opts), outdir=outdir)


def test_privatize_folder_releases_each_file_once_and_resume_spends_nothing(tmp_path):
    names = h.latents(tmp_path / "in", 4)
    task = _privatize_task(tmp_path)
    first = run_batch(task, tmp_path / "in", tmp_path / "out", seed=3)
    assert first.ok == 4
    assert len(h.ledger_lines(tmp_path / "ledger.jsonl")) == 4
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
    assert len(h.ledger_lines(tmp_path / "ledger.jsonl")) == 4   # skipped files spend nothing
    assert oct((tmp_path / "ledger.jsonl.batch-key").stat().st_mode & 0o777) == "0o600"


def _release_repeatedly(task: BatchTask, item: batch.BatchItem, n: int) -> None:
    for _ in range(n):
        (out,) = task.process([item], [task.load(item)])
        if not isinstance(out, Exception):
            out.on_written()     # as the engine does once the output is on disk: the charge is committed


def test_processes_sharing_one_ledger_never_overspend(tmp_path):
    """4 processes race to release the same latent 5 times each under --max-epsilon 7.5 at epsilon 1 (1.01 with
    the residual dither: room for exactly 7)."""
    h.latents(tmp_path / "in", 1)
    task = _privatize_task(tmp_path, max_epsilon=7.5, seed=None)   # secure noise; imports done before fork
    item = batch._with_sha(batch.BatchItem(0, "w00.npy", tmp_path / "in" / "w00.npy"))
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_release_repeatedly, args=(task, item, 5)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = h.ledger_lines(tmp_path / "ledger.jsonl")
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


def test_privatize_folder_cli_resumes_and_shares_the_ledger(tmp_path):
    from click.testing import CliRunner

    from latentpriv.cli import cli

    names = h.latents(tmp_path / "in", 3)
    args = ["privatize", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--epsilon", "1",
            "--boundary", str(h.boundary(tmp_path / "b.npy")), "--space", "w", "--ledger", str(tmp_path / "l.jsonl"),
            "--max-epsilon", "1.5", "--device", "cpu"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "privatize: 3 ok, 0 skipped, 0 failed (of 3)" in first.output
    assert sorted(p.name for p in (tmp_path / "out").glob("*_private.npy")) == [
        n.replace(".npy", "_private.npy") for n in names]
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and "0 ok, 3 skipped" in again.output
    assert len(h.ledger_lines(tmp_path / "l.jsonl")) == 3
    # --overwrite releases again: the ledger refuses (1 + 1 > 1.5) and each file is counted as failed
    refused = CliRunner().invoke(cli, [*args, "--overwrite"])
    assert refused.exit_code == 1 and "0 ok, 0 skipped, 3 failed (of 3)" in refused.output
    assert len(h.ledger_lines(tmp_path / "l.jsonl")) == 3
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


def test_privatize_file_is_a_library_call_with_option_errors_as_config_errors(tmp_path):
    """privatize FILE without the CLI: warnings go to the caller's function, bad option values are ConfigErrors
    naming the option (the CLI shows them as click's "Invalid value for '--center'")."""
    from latentpriv.errors import ConfigError
    from latentpriv.runs.privatize import PrivatizeOptions, parse_center, parse_layers, privatize_file

    h.latents(tmp_path, 1)
    opts = PrivatizeOptions(epsilon=1.0, boundary_files=[h.boundary(tmp_path / "b.npy")], space="w", seed=3,
                            ledger_path=tmp_path / "l.sqlite", decorrelate=False)
    warnings: list[str] = []
    done = privatize_file(opts, tmp_path / "w00.npy", warn=warnings.append)
    assert done.output == tmp_path / "w00_private.npy" and done.record_path.is_file()
    assert np.load(done.output).shape == (1, 512) and done.release.record["guarantee"]
    assert any("--seed 3" in w for w in warnings)
    assert parse_center(" AUTO ") == "auto" and parse_layers("0-2,5") == [0, 1, 2, 5]
    for call, option in ((lambda: parse_center("x"), "--center"), (lambda: parse_layers("a-b"), "--layers")):
        with pytest.raises(ConfigError, match=f"Invalid value for '{option}'"):
            call()


# ------------------------------------------------------------------ FILE and DIR runs read and warn alike


def _warned_file_and_folder(tmp_path: Path, **kw) -> tuple[list[str], list[str]]:
    """The warnings of ``privatize FILE`` and of ``privatize DIR`` on the same latent, the path named INPUT."""
    from latentpriv.runs.privatize import PrivatizeOptions, privatize_file, privatize_task

    h.latents(tmp_path / "in", 1)
    opts = PrivatizeOptions(**{"epsilon": 1.0, "boundary_files": [h.boundary(tmp_path / "b.npy")], "space": "w",
                               "ledger_path": tmp_path / "l.sqlite", "decorrelate": False, **kw})
    single: list[str] = []
    privatize_file(opts, tmp_path / "in" / "w00.npy", output=tmp_path / "single.npy", warn=single.append)
    folder: list[str] = []
    summary = run_batch(privatize_task(opts, outdir=tmp_path / "out", warn=folder.append), tmp_path / "in",
                        tmp_path / "out", seed=opts.seed)
    assert summary.ok == 1
    where = str(tmp_path / "in" / "w00.npy")
    return [w.replace(where, "INPUT") for w in single], [w.replace(where, "INPUT") for w in folder]


def test_file_and_folder_runs_give_the_same_warnings(tmp_path):
    """The seed mechanism, seeded noise and a record above --max-norm: one text each, FILE and DIR alike (a
    folder run used to say nothing about --max-norm, and other words about the seed)."""
    from latentpriv.privacy.mechanisms import SEED_MECHANISM_WARNING, SEEDED_WARNING

    single, folder = _warned_file_and_folder(tmp_path, mechanism="seed", delta=1e-5, seed=3, max_norm=5.0,
                                             decorrelate=None)
    assert sorted(single) == sorted(folder)
    assert SEED_MECHANISM_WARNING in folder and f"--seed 3: {SEEDED_WARNING}" in folder
    assert [w for w in folder if "> --max-norm 5" in w and w.startswith("INPUT: 1 record(s)")], folder
    assert not any("covariance" in w for w in folder)   # seed: the orthogonal split, quietly


def test_folder_run_warns_above_max_norm_once_per_file(tmp_path):
    _, folder = _warned_file_and_folder(tmp_path, seed=3, max_norm=5.0)
    assert len([w for w in folder if "--max-norm" in w]) == 1, folder
    _, quiet = _warned_file_and_folder(tmp_path / "big", seed=3)     # the default covers these latents
    assert not any("--max-norm" in w for w in quiet), quiet


def test_layers_on_w_latents_is_one_error_for_file_and_folder(tmp_path):
    from latentpriv.errors import ConfigError
    from latentpriv.runs.privatize import PrivatizeOptions, privatize_file, privatize_task

    h.latents(tmp_path / "in", 1)
    opts = PrivatizeOptions(epsilon=1.0, boundary_files=[h.boundary(tmp_path / "b.npy")], layers="0-3",
                            ledger_path=tmp_path / "l.sqlite", decorrelate=False)
    with pytest.raises(ConfigError) as single:
        privatize_file(opts, tmp_path / "in" / "w00.npy")
    task = privatize_task(opts, outdir=tmp_path / "out")
    item = batch.BatchItem(0, "w00.npy", tmp_path / "in" / "w00.npy")
    with pytest.raises(ConfigError) as folder:
        task.load(item)
    assert str(single.value) == str(folder.value)
    assert "--layers applies only to W+ latents (--space wp), these are W latents" in str(folder.value)


def test_seed_mechanism_refuses_an_explicit_decorrelate_and_skips_sigma_by_default(tmp_path):
    """privatize and attack agree: seed is the notebook's orthogonal step, so --decorrelate is an error and
    the default never looks a covariance up (nor warns that none is cached)."""
    from latentpriv.errors import ConfigError
    from latentpriv.runs.privatize import PrivatizeOptions, Privatizer, release_decorrelate

    with pytest.raises(ConfigError, match="drop --decorrelate"):
        Privatizer(PrivatizeOptions(epsilon=1.0, mechanism="seed", delta=1e-5, decorrelate=True))
    assert Privatizer(PrivatizeOptions(epsilon=1.0, mechanism="seed", delta=1e-5)).decorrelate is False
    assert [release_decorrelate("laplace", d) for d in (None, True, False)] == [None, True, False]

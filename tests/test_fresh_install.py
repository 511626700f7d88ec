"""What a new user meets first: offline boundaries, one --model flag, errors that name the offline model."""

from __future__ import annotations

import numpy as np
import torch
from click.testing import CliRunner

from latentpriv.cli import cli


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_boundary_list_shows_interfacegan_w_boundaries_without_a_fetch(ifg_home):
    res = run("boundary", "list")
    assert res.exit_code == 0, res.output
    rows = {line.split()[0]: line.split() for line in res.output.splitlines()[1:] if line.strip()}
    for attr in ("age", "eyeglasses", "gender", "pose", "smile"):
        name, space, present = rows[f"stylegan_ffhq_{attr}_w_boundary"][:3]
        assert (space, present) == ("w", "yes")


def test_model_flag_everywhere_and_weights_alias(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # dcgan64 from the user cache (README's test command fetches it)
    for cmd in ("generate", "invert", "privatize", "sweep", "evaluate"):
        res = run(cmd, "--help")
        assert res.exit_code == 0 and "--model" in res.output, cmd
    assert run("generate", "--model", "dcgan64", "--seed", "3", "--num", "1", "-o", "a.png").exit_code == 0
    assert run("generate", "--weights", "dcgan64", "--seed", "3", "--num", "1", "-o", "b.png").exit_code == 0
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open("a.png")), np.asarray(Image.open("b.png")))


def test_missing_stylegan_weights_name_the_offline_model(ifg_home):
    res = run("generate", "--seed", "1", "--num", "1", "-o", "x.png")
    assert res.exit_code != 0
    assert "weights fetch stylegan_ffhq" in res.output and "--model dcgan64" in res.output


def test_threads_option_sets_and_restores_torch_threads():
    """The --threads policy every compute command gets from latentpriv.cli.options.with_threads."""
    import click

    from latentpriv.cli.options import with_threads

    seen = []

    @click.command()
    @click.argument("x")
    @with_threads
    def body(x):
        seen.append((x, torch.get_num_threads()))

    before = torch.get_num_threads()
    for argv, want in ((["a"], 1), (["b", "--threads", "2"], 2), (["c", "--threads", "0"], before)):
        res = CliRunner().invoke(body, argv, catch_exceptions=False)
        assert res.exit_code == 0, res.output
        assert seen[-1] == (argv[0], want) and torch.get_num_threads() == before
    for cmd in ("generate", "invert", "evaluate", "sweep", "demo"):
        assert "--threads" in run(cmd, "--help").output, cmd


def test_scripts_answer_help_and_leave_nothing_when_they_fail_at_once(tmp_path):
    import os
    import subprocess
    import sys

    from shared_paths import REPO

    for name in ("invert_dir.sh", "privatize_dir.sh", "sweep_epsilon.sh"):
        res = subprocess.run(["bash", str(REPO / "scripts" / name), "-h"], capture_output=True, text=True, timeout=30)
        assert res.returncode == 0 and "Usage:" in res.stdout and not res.stderr, name
    (tmp_path / "in").mkdir()
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    res = subprocess.run(["bash", str(REPO / "scripts" / "invert_dir.sh"), "in", "out", "1", "--", "--no-such-option"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert res.returncode == 2 and "no such option" in (res.stdout + res.stderr).lower()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no OUTDIR, no logs, no temp log


def test_sweep_states_its_spend_and_wants_yes_above_the_threshold(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LATENTPRIV_LEDGER", str(tmp_path / "ledger.jsonl"))
    np.save("z.npy", np.random.default_rng(0).normal(size=(1, 100)).astype(np.float32))
    base = ["sweep", "z.npy", "--model", "dcgan64", "--attr", "smile", "--device", "cpu"]
    res = run(*base, "-o", "grid.png")  # the defaults: 4 samples x (0.1 + 0.5 + 1 + 2 + 5)
    # 34.4 plus the residual dither's 0.01 per release
    assert res.exit_code != 0 and "composed spend epsilon 34.6" in res.output and "--yes" in res.output
    assert not (tmp_path / "grid.png").exists() and not (tmp_path / "ledger.jsonl").exists()
    res = run(*base, "--epsilons", "1,inf", "--samples", "2", "-o", "small.png")
    assert res.exit_code == 0, res.output
    assert "2 releases of this face (2 per finite epsilon), composed spend epsilon 2.02" in res.output


def test_generate_renders_a_folder_and_checks_every_file_first(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    (tmp_path / "lat").mkdir()
    np.save("lat/a_private.npy", rng.normal(size=(1, 100)).astype(np.float32))
    np.save("lat/b.npy", rng.normal(size=(2, 100)).astype(np.float32))
    res = run("generate", "lat", "-o", "out", "--model", "dcgan64")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_private.png", "b_0000.png", "b_0001.png"]
    np.save("lat/c.npy", rng.normal(size=(1, 7)).astype(np.float32))   # a setup error: one line, nothing written
    res = run("generate", "lat", "-o", "out2", "--model", "dcgan64")
    assert res.exit_code != 0 and "c.npy" in res.output and not (tmp_path / "out2").exists()

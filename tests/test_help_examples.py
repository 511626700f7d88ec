"""The examples in the commands' --help run on a fresh install with the offline model (dcgan64).

The examples are read from each command's --help text and run in order in one temporary folder, so that
later ones use the files earlier ones wrote (face.png and z.npy from `generate`, recon.png from `invert`,
private.png from `privatize`). Run: every example that names dcgan64, and every example of the commands
that load no model (ledger show, boundary list, weights list). Not run: examples for the StyleGAN
weights (w.npy, 111 MB download) and shell pipelines (`| jq`).
"""

from __future__ import annotations

import shlex

import pytest
from click.testing import CliRunner

from latentpriv.cli import cli

# in the order they run; every one must have at least one example that runs offline
COMMANDS = ["generate", "invert", "privatize", "ledger show", "sweep", "evaluate", "boundary list", "weights list"]
NO_MODEL = {"ledger show", "boundary list", "weights list"}


def examples(command: str) -> list[str]:
    """The ``latentpriv ...`` lines under the help text's "Examples:" (continuations joined)."""
    res = CliRunner().invoke(cli, [*command.split(), "--help"])
    assert res.exit_code == 0, res.output
    lines, out, inside = res.output.splitlines(), [], False
    i = 0
    while i < len(lines):
        text = lines[i].strip()
        if text.endswith(("Examples:", "Example:", "Compare:")) or text.startswith("Sweep ("):
            inside = True
        elif inside and text.startswith("latentpriv "):
            while text.endswith("\\") and i + 1 < len(lines):
                i += 1
                text = text[:-1] + " " + lines[i].strip()
            out.append(text)
        elif inside and text and not text.startswith("latentpriv"):
            inside = text.startswith("#")
        i += 1
    return out


def runnable(command: str, line: str) -> bool:
    return "|" not in line and ("dcgan64" in line or command in NO_MODEL)


@pytest.mark.slow
def test_help_examples_run_offline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LATENTPRIV_LEDGER", str(tmp_path / "ledger.jsonl"))
    # sweep's first example writes face.png and z.npy, which generate/invert/privatize use: run it first
    plan = [("sweep", examples("sweep")[0])]
    for command in COMMANDS:
        lines = [ln for ln in examples(command) if runnable(command, ln)]
        assert lines, f"`latentpriv {command} --help` has no example that runs with the offline model"
        plan += [(command, ln) for ln in lines if (command, ln) not in plan]
    for _command, line in plan:
        argv = shlex.split(line, comments=True)[1:]
        res = CliRunner().invoke(cli, argv, catch_exceptions=False)
        assert res.exit_code == 0, f"{line}\n{res.output}"
    assert (tmp_path / "recon.png").is_file() and (tmp_path / "private.png").is_file()

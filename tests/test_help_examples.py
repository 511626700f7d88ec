"""The examples in the commands' --help run on a fresh install with the offline model (dcgan64).

The examples are read from each command's --help text and run in order in one temporary folder, so that
later ones use the files earlier ones wrote (face.png and z.npy from `generate`, recon.png from `invert`,
private.png from `privatize`). Run: every example that names dcgan64, and every example of the commands
that load no model (ledger, boundary list, weights list, audit). Not run: examples for the StyleGAN
weights (w.npy, 111 MB download), shell pipelines (`| jq`), unseeded audits (statistical) and those in NOT_RUN. The one file a fresh install
cannot have, a latentpriv 0.1 ledger for `ledger import`, is written first. Nothing may reach the network
(`weights fetch dcgan64` finds the file present) and covariance estimates go to the temporary folder.
"""

from __future__ import annotations

import json
import shlex
import socket

import pytest
from click.testing import CliRunner

from latentpriv.cli import cli

# in the order they run; every one must have at least one example that runs offline
COMMANDS = ["generate", "invert", "privatize", "align", "ledger show", "ledger export", "ledger verify",
            "ledger recover", "ledger import", "sweep", "evaluate", "boundary list", "boundary train",
            "boundary covariance", "weights list", "weights path", "weights verify", "weights fetch", "audit"]
NO_MODEL = {"ledger show", "ledger export", "ledger verify", "ledger recover", "ledger import", "boundary list",
            "weights list", "audit"}
# documented and correct, but not for the suite (the alternatives beside them run)
NOT_RUN = ("--num 2000 ",             # boundary train as the bundled boundary was made (~1 min of dlib scoring)
           "--num 200000",            # boundary covariance with more samples
           "fetch dcgan64 --force")   # re-downloads: network


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
    if command == "audit" and "--seed" not in line:
        return False   # OpenDP noise: a statistical test that FAILs by chance (up to 5 %): seeded ones only
    return "|" not in line and ("dcgan64" in line or command in NO_MODEL) and not any(s in line for s in NOT_RUN)


def _no_network(monkeypatch) -> None:
    """Any connection outside this machine fails the test (examples must run offline)."""
    connect = socket.socket.connect

    def local_only(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"a --help example tried to reach {address}")
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", local_only)


@pytest.mark.slow
def test_help_examples_run_offline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LATENTPRIV_LEDGER", str(tmp_path / "ledger.sqlite"))
    monkeypatch.setattr("latentpriv.edit.covariance.cache_dir_for_write", lambda: tmp_path / "covariance")
    _no_network(monkeypatch)
    (tmp_path / "ledger.jsonl").write_text(json.dumps(   # a latentpriv 0.1 ledger line, for `ledger import`
        {"input_sha256": "ab" * 32, "mechanism": "laplace", "epsilon": 1.0, "time": "2026-01-01T00:00:00"}) + "\n")
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
    assert (tmp_path / "aligned.png").is_file() and (tmp_path / "charges.jsonl").is_file()
    assert sorted(p.name for p in (tmp_path / "renders").glob("z_private_*.png")) == [
        f"z_private_{i:04d}.png" for i in range(4)]

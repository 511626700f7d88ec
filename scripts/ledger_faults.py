"""Fault harness for the privacy ledger: kill folder runs at random points, fill or freeze the output disk,
and check that every face is released exactly once and never charged without its output.

Each *kill trial* starts ``latentpriv privatize DIR -o OUT --max-epsilon 1.5`` (a forked copy of this
process running the CLI, so a trial costs no interpreter start-up), sends SIGKILL or SIGTERM after a
uniformly random delay in [0, the time of a full run], waits, reruns the same command to completion and
checks:

* the interrupted run exited 143 on SIGTERM (or 0 if it had finished), -9 on SIGKILL;
* the rerun exited 0 (no face was refused: no face was charged for an output that never reached disk);
* every input has exactly one committed charge, its output exists with the sha256 recorded with the charge,
  and no charge is left pending.

*Disk trials* (root only, where ``mount -t tmpfs`` works): the output folder on a tiny tmpfs that fills up
(ENOSPC mid-run), then remounted read-only: nothing is charged for a failed write and ``ledger verify``
passes. Elsewhere they are reported as not run.

    python scripts/ledger_faults.py --trials 20 --files 20        # writes the ledger-faults section
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

START, END = "<!-- ledger_faults:start -->", "<!-- ledger_faults:end -->"


def make_inputs(root: Path, n: int, dim: int = 512, seed: int = 0) -> tuple[Path, Path]:
    """``root/in/f000.npy ...`` (one W latent each) and a unit boundary ``root/b.npy``."""
    rng = np.random.default_rng(seed)
    (root / "in").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        np.save(root / "in" / f"f{i:03d}.npy", rng.normal(size=(1, dim)).astype(np.float32))
    b = rng.normal(size=(1, dim))
    np.save(root / "b.npy", b / np.linalg.norm(b))
    return root / "in", root / "b.npy"


def privatize_args(root: Path, outdir: Path) -> list[str]:
    return ["privatize", str(root / "in"), "-o", str(outdir), "--boundary", str(root / "b.npy"), "--space", "w",
            "--epsilon", "1", "--max-epsilon", "1.5", "--ledger", str(root / "ledger.sqlite"), "--device", "cpu",
            "--no-decorrelate"]


def _cli(args: list[str]) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    from latentpriv.cli import cli

    cli.main(args=args, prog_name="latentpriv", standalone_mode=True)


def preload() -> None:
    """Import what a run imports (torch, OpenDP) once here, so that every forked run starts at once."""
    import latentpriv.cli
    import latentpriv.runs.distributed  # noqa: F401
    import latentpriv.runs.privatize  # noqa: F401
    from latentpriv.privacy.noise import make_noise_source

    make_noise_source(None)


def start(args: list[str]) -> Any:
    """Run the CLI in a forked child (modules already imported here: no start-up cost)."""
    proc = mp.get_context("fork").Process(target=_cli, args=(args,))
    proc.start()
    return proc


def run_to_end(args: list[str], timeout: float = 600) -> int:
    proc = start(args)
    proc.join(timeout)
    return int(proc.exitcode if proc.exitcode is not None else -1)


def check(root: Path, outdir: Path) -> dict[str, Any]:
    """Charges per input, outputs on disk, pending and unmatched charges."""
    from latentpriv.io import sha256_file
    from latentpriv.privacy.ledger import Ledger

    names = sorted(p.name for p in (root / "in").glob("*.npy"))
    with Ledger(root / "ledger.sqlite") as led:
        rel = led.releases()
        problems = led.verify()
    committed: dict[str, list[dict]] = {}
    pending = 0
    for r in rel:
        if r["state"] == "pending":
            pending += 1
        if r["state"] == "committed":
            committed.setdefault(r["info"].get("batch_item"), []).append(r)
    twice = [n for n in names if len(committed.get(n, [])) > 1]
    never = [n for n in names if not committed.get(n)]
    no_output = [r["release_id"] for rs in committed.values() for r in rs
                 if not (r["output"] and Path(r["output"]).is_file() and sha256_file(r["output"]) == r["output_sha256"])]
    outputs = sorted(p.name for p in outdir.glob("*_private.npy")) if outdir.is_dir() else []
    return {"files": len(names), "released_once": len(names) - len(twice) - len(never), "twice": twice,
            "never": never, "charged_without_output": no_output, "pending": pending, "outputs": len(outputs),
            "verify": problems, "cancelled": sum(r["state"] == "cancelled" for r in rel)}


def kill_trial(root: Path, sig: int, delay: float) -> dict[str, Any]:
    outdir = root / "out"
    args = privatize_args(root, outdir)
    proc = start(args)
    time.sleep(delay)
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, sig)
    proc.join(300)
    first = proc.exitcode
    filed = 0
    if (root / "ledger.sqlite").exists():
        from latentpriv.privacy.ledger import Ledger

        with Ledger(root / "ledger.sqlite") as led:
            filed = len(led.releases())
    rerun = run_to_end(args)
    res = check(root, outdir)
    res.update({"signal": signal.Signals(sig).name, "delay_s": round(delay, 3), "exit": first, "rerun_exit": rerun,
                "filed_before_rerun": filed})
    # SIGTERM: 143, or 0 when the run had finished; -15 only while the CLI was still starting (nothing filed
    # yet: the folder run installs its handler once the command is parsed)
    ok_exit = (first in (0, 143) or (first == -15 and filed == 0)) if sig == signal.SIGTERM else first in (0, -9)
    res["ok"] = bool(ok_exit and rerun == 0 and res["released_once"] == res["files"] == res["outputs"]
                     and not res["charged_without_output"] and res["pending"] == 0 and not res["verify"])
    return res


def torchrun_trial(root: Path, rng: np.random.Generator, procs: int = 2) -> dict[str, Any]:
    """SIGTERM to ``torchrun --nproc_per_node=procs`` once outputs appear (plus a random delay), then a rerun."""
    outdir = root / "out"
    args = privatize_args(root, outdir)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
           "-m", "latentpriv", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    t0 = time.perf_counter()
    while proc.poll() is None and not any(outdir.glob("f*_private.npy")) and time.perf_counter() - t0 < 300:
        time.sleep(0.05)
    time.sleep(float(rng.uniform(0.0, 0.5)))
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    interrupted = [int(m) for m in re.findall(r"interrupted after (\d+) of its", err)]
    rerun = run_to_end(args)
    res = check(root, outdir)
    res.update({"signal": "SIGTERM (torchrun)", "exit": proc.returncode, "rerun_exit": rerun,
                "ranks_interrupted": len(interrupted), "filed_before_rerun": -1,
                "killed_by_torchrun": "forcefully exiting via 9" in err})
    res["ok"] = bool(rerun == 0 and res["released_once"] == res["files"] == res["outputs"]
                     and not res["charged_without_output"] and res["pending"] == 0 and not res["verify"])
    return res


def _mount_tmpfs(path: Path, size_kb: int) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


def disk_trials(base: Path, files: int) -> dict[str, Any]:
    """Full disk (ENOSPC on a tiny tmpfs), then the same tmpfs read-only."""
    root = base / "disk"
    make_inputs(root, files)
    mnt = root / "mnt"
    if not _mount_tmpfs(mnt, 20):
        return {"run": False, "why": "needs root and mount -t tmpfs"}
    try:
        outdir = mnt / "out"
        code = run_to_end(privatize_args(root, outdir))
        full = check(root, outdir)
        full.update({"exit": code, "ok": bool(code != 0 and 0 < full["outputs"] < files
                                              and not full["charged_without_output"] and full["pending"] == 0
                                              and not full["verify"] and len(full["never"]) == files - full["outputs"])})
        before = full["cancelled"]
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        code = run_to_end([*privatize_args(root, outdir), "--overwrite"])
        ro = check(root, outdir)
        ro.update({"exit": code, "ok": bool(code != 0 and ro["cancelled"] == before and ro["pending"] == 0
                                            and not ro["verify"] and ro["released_once"] == full["released_once"])})
        return {"run": True, "full_disk": full, "read_only": ro}
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    preload()
    rng = np.random.default_rng(args.seed)
    base = Path(tempfile.mkdtemp(prefix="ledger-faults-"))
    try:
        make_inputs(base / "calib", args.files)
        t0 = time.perf_counter()
        code = run_to_end(privatize_args(base / "calib", base / "calib" / "out"))
        t_full = time.perf_counter() - t0
        if code != 0:
            raise SystemExit(f"a plain run failed (exit {code})")
        trials = []
        for i in range(args.trials):
            for sig in (signal.SIGKILL, signal.SIGTERM):
                root = base / f"t{i}-{sig.name}"
                make_inputs(root, args.files, seed=i)
                res = kill_trial(root, sig, float(rng.uniform(0.0, t_full)))
                trials.append(res)
                print(json.dumps({k: res[k] for k in ("signal", "delay_s", "exit", "rerun_exit", "released_once",
                                                      "files", "ok")}), file=sys.stderr)
                shutil.rmtree(root, ignore_errors=True)
        dist_trials = []
        for i in range(args.torchrun_trials):
            root = base / f"tr{i}"
            make_inputs(root, args.torchrun_files, seed=100 + i)
            dist_trials.append(torchrun_trial(root, rng))
            print(json.dumps({k: dist_trials[-1][k] for k in ("exit", "ranks_interrupted", "rerun_exit",
                                                               "released_once", "files", "ok")}), file=sys.stderr)
            shutil.rmtree(root, ignore_errors=True)
        disk = disk_trials(base, args.files) if not args.no_disk else {"run": False, "why": "--no-disk"}
        return {"time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "files": args.files,
                "full_run_s": round(t_full, 2), "trials": trials, "disk": disk, "torchrun": dist_trials,
                "torchrun_files": args.torchrun_files,
                "command": "python scripts/ledger_faults.py " + " ".join(sys.argv[1:])}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def markdown(info: dict[str, Any]) -> str:
    lines = [START, "## Privacy ledger under faults (`scripts/ledger_faults.py`)", "",
             f"Measured {info['time']} by `{info['command']}` on the development box: `latentpriv privatize DIR "
             f"--max-epsilon 1.5` over {info['files']} W latents (epsilon 1 each, so each face can be released "
             f"once), a full run taking {info['full_run_s']} s; each trial kills the run after a uniformly random "
             "delay in [0, full run], reruns it and checks the ledger.", "",
             "| signal | trials | interrupted mid-run | exit 143 / -9 | finished first (0) | killed in start-up "
             "| rerun exit 0 | every face released exactly once | charged without output | left pending | all checks |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in ("SIGKILL", "SIGTERM"):
        ts = [t for t in info["trials"] if t["signal"] == name]
        if not ts:
            continue
        code = 143 if name == "SIGTERM" else -9
        startup = sum(t["filed_before_rerun"] == 0 and t["exit"] != 0 for t in ts)
        lines.append(f"| {name} | {len(ts)} | {sum(t['exit'] != 0 for t in ts) - startup} | "
                     f"{sum(t['exit'] == code for t in ts)} | {sum(t['exit'] == 0 for t in ts)} | {startup} | "
                     f"{sum(t['rerun_exit'] == 0 for t in ts)} | "
                     f"{sum(t['released_once'] == t['files'] == t['outputs'] for t in ts)} | "
                     f"{sum(len(t['charged_without_output']) for t in ts)} | {sum(t['pending'] for t in ts)} | "
                     f"{sum(t['ok'] for t in ts)} / {len(ts)} |")
    lines += ["", "\"Killed in start-up\": the signal came before the run had filed anything (exit 143, or -15 while "
              "Python was still parsing the command, before the folder run installs its handler: nothing was "
              "charged or written either way). A run on a full disk stops with an error once it cannot write its "
              "own records; the files it never reached stay unreleased and uncharged."]
    tr = info.get("torchrun") or []
    if tr:
        lines += ["", f"torchrun with 2 ranks ({info['torchrun_files']} latents): SIGTERM to torchrun once the first "
                  f"outputs appear (plus 0-0.5 s): {len(tr)} trials, both ranks stopped cleanly (exit 143) in "
                  f"{sum(t['ranks_interrupted'] == 2 for t in tr)}, torchrun had to SIGKILL a rank in "
                  f"{sum(t['killed_by_torchrun'] for t in tr)}; torchrun itself exits "
                  f"{sorted({t['exit'] for t in tr})} (its own status after a signal); after the rerun every face was "
                  f"released exactly once in {sum(t['released_once'] == t['files'] == t['outputs'] for t in tr)}, "
                  f"charged without output {sum(len(t['charged_without_output']) for t in tr)}, left pending "
                  f"{sum(t['pending'] for t in tr)}: {sum(t['ok'] for t in tr)} / {len(tr)} pass."]
    d = info["disk"]
    if d.get("run"):
        f, r = d["full_disk"], d["read_only"]
        lines += ["", f"Full disk (output folder on a 20 KiB tmpfs): exit {f['exit']}, {f['outputs']} of {f['files']} "
                  f"outputs written, each charged once; {f['cancelled']} failed writes cancelled, "
                  f"{len(f['charged_without_output'])} charged without output, `ledger verify` "
                  f"{'ok' if not f['verify'] else f['verify']}: {'pass' if f['ok'] else 'FAIL'}.",
                  f"Read-only output (the same tmpfs remounted ro, rerun with --overwrite): exit {r['exit']}, nothing "
                  f"charged (the writable-folder probe refuses before the budget check), `ledger verify` "
                  f"{'ok' if not r['verify'] else r['verify']}: {'pass' if r['ok'] else 'FAIL'}."]
    else:
        lines += ["", f"Disk trials not run ({d.get('why')}); tests/test_ledger_faults.py simulates ENOSPC and a "
                  "read-only folder."]
    lines.append(END)
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    """Put ``section`` between this script's markers in ``path`` (appended the first time), atomically."""
    from latentpriv.io import atomic_write

    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END) + r"\n?", re.S)
    text = pattern.sub(lambda _: section, text, count=1) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    with atomic_write(path, "w") as fh:
        fh.write(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=20, help="trials per signal (default 20)")
    p.add_argument("--files", type=int, default=20, help="latents per folder run (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill delays")
    p.add_argument("--no-disk", action="store_true", help="skip the tmpfs full-disk / read-only trials")
    p.add_argument("--torchrun-trials", type=int, default=5, help="SIGTERM trials of a 2-rank torchrun run")
    p.add_argument("--torchrun-files", type=int, default=100, help="latents per torchrun trial")
    p.add_argument("--output", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md")
    p.add_argument("--no-write", action="store_true", help="print the section only")
    args = p.parse_args(argv)
    info = run(args)
    section = markdown(info)
    print(section)
    if not args.no_write:
        write_section(args.output, section)
    bad = [t for t in info["trials"] + info["torchrun"] if not t["ok"]]
    disk_bad = info["disk"].get("run") and not (info["disk"]["full_disk"]["ok"] and info["disk"]["read_only"]["ok"])
    return 1 if bad or disk_bad else 0


if __name__ == "__main__":
    sys.exit(main())

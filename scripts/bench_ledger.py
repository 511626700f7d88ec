"""Benchmark of the privacy ledger at scale: a single-file release and the budget check with an empty ledger and
with one holding N charges (default 1,000,000).

Measured: the budget check (:meth:`Ledger.totals_for` of one face: keys probed, charges read, composed) and a
whole reservation (check + pending charge + cancel, three SQLite transactions) on the filled ledger, for a new
face and for a face with 5 earlier releases; one single-file release in-process (``accounted_release`` with
its writes) and ``latentpriv privatize FILE`` as a separate process (wall time and peak memory), on an empty
and on the filled ledger.

    python scripts/bench_ledger.py --entries 1000000         # writes the ledger section of docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

START, END = "<!-- bench_ledger:start -->", "<!-- bench_ledger:end -->"
DIM = 512


def fill(path: Path, entries: int, per_face: int = 5, chunk: int = 100_000) -> float:
    """Add ``entries`` committed charges (``entries / per_face`` faces, three keys each, like a release's full and
    direction-set views and exact-bytes key) straight into the tables; returns seconds taken."""
    from latentpriv.privacy.ledger import Ledger, Profile

    t0 = time.perf_counter()
    prof = Profile.make("coordinate", {"bench": True}, "bench profile")
    rng = np.random.default_rng(0)
    faces = max(1, entries // per_face)
    with Ledger(path) as led:
        con = led.connect()
        con.execute("BEGIN IMMEDIATE")
        con.execute("INSERT OR IGNORE INTO profiles VALUES (?, ?, ?, ?)", (prof.id, prof.relation, prof.description,
                                                                           "{}"))
        now = dt.datetime.now(dt.timezone.utc).isoformat()
        keys = rng.bytes(32 * 3 * faces)
        for lo in range(0, entries, chunk):
            ids = range(lo, min(lo + chunk, entries))
            con.executemany(
                "INSERT INTO releases (release_id, state, time, updated, command, mechanism, epsilon, delta, rho, "
                "dither_epsilon, dither_delta, profile, forced, output, output_sha256, info) VALUES "
                "(?, 'committed', ?, ?, 'privatize', 'laplace', 1.01, 1e-10, NULL, 0.01, 1e-10, ?, 0, ?, ?, '{}')",
                ((f"bench-{i:09d}", now, now, prof.id, f"/data/out/f{i:09d}_private.npy", "0" * 64) for i in ids))
            con.executemany("INSERT INTO charges (id, release_id, row, face) VALUES (?, ?, 0, ?)",
                            ((i + 1, f"bench-{i:09d}", keys[96 * (i % faces): 96 * (i % faces) + 32]) for i in ids))
            con.executemany("INSERT INTO charge_keys VALUES (?, ?)",
                            ((keys[96 * (i % faces) + 32 * v: 96 * (i % faces) + 32 * (v + 1)], i + 1)
                             for i in ids for v in (0, 1, 2)))
        con.execute("COMMIT")
    return time.perf_counter() - t0


def _median_ms(fn, reps: int) -> float:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(out), 2)


def check_times(path: Path, reps: int) -> dict[str, Any]:
    """Median milliseconds of the budget check and of a reservation, for a new face and a face with history."""
    from latentpriv.privacy.ledger import FaceKey, Ledger, Profile, Spend

    prof = Profile.make("coordinate", {"bench": True}, "bench profile")
    rng = np.random.default_rng(1)
    with Ledger(path) as led:
        con = led.connect()
        old = [bytes(k) for (k,) in con.execute("SELECT key FROM charge_keys LIMIT 2")] or [rng.bytes(32)]
        w, d = rng.normal(size=(1, DIM)), rng.normal(size=(1, DIM))
        real, _ = led.keys_for(w, family="bench:w", directions=d)
        # a real face's probes (views, neighbouring cells, legacy key) with an existing face's key among them
        known = FaceKey(old[0], (old[0],), (*real[0].lookup, *old))
        new = real[0]
        out = {"lookup_keys": len(new.lookup),
               "keys_ms": _median_ms(lambda: led.keys_for(w, family="bench:w", directions=d), reps),
               "releases_found": led.totals_for([known])[known.primary.hex()].releases}
        for name, face in (("new_face", new), ("face_with_history", known)):
            out[f"check_ms_{name}"] = _median_ms(lambda f=face: led.totals_for([f]), reps)

            def reserve_cancel(f=face):
                led.cancel(led.reserve([f], Spend("laplace", 1.0), prof, max_epsilon=1e9))

            out[f"reserve_cancel_ms_{name}"] = _median_ms(reserve_cancel, max(5, reps // 5))
    return out


def release_inprocess(path: Path, work: Path, reps: int) -> float:
    """Median ms of one single-file release (face keys, check, draw, write, commit) in this process."""
    from latentpriv.io import save_npy, write_json
    from latentpriv.privacy.ledger import Ledger
    from latentpriv.privacy.noise import OpenDPNoise
    from latentpriv.privacy.release import ReleaseParams, accounted_release

    rng = np.random.default_rng(2)
    d = rng.normal(size=(1, DIM))
    d /= np.linalg.norm(d)
    times = []
    with Ledger(path) as led:
        for i in range(reps + 1):
            w = rng.normal(size=(1, DIM)).astype(np.float32)
            out = work / f"r{i}.npy"

            def commit(lat, rec, out=out):
                save_npy(out, lat)
                write_json(out.with_suffix(".json"), rec)

            t0 = time.perf_counter()
            accounted_release(w, d, params=ReleaseParams(epsilon=1.0), noise=OpenDPNoise(), ledger=led, model="bench",
                              space="w", max_epsilon=10.0, commit=commit, output=out)
            if i:   # the first one warms caches (public direction sets, OpenDP)
                times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 1)


def release_cli(path: Path, work: Path, reps: int) -> dict[str, float]:
    """Median wall seconds and peak RSS (MiB) of ``latentpriv privatize FILE`` as a separate process."""
    rng = np.random.default_rng(3)
    d = rng.normal(size=(1, DIM))
    np.save(work / "b.npy", d / np.linalg.norm(d))
    walls, rss = [], []
    for i in range(reps):
        np.save(work / f"c{i}.npy", rng.normal(size=(1, DIM)).astype(np.float32))
        cmd = [sys.executable, "-c", "import resource, sys; from latentpriv.cli import main; "
               "sys.argv = ['latentpriv'] + sys.argv[1:]\ntry:\n    main()\nfinally:\n"
               "    print('RSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)",
               "privatize", str(work / f"c{i}.npy"), "--boundary", str(work / "b.npy"), "--space", "w", "--epsilon",
               "1", "--max-epsilon", "10", "--ledger", str(path), "--no-decorrelate", "-o", str(work / f"c{i}_o.npy")]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)
        walls.append(time.perf_counter() - t0)
        if r.returncode != 0:
            raise SystemExit(f"privatize failed: {r.stderr[-2000:]}")
        m = re.search(r"RSS (\d+)", r.stderr)
        rss.append(int(m.group(1)) / 1024 if m else float("nan"))
    return {"wall_s": round(statistics.median(walls), 2), "peak_rss_mib": round(max(rss), 0)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="bench-ledger-"))
    try:
        empty, big = base / "empty.sqlite", base / "big.sqlite"
        fill_s = fill(big, args.entries)
        info: dict[str, Any] = {"time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                                "entries": args.entries, "fill_s": round(fill_s, 1),
                                "file_mib": round(big.stat().st_size / 2**20, 1),
                                "command": "python scripts/bench_ledger.py " + " ".join(sys.argv[1:])}
        for name, path in (("empty", empty), ("filled", big)):
            work = base / f"w-{name}"
            work.mkdir()
            info[name] = {"check": check_times(path, args.reps),
                          "release_ms": release_inprocess(path, work, args.reps),
                          "cli": release_cli(path, work, args.cli_reps)}
        info["ratio_inprocess"] = round(info["filled"]["release_ms"] / info["empty"]["release_ms"], 2)
        info["ratio_cli"] = round(info["filled"]["cli"]["wall_s"] / info["empty"]["cli"]["wall_s"], 2)
        info["cpu"] = os.cpu_count()
        info["maxrss_bench_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        return info
    finally:
        shutil.rmtree(base, ignore_errors=True)


def markdown(info: dict[str, Any]) -> str:
    e, f = info["empty"], info["filled"]
    n = f"{info['entries']:,}"
    rows = [
        ("face keys of one latent: views, projections, HMACs (ms)", e["check"]["keys_ms"], f["check"]["keys_ms"]),
        ("budget check, a new face (ms)", e["check"]["check_ms_new_face"], f["check"]["check_ms_new_face"]),
        ("budget check, a face with 5 releases (ms)", e["check"]["check_ms_face_with_history"],
         f["check"]["check_ms_face_with_history"]),
        ("check + pending charge + cancel, new face (ms)", e["check"]["reserve_cancel_ms_new_face"],
         f["check"]["reserve_cancel_ms_new_face"]),
        ("single-file release in-process: keys, check, draw, write, commit (ms)", e["release_ms"], f["release_ms"]),
        ("`latentpriv privatize FILE`, separate process, wall (s)", e["cli"]["wall_s"], f["cli"]["wall_s"]),
        ("`latentpriv privatize FILE`, peak RSS (MiB)", e["cli"]["peak_rss_mib"], f["cli"]["peak_rss_mib"]),
    ]
    lines = [START, "## Privacy ledger at scale (`scripts/bench_ledger.py`)", "",
             f"Measured {info['time']} by `{info['command']}` on the development box ({info['cpu']} cores shared with "
             f"other work, so absolute times are noisy). The filled ledger holds {n} committed charges "
             f"({info['file_mib']} MiB, filled in {info['fill_s']} s); each budget check probes "
             f"{f['check']['lookup_keys']} keys (the face's views and neighbouring cells). Medians.", "",
             f"| | empty ledger | {n} entries |", "|---|---:|---:|"]
    lines += [f"| {name} | {a} | {b} |" for name, a, b in rows]
    lines += ["", f"Filled / empty: {info['ratio_inprocess']}x in-process, {info['ratio_cli']}x for the command "
              "(target <= 1.5x); budget check on the filled ledger "
              f"{max(f['check']['check_ms_new_face'], f['check']['check_ms_face_with_history'])} ms, "
              f"{round(f['check']['keys_ms'] + max(f['check']['check_ms_new_face'], f['check']['check_ms_face_with_history']), 2)}"
              " ms with the face keys (target <= 20 ms). "
              "Every lookup goes through the index on face keys, so a release reads only its own face's charges "
              "whatever the ledger's size.", END]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    """Put ``section`` between this script's markers in ``path`` (appended the first time), atomically."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import ledger_faults

    ledger_faults.START, ledger_faults.END = START, END
    ledger_faults.write_section(path, section)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--entries", type=int, default=1_000_000)
    p.add_argument("--reps", type=int, default=50, help="repetitions of the in-process timings")
    p.add_argument("--cli-reps", type=int, default=3, help="repetitions of the separate-process release")
    p.add_argument("--output", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md")
    p.add_argument("--json", type=Path, default=None, help="also write the raw numbers here")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    info = run(args)
    section = markdown(info)
    print(section)
    if args.json:
        args.json.write_text(json.dumps(info, indent=2) + "\n")
    if not args.no_write:
        write_section(args.output, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())

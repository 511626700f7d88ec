#!/usr/bin/env python3
"""The full artifact audit (issue 11): attack the saved .npy bytes of releases over the neighbour-pair search.

Two steps, so that a long run can be kept and the table rebuilt from it:

    # 1. run the audit against whatever `latentpriv` is importable; the JSON is rewritten after every pair
    nice -n 15 python scripts/audit_artifact.py run --label new --json /tmp/artifact_new.json
    # (the construction before issue 11, from a checkout of that commit on PYTHONPATH)
    PYTHONPATH=/tmp/old_checkout python scripts/audit_artifact.py run --label old --json /tmp/artifact_old.json

    # 2. write the "## Artifact audit" section at the end of docs/PRIVACY.md from one or more runs
    python scripts/audit_artifact.py docs /tmp/artifact_old.json /tmp/artifact_new.json

Trials: the worst-case pair (the tightness check of the coordinate) always gets --trials releases per side;
--cap limits every other pair and --wp-cap the W+ pairs (a release dithers L x D numbers with OpenDP's
discrete Gaussian, which dominates the cost). The per-element attackers use the first --lattice-trials.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Artifact audit"
# every module of latentpriv/privacy/ a release runs through: a report names the exact code it audited
RELEASE_MODULES = ("coordinate_mechanisms.py", "float_release.py", "mechanisms.py", "noise.py", "accounting.py")


def run(args: argparse.Namespace) -> int:
    import latentpriv
    from latentpriv.io import sha256_file, write_json
    from latentpriv.privacy.artifact_audit import audit_artifact, default_pairs, file_reader

    family = default_pairs(quick=args.quick, epsilon=args.epsilon, trials_cap=args.cap, wp_cap=args.wp_cap)
    # --only: part of the search, still Bonferroni-corrected over all of it (its rows can replace a full run's)
    pairs = [p for p in family if any(s in p.name for s in args.only)] if args.only else family
    done = []
    meta = {"label": args.label, "latentpriv": latentpriv.__file__, "version": latentpriv.__version__,
            "trials": args.trials, "lattice_trials": args.lattice_trials, "cap": args.cap, "wp_cap": args.wp_cap,
            "epsilon": args.epsilon, "quick": args.quick,
            "mechanisms_sha256": {name: sha256_file(Path(latentpriv.__file__).parent / "privacy" / name)
                               for name in RELEASE_MODULES},
            "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    t0 = time.perf_counter()

    def progress(pa) -> None:
        done.append(pa.as_dict())
        print(pa.summary(), f"[{pa.seconds:.0f} s]", flush=True)
        write_json(args.json, {**meta, "partial": True, "pairs": done})

    result = audit_artifact(pairs, trials=args.trials, lattice_trials=args.lattice_trials, read_input=file_reader,
                            progress=progress, family=family)
    report = {**meta, "partial": False, "seconds": round(time.perf_counter() - t0, 1), **result.as_dict()}
    write_json(args.json, report)
    print(f"{args.label}: largest lower bound {result.epsilon_lb:.3f}; tightness {result.tightness}; "
          f"{'PASS' if result.passed else 'FAIL'} ({report['seconds']:.0f} s)")
    return 0


def _fmt_pair(p: dict) -> str:
    if p["status"] == "refused":
        return "refused"
    best = max(p["attacks"], key=lambda a: a["epsilon_lb"]) if p["attacks"] else None
    cell = f"{p['epsilon_lb']:.2f}"
    if best and best["epsilon_lb"] > 0:
        cell += f" ({best['attacker']})"
    return cell + ("" if p["result"] == "PASS" else " **FAIL**")


def table(reports: list[dict]) -> str:
    """Markdown: one row per pair, one column per run (best attacker's lower bound vs the claim)."""
    names: list[str] = []
    for r in reports:
        for p in r["pairs"]:
            if p["pair"]["name"] not in names:
                names.append(p["pair"]["name"])
    head = "| neighbour pair | " + " | ".join(
        f"{r['label']}: trials/side (lattice) | {r['label']}: epsilon_lb (best attacker) | {r['label']}: claimed"
        for r in reports) + " |"
    lines = [head, "|---" * (1 + 3 * len(reports)) + "|"]
    for name in names:
        cells = [name]
        for r in reports:
            p = next((q for q in r["pairs"] if q["pair"]["name"] == name), None)
            if p is None:
                cells += ["not run", "", ""]
            elif p["status"] == "refused":
                cells += ["-", "refused", "-"]
            elif p["status"] == "refused-one-side":
                cells += ["-", "one input refused, the other released", "-"]
            else:
                claim = "none" if p["claimed_epsilon"] is None else f"{p['claimed_epsilon']:g}"
                if p["claimed_delta"]:
                    claim += f", delta {p['claimed_delta']:.2g}"
                cells += [f"{p['trials']:,} ({p['lattice_trials']:,})", _fmt_pair(p), claim]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def attacker_table(report: dict) -> str:
    """Markdown: every attacker's lower bound for every audited pair of one run."""
    from latentpriv.privacy.artifact_audit import ATTACKERS

    lines = ["| neighbour pair | " + " | ".join(ATTACKERS) + " | claimed |", "|---" * (len(ATTACKERS) + 2) + "|"]
    for p in report["pairs"]:
        if p["status"] != "audited":
            continue
        got = {a["attacker"]: a["epsilon_lb"] for a in p["attacks"]}
        cells = [f"{got[a]:.2f}" if a in got else "-" for a in ATTACKERS]
        claim = "none" if p["claimed_epsilon"] is None else f"{p['claimed_epsilon']:g}"
        lines.append(f"| {p['pair']['name']} | " + " | ".join(cells) + f" | {claim} |")
    return "\n".join(lines)


def section(reports: list[dict]) -> str:
    parts = [SECTION, "",
             "`latentpriv audit artifact` (and `scripts/audit_artifact.py`, which wrote this section) attacks the "
             "file a user publishes, not just the released coordinate. For each neighbour pair it runs the "
             "release exactly as `latentpriv privatize FILE` does (the CLI's reader, `latentpriv.privatize` "
             "with OpenDP's samplers, the `.npy` bytes of the writer) many times for each input, and attackers "
             "that see only those bytes, the public parameters and both candidate inputs try to tell the two "
             "apart: `coordinate`, the released coordinate; `sieve`, an output-only lattice sieve that undoes "
             "the shift under each hypothesis and tests whether the result lands back on the input's float "
             "lattice; `replay`, \"input plus shift\" from each candidate, counting exact matches; `residual`, "
             "the nearer residual (the likelihood ratio of a Gaussian dither); `grid`, the distance to OpenDP's "
             "output grid of the coordinates reconstructed along the directions as given; `lowbits`, the "
             "trailing zero bits of the stored numbers. Each attacker's scores give an epsilon lower bound "
             "(threshold and point events chosen on one half of the releases and tested on the other, "
             "Clopper-Pearson, delta-aware), with 95 % confidence simultaneous over every attacker x pair "
             "(Bonferroni). An input the release refuses is listed as refused; a pair where one input is "
             "refused and the other released fails (the refusal tells them apart). The latents are synthetic "
             "(random residuals on random orthonormal directions; the dcgan64 pairs have its Z shape); the "
             "claimed epsilon is the release's total spend (coordinates, epsilon 1, plus the residual dither).",
             ""]
    for r in reports:
        when = r.get("started", "")
        partial = " (partial: the run did not finish)" if r.get("partial") else ""
        secs = f", {r['seconds'] / 60:.0f} min" if "seconds" in r else ""
        failed = [p["pair"]["name"] for p in r["pairs"] if p["result"] != "PASS"]
        verdict = ("every bound <= its claim." if not failed else
                   f"FAIL for {len(failed)} of {len(r['pairs'])} pairs" + (": " + "; ".join(failed) + "."
                                                                            if len(failed) <= 3 else "."))
        parts.append(f"- **{r['label']}**{partial}: run {when}{secs} on {r.get('cpus')} CPU cores; "
                     f"largest lower bound {max((p['epsilon_lb'] for p in r['pairs']), default=0):.2f}; {verdict}")
        for rr in r.get("reruns", []):
            parts.append(f"  Rerun {rr['started']} (trials as in the table): " + "; ".join(rr["pairs"]) + ".")
        t = r.get("tightness") or next((p["checks"]["tightness"] for p in r["pairs"]
                                        if "tightness" in p.get("checks", {})), {})
        if t:
            ratio = f" = {t['ratio']:.2f} x" if t.get("ratio") else ""
            parts.append(f"  Coordinate at the worst-case pair ({t['pair']}, {t['trials']:,} releases per side, "
                         f"95 % for this one test): epsilon_lb {t['epsilon_lb']:.3f}{ratio} the coordinate's "
                         f"epsilon {t['coordinate_epsilon']:g}.")
    parts += ["", table(reports), ""]
    for r in reports:
        parts += [f"Every attacker, **{r['label']}**:", "", attacker_table(r), ""]
    parts += ["A lower bound near 4.3 (2,000 releases per side), 4.9 (4,000) or 6.6 (20,000) is a perfect "
              "separation: the most those trials can prove at this confidence.", ""]
    return "\n".join(parts)


def merge(reports: list[dict]) -> list[dict]:
    """One report per label: a later report's pairs replace the earlier ones of the same name (a rerun of
    some pairs with more trials); the other fields come from the first report of the label."""
    out: dict[str, dict] = {}
    for r in reports:
        if r["label"] not in out:
            out[r["label"]] = {**r, "pairs": list(r["pairs"])}
            continue
        m = out[r["label"]]
        for p in r["pairs"]:
            names = [q["pair"]["name"] for q in m["pairs"]]
            name = p["pair"]["name"]
            if name in names:
                m["pairs"][names.index(name)] = p
            else:
                m["pairs"].append(p)
        m["reruns"] = [*m.get("reruns", []), {"pairs": [p["pair"]["name"] for p in r["pairs"]],
                                              "trials": r.get("trials"), "started": r.get("started")}]
    return list(out.values())


def docs(args: argparse.Namespace) -> int:
    reports = merge([json.loads(Path(p).read_text()) for p in args.reports])
    path = args.file or ROOT / "docs" / "PRIVACY.md"
    text = path.read_text()
    i = text.find("\n" + SECTION + "\n")
    if i < 0:  # first run: at the end of the file
        head, tail = text, ""
    else:      # replace this section only, up to the next "## " heading (others' sections stay)
        j = text.find("\n## ", i + 1)
        head, tail = text[:i], ("" if j < 0 else text[j:])
    path.write_text(head.rstrip("\n") + "\n\n" + section(reports).rstrip("\n") + "\n" + tail)
    print(f"wrote {SECTION!r} into {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the audit and write its JSON report")
    r.add_argument("--label", required=True, help="name of this run in the table (e.g. old, new)")
    r.add_argument("--json", type=Path, required=True, help="report path (rewritten after every pair)")
    r.add_argument("--trials", type=int, default=20_000, help="releases per side (scalar attackers)")
    r.add_argument("--lattice-trials", type=int, default=2_000, help="releases per side for the lattice attackers")
    r.add_argument("--cap", type=int, default=None, help="cap on releases per side of every non-worst-case pair")
    r.add_argument("--wp-cap", type=int, default=2_000, help="cap on releases per side of the W+ pairs")
    r.add_argument("--epsilon", type=float, default=1.0)
    r.add_argument("--quick", action="store_true")
    r.add_argument("--only", nargs="*", default=None, help="run only pairs whose name contains one of these")
    d = sub.add_parser("docs", help="write the section of docs/PRIVACY.md from reports")
    d.add_argument("reports", nargs="+", type=Path, help="run reports; a later one with the same label replaces "
                                                         "the pairs it reran")
    d.add_argument("--file", type=Path, default=None, help="the Markdown file (default docs/PRIVACY.md)")
    args = ap.parse_args(argv)
    return run(args) if args.cmd == "run" else docs(args)


if __name__ == "__main__":
    sys.exit(main())

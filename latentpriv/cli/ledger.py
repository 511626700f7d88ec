"""``latentpriv ledger``: inspect, migrate, export, verify and repair the privacy ledger."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

LEDGER_HELP = "Ledger file (default $LATENTPRIV_LEDGER or ~/.local/share/latentpriv/ledger.sqlite)."


def _ledger_option(f):
    return click.option("--ledger", "ledger_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                        help=LEDGER_HELP)(f)


@click.group("ledger")
def ledger() -> None:
    """The privacy ledger: what each face has spent (a SQLite file; keep it private, on a local disk).

    Every release (privatize, sweep) charges each face it releases. Releases of one face with the same
    protection profile (directions, split, layers, neighbouring relation) compose: pure-DP spends add,
    Gaussian spends compose in zCDP. A face released with two profiles, or with a seeded or seed-mechanism
    release, is unbounded. Faces are keyed by a keyed hash of their latent (or --subject ID).
    """


@ledger.command("show")
@click.argument("input_path", metavar="[INPUT]", required=False, type=click.Path(dir_okay=False, path_type=Path))
@_ledger_option
@click.option("--space", type=click.Choice(["z", "w", "wp"]), default=None,
              help="Space of INPUT (wp for a 2-D (L, D) W+ latent).")
@click.option("--model", default="stylegan_ffhq", show_default=True, help="Model of INPUT (part of the face key).")
@click.option("--subject", default=None, metavar="ID", help="Show the faces charged under --subject ID.")
@click.option("--label", default=None, metavar="TEXT", help="Only faces with a release labelled TEXT.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show(input_path: Path | None, ledger_path: Path | None, space: str | None, model: str, subject: str | None,
         label: str | None, as_json: bool) -> None:
    """Per face: releases, profiles used, total spend and why it is unbounded (all faces, or INPUT's rows).

    \b
    Examples:
      latentpriv ledger show
      latentpriv ledger show z.npy --model dcgan64 --space z
    """
    from latentpriv.privacy.ledger import Ledger
    from latentpriv.privacy.ledger_report import face_reports

    led = Ledger(ledger_path)
    latent = sp = None
    if input_path is not None and led.path.exists():
        from latentpriv.cli.options import warn
        from latentpriv.io import load_latent_input

        inp = load_latent_input(input_path, space=space, model=model, warn=warn)
        latent, sp = inp.latent, inp.space
    reports = face_reports(led, latent=latent, space=sp, model=model, subject=subject, label=label)
    if as_json:
        click.echo(json.dumps({"ledger": str(led.path), "faces": reports}, indent=2))
        return
    click.echo(f"ledger: {led.path}")
    if not reports:
        click.echo("no releases recorded")
        return
    for r in reports:
        eps = "unbounded" if r["epsilon"] is None else f"{r['epsilon']:.4g}"
        head = f"face {r['face'][:16]}: {r['releases']} release(s)"
        if r["pending"]:
            head += f" ({r['pending']} pending)"
        click.echo(f"{head}, epsilon {eps}, delta {r['delta']:.3g}"
                   + (f", {r['forced_releases']} forced" if r["forced_releases"] else ""))
        for p in r["profiles"]:
            click.echo(f"  profile: {p['profile']}: {p['releases']} release(s)")
        if r["unbounded_reason"]:
            click.echo(f"  unbounded: {r['unbounded_reason']}")
        if r["input_files"]:
            click.echo(f"  inputs: {', '.join(r['input_files'])}")
        if r["outputs"]:
            click.echo(f"  outputs: {', '.join(r['outputs'])}")
        if r["labels"]:
            click.echo(f"  labels: {', '.join(r['labels'])}")


@ledger.command("import")
@click.argument("source", metavar="OLD.jsonl", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_ledger_option
@click.option("--skip-invalid", is_flag=True,
              help="Skip torn or invalid lines (reported by number) and mark their faces unbounded.")
def import_(source: Path, ledger_path: Path | None, skip_invalid: bool) -> None:
    """Migrate a latentpriv 0.1 JSONL ledger into the SQLite ledger (importing twice adds nothing).

    \b
    Example:
      latentpriv ledger import ledger.jsonl   # 0.1 kept it in ~/.local/share/latentpriv/
    """
    from latentpriv.privacy.ledger import Ledger

    led = Ledger(ledger_path, migrating=True)
    out = led.import_jsonl(source, skip_invalid=skip_invalid)
    for bad in out["invalid"]:
        what = "its face is now unbounded" if bad["face_marked_unbounded"] else "its face could not be read"
        click.echo(f"Warning: {source}:{bad['line']}: skipped ({bad['reason']}); {what}", err=True)
    click.echo(f"imported {out['imported']} entr{'y' if out['imported'] == 1 else 'ies'} from {source} into {led.path}")


@ledger.command("export")
@_ledger_option
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSONL file to write (default: standard output).")
def export(ledger_path: Path | None, output: Path | None) -> None:
    """Write every charge as one JSON line (for auditors): face key, spend, state, profile, files.

    \b
    Examples:
      latentpriv ledger export -o charges.jsonl
      latentpriv ledger export --ledger team.sqlite | jq .epsilon
    """
    from latentpriv.io import atomic_write
    from latentpriv.privacy.ledger import Ledger

    led = Ledger(ledger_path)
    if output is None:
        led.export_jsonl(sys.stdout)
        return
    with atomic_write(output, "w") as fh:
        n = led.export_jsonl(fh)
    click.echo(f"{n} charge(s) written to {output}", err=True)


@ledger.command("verify")
@_ledger_option
def verify(ledger_path: Path | None) -> None:
    """Check the ledger's integrity and constraints; exit 1 if anything is wrong.

    \b
    Example:
      latentpriv ledger verify
    """
    from latentpriv.privacy.ledger import Ledger

    problems = Ledger(ledger_path).verify()
    for p in problems:
        click.echo(f"problem: {p}")
    if problems:
        raise SystemExit(1)
    click.echo("ok")


@ledger.command("recover")
@_ledger_option
@click.option("--all", "include_live", is_flag=True,
              help="Also resolve pending charges of processes that look alive (only when no release is running).")
def recover(ledger_path: Path | None, include_live: bool) -> None:
    """Resolve pending charges left by crashed runs: commit those whose output exists with its recorded
    sha256, cancel the others.

    \b
    Example:
      latentpriv ledger recover   # after a run was killed (kill -9, power loss); folder runs do it themselves
    """
    from latentpriv.privacy.ledger import Ledger

    rep = Ledger(ledger_path).recover(include_live=include_live)
    click.echo(f"committed {len(rep.committed)}, cancelled {len(rep.cancelled)} pending release(s)"
               + (f"; {len(rep.live)} belong to running processes (left pending)" if rep.live else ""))

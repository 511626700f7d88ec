"""``latentpriv ledger``: inspect the privacy ledger (what each input latent has spent)."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group("ledger")
def ledger() -> None:
    """Inspect the append-only privacy ledger.

    Every release (privatize, sweep) appends one line per input face, keyed by the sha256 of the input
    latent. Pure-DP spends add; Gaussian spends compose in zCDP. The ledger holds hashes of the true
    latents: keep it private.
    """


@ledger.command("show")
@click.argument("input_path", metavar="[INPUT]", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--ledger", "ledger_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Ledger file (default $LATENTPRIV_LEDGER or ~/.local/share/latentpriv/ledger.jsonl).")
@click.option("--space", type=click.Choice(["z", "w", "wp"]), default=None,
              help="Space of INPUT (wp for a 2-D (L, D) W+ latent).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show(input_path: Path | None, ledger_path: Path | None, space: str | None, as_json: bool) -> None:
    """Total privacy spent per input (all inputs, or the rows of INPUT, a latent .npy)."""
    from latentpriv.io import load_npy
    from latentpriv.privacy.ledger import Ledger, row_keys

    led = Ledger(ledger_path)
    keys = None
    if input_path is not None:
        arr = load_npy(input_path)
        keys = row_keys(arr, space=space)
    totals = led.totals(keys)
    rows = [totals[k] for k in (keys if keys is not None else sorted(totals))]
    if as_json:
        click.echo(json.dumps({"ledger": str(led.path), "inputs": [t.as_dict() for t in rows]}, indent=2))
        return
    click.echo(f"ledger: {led.path}")
    if not rows:
        click.echo("no releases recorded")
        return
    click.echo(f"{'input sha256':<16}  {'releases':>8}  {'epsilon':>10}  {'delta':>9}  note")
    for t in rows:
        eps = "unbounded" if t.epsilon is None else f"{t.epsilon:.4g}"
        note = f"{t.unbounded_releases} release(s) without guarantee" if t.unbounded_releases else ""
        if t.releases == 0:
            note = "no releases"
        click.echo(f"{t.key[:16]:<16}  {t.releases:>8}  {eps:>10}  {t.delta:>9.3g}  {note}")

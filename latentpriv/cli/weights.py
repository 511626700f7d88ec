"""``latentpriv weights list|fetch|verify|path``: the named weights and data files (see latentpriv.assets)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from latentpriv.cli.options import bytes_bar
from latentpriv.errors import AssetError

LIST_EPILOG = """\b
Examples:
  latentpriv weights list
  latentpriv weights list --json | jq '.[] | select(.present)'
"""
FETCH_EPILOG = """\b
Examples:
  latentpriv weights fetch dcgan64                      # the offline model, 14 MB; nothing to do when present
  latentpriv weights fetch stylegan_ffhq                # into $LATENTPRIV_HOME or ~/.cache/latentpriv
  latentpriv weights fetch stylegan_ffhq_age_w_boundary --dest ./weights
  latentpriv weights fetch dcgan64 --force              # re-download and replace
"""
VERIFY_EPILOG = """\b
Examples:
  latentpriv weights verify dcgan64            # recompute its sha256 and check its structure
  latentpriv weights verify                    # every asset present on this machine
"""
PATH_EPILOG = """\b
Examples:
  latentpriv weights path dcgan64
  python my_script.py --ckpt "$(latentpriv weights path stylegan_ffhq)"
"""


@click.group(epilog="\b\nExamples:\n  latentpriv weights list\n  latentpriv weights fetch stylegan_ffhq\n"
                    "  latentpriv weights verify\n  latentpriv weights path stylegan_ffhq",
             context_settings={"help_option_names": ["-h", "--help"]})
def weights() -> None:
    """List, fetch, verify and locate named weights and data files.

    Files are searched in: --model FILE (where a command takes one) > $LATENTPRIV_HOME > ./weights >
    the user cache dir (~/.cache/latentpriv) > the copy shipped in the package (InterFaceGAN's boundaries,
    so they need no fetch). `fetch` writes to $LATENTPRIV_HOME if set, else the cache.
    """


def _human(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


@weights.command("list", epilog=LIST_EPILOG)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (a JSON list).")
def list_cmd(as_json: bool) -> None:
    """List every registered asset, whether it is present and where."""
    from latentpriv import assets

    rows = [assets.describe(a) for a in assets.list_assets()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        state = r["path"] if r["present"] else "missing"
        sha = (r["sha256"] or "no published sha256")[:16]
        click.echo(f"{r['name']:<{width}}  {r['group']:<9}  {_human(r['size']):>9}  {sha:<19}  {state}")


@weights.command("fetch", epilog=FETCH_EPILOG)
@click.argument("names", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="Download again even if a verified file is present.")
@click.option("--dest", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder to write into (default: $LATENTPRIV_HOME or the user cache dir).")
@click.option("--timeout", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Network timeout in seconds per request.")
def fetch_cmd(names: tuple[str, ...], force: bool, dest: Path | None, timeout: float) -> None:
    """Download NAME(s), verify the checksum (and structure) and move the file(s) into place atomically."""
    from latentpriv import assets

    for name in names:
        assets.get_asset(name)  # unknown names fail before any download
    for name in names:
        path = assets.fetch(name, dest_dir=dest, force=force, timeout=timeout, progress=bytes_bar)
        click.echo(f"{name}: {path}")


@weights.command("verify", epilog=VERIFY_EPILOG)
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (a JSON list).")
def verify_cmd(names: tuple[str, ...], as_json: bool) -> None:
    """Recompute the sha256 of NAME(s) (default: every present asset) and check structure; exit 1 on failure."""
    from latentpriv import assets

    if names:
        targets = [(n, assets.locate(n, verify=False)) for n in names]
    else:
        targets = [(a.name, p) for a in assets.list_assets() if (p := assets.find(a.name)) is not None]
        if not targets:
            click.echo("no asset is present; fetch one with `latentpriv weights fetch NAME`", err=True)
    results = [assets.verify(n, p, raise_on_error=False) for n, p in targets]
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        for r in results:
            click.echo(f"{'OK  ' if r.ok else 'FAIL'} {r.name}  {r.path}  ({r.detail})")
    failed = [r.name for r in results if not r.ok]
    if failed:
        raise AssetError(f"{len(failed)} asset(s) failed verification: {', '.join(failed)}; "
                         f"re-fetch with `latentpriv weights fetch NAME --force`")


@weights.command("path", epilog=PATH_EPILOG)
@click.argument("name")
def path_cmd(name: str) -> None:
    """Print the path of NAME's file (exit 2 with the fetch command if it is missing)."""
    from latentpriv import assets

    click.echo(str(assets.locate(name, verify=False)))

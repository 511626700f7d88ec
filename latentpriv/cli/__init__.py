"""The ``latentpriv`` command line: a thin click layer over the library.

Sub-commands live one per module in this package and are imported lazily, so ``latentpriv --help``
and simple commands do not pay for importing torch. Every :class:`~latentpriv.errors.LatentprivError`
raised below a command becomes one line on stderr and its exit code, never a traceback.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from latentpriv import __version__
from latentpriv.errors import LatentprivError

# command name -> "module:attribute" (module relative to latentpriv.cli)
COMMANDS: dict[str, str] = {
    "align": "align:align",
    "attack": "attack:attack",
    "evaluate": "evaluate:evaluate",
    "audit": "audit:audit",
    "ledger": "ledger:ledger",
    "privatize": "privatize:privatize",
    "sweep": "sweep:sweep",
    "boundary": "boundary:boundary",
    "demo": "demo:demo",
    "generate": "generate:generate",
    "invert": "invert:invert",
    "weights": "weights:weights",
}


class _UserError(click.ClickException):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _wrap_errors(cmd: click.Command) -> click.Command:
    """Make ``cmd`` (and its sub-commands) turn LatentprivError into a one-line click error."""
    original = cmd.invoke

    def invoke(ctx: click.Context):
        try:
            return original(ctx)
        except LatentprivError as exc:
            raise _UserError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                             getattr(exc, "exit_code", 2)) from exc

    cmd.invoke = invoke  # type: ignore[method-assign]
    return cmd


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        module = importlib.import_module(f"latentpriv.cli.{module_name}")
        return _wrap_errors(getattr(module, attr))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="latentpriv")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """Differentially private attribute editing of faces in StyleGAN's latent space.

    \b
    Typical run:
      latentpriv invert face.png -o w.npy
      latentpriv privatize w.npy --attr smile --epsilon 1.0
      latentpriv generate w_private.npy -o private.png
    """
    from latentpriv.outputs import begin_run

    begin_run()  # the overwrite rule: files written before this command count as not ours (outputs.py)
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main() -> None:
    """Console-script entry point."""
    from latentpriv.runs.allocator import tune_host_allocator

    tune_host_allocator()  # large CPU tensors reused instead of page-faulted in every step (allocator.py)
    cli(prog_name="latentpriv")

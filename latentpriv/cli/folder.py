"""Folder runs on the command line: the batch engine's report lines and exit statuses.

The engine (:mod:`latentpriv.runs.engine`) reports through an ``echo`` callback and raises for a non-zero
exit; :func:`folder_run` gives it ``click.echo`` and turns an interruption into ``128 + signal`` and a
quiet failure (another torchrun rank, which has already reported) into exit status 1. :func:`folder_bar`
is the progress factory a folder command passes to the engine (the library never draws a bar itself).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import click


def folder_bar(**kwargs: Any) -> Any:
    """The engine's bar over a rank's items: tqdm on stderr, not left behind, off when stderr is not a terminal."""
    from tqdm.auto import tqdm

    return tqdm(leave=False, disable=None, **kwargs)


@contextlib.contextmanager
def folder_run() -> Iterator[None]:
    """Run a folder command's body: BatchInterrupted -> its line (rank 0) and exit status; ItemsFailed
    raised quietly -> exit 1 without a message (any other error goes on to the CLI's one-line report)."""
    from latentpriv.runs.engine import BatchInterrupted, ItemsFailed

    try:
        yield
    except BatchInterrupted as exc:
        if exc.report:
            click.echo(exc.report, err=True)
        raise SystemExit(exc.exit_code) from None
    except ItemsFailed as exc:
        if exc.quiet:
            raise SystemExit(exc.exit_code) from None
        raise

"""Options every compute command shares: which model (``--model``) and how many CPU threads (``--threads``).

One spelling and one policy for all commands, so a user learns them once:

* ``--model NAME|PATH``: a registered generator name (``stylegan_ffhq``, ``dcgan64``) or a checkpoint
  file. ``--weights`` is the old spelling, kept as an alias.
* ``--threads N``: torch's CPU threads for the command (default 1; 0 = torch's own default, one per
  core). One thread is the safe default: torch's per-core default oversubscribes a machine that is
  busy with other work (measured: 30 inversion steps at 64 px took 66 s with the default threads on a
  loaded 2-core machine, 9.7 s with one). Raise it on an idle many-core machine.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator
from typing import Any

import click

from latentpriv.models.registry import DEMO_MODEL, model_default_space, model_names

#: the registered models for help texts: "stylegan_ffhq, dcgan64"
MODEL_NAMES = ", ".join(model_names())
#: each registered model's default space for help texts: "w for stylegan_ffhq, z for dcgan64"
DEFAULT_SPACES = ", ".join(f"{model_default_space(m)} for {m}" for m in model_names())
MODEL_HELP = ("Generator: a registered NAME ("
              + ", ".join(f"or {m}: the small offline demo model" if m == DEMO_MODEL else m for m in model_names())
              + ") or a checkpoint PATH. --weights is an alias.")
THREADS_HELP = ("CPU threads for torch (0 = torch's default, one per core). 1 is safe on a shared machine: "
                "more threads than free cores oversubscribe them (measured up to 7x slower).")


def model_option(default: str | None = "stylegan_ffhq", *, param: str = "weights",
                 help: str = MODEL_HELP) -> Callable:
    """``--model NAME|PATH`` (alias ``--weights``), passed to the command as ``param``."""
    return click.option("--model", "--weights", param, default=default, show_default=default is not None,
                        metavar="NAME|PATH", help=help)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(threads)`` (0: leave torch's default), then restore."""
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def with_threads(func: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for a click command's callback: adds ``--threads`` and runs the command under it."""

    @functools.wraps(func)
    def wrapper(*args: Any, threads: int = 1, **kwargs: Any) -> Any:
        with torch_threads(threads):
            return func(*args, **kwargs)

    return click.option("--threads", type=click.IntRange(0), default=1, show_default=True,
                        help=THREADS_HELP)(wrapper)


def parse_epsilons(value: str, option: str = "--epsilons", *, allow_inf: bool = False) -> list[float]:
    """``0.5,1,2`` -> ``[0.5, 1.0, 2.0]`` (order kept), every value > 0 and finite; ``allow_inf`` also takes
    ``inf`` (sweep's no-noise row). Raises click.BadParameter naming ``option`` and the bad part."""
    out = []
    example = "0.5,1,inf" if allow_inf else "0.5,1,2,4"
    for part in value.split(","):
        part = part.strip().lower()
        if not part:
            continue
        try:
            eps = float(part)
        except ValueError:
            raise click.BadParameter(f"{part!r} is not a number (use e.g. {example})", param_hint=option) from None
        if math.isnan(eps) or eps <= 0 or (math.isinf(eps) and not allow_inf):
            raise click.BadParameter(f"epsilon {part} must be a positive finite number"
                                     + (" (inf = no noise)" if allow_inf else ""), param_hint=option)
        out.append(eps)
    if not out:
        raise click.BadParameter(f"give at least one epsilon, e.g. {example}", param_hint=option)
    return out


# ------------------------------------------------------------------------------------- console and option errors


def warn(msg: str) -> None:
    """A library warning on the console (stderr), one line."""
    click.echo(f"Warning: {msg}", err=True)


def option_errors(call: Callable[[Any], Any], value: Any) -> Any:
    """``call(value)``, with the library's :class:`~latentpriv.runs.privatize.OptionValueError` shown as
    click's usage error for that option (exit 2)."""
    from latentpriv.runs.privatize import OptionValueError

    try:
        return call(value)
    except OptionValueError as exc:
        raise click.BadParameter(exc.detail, param_hint=exc.option) from None


def parse_center(value: str) -> str | float:
    """``--center``: ``auto`` or a number."""
    from latentpriv.runs.privatize import parse_center as parse

    return option_errors(parse, value)


def parse_layers(value: str | None) -> list[int] | None:
    """``--layers 0-7`` or ``0,1,2`` -> indices."""
    from latentpriv.runs.privatize import parse_layers as parse

    return option_errors(parse, value)


def parse_split(value: str | None) -> list[float] | None:
    """``--epsilon-split 2,1`` -> weights."""
    from latentpriv.runs.privatize import parse_split as parse

    return option_errors(parse, value)


def bytes_bar(**kwargs: Any) -> Any:
    """A download's progress bar (the library draws none itself): bytes in KiB/MiB, not left behind."""
    from tqdm.auto import tqdm

    return tqdm(unit_scale=True, unit_divisor=1024, leave=False, **kwargs)

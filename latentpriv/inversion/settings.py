"""The inversion settings of a command line: a preset or a YAML file, ``--set`` overrides and the options
that are shorthands for config keys (``--space``, ``--iterations``, ``--seed``)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from latentpriv.inversion.optimize import InversionConfig, load_config


def command_config(preset: str | None = None, config_file: str | os.PathLike | None = None,
                   overrides: Sequence[str] = (), *, space: str | None = None, iterations: int | None = None,
                   seed: int | None = None) -> InversionConfig:
    """The validated config: ``config_file`` (else ``preset``, default ``"default"``), then ``overrides``
    (``KEY=VALUE``), then the shorthands given (they win over ``--set`` of the same key). ConfigError naming
    the file for an unknown key or a bad value, or for both a preset other than default and a file."""
    sets = list(overrides)
    for key, value in (("space", space), ("iterations", iterations), ("seed", seed)):
        if value is not None:
            sets.append(f"{key}={value}")
    return load_config(preset or ("default" if config_file is None else None), config_file, sets)

"""Error types shared by the library and the CLI.

A :class:`LatentprivError` is a *user* error: bad input, a missing asset, an invalid parameter. The CLI
turns it into one line on stderr and a non-zero exit code, never a traceback. Library callers can catch
it like any other exception; most subclasses also derive from the matching builtin (ValueError, ...)
so that ``except ValueError`` keeps working.
"""

from __future__ import annotations


class LatentprivError(Exception):
    """A user-facing error whose message is one line naming the file/value and the remedy."""

    exit_code = 2


class InputError(LatentprivError, ValueError):
    """An input file or value is malformed (wrong shape, NaN, unreadable image, ...)."""


class ConfigError(LatentprivError, ValueError):
    """A configuration file or override is invalid (unknown key, out-of-range value, ...)."""


class AssetError(LatentprivError, FileNotFoundError):
    """A named asset (weights, boundary) is missing, corrupt, or could not be fetched."""


class CheckpointError(LatentprivError, ValueError):
    """A checkpoint does not match the expected architecture (missing/unexpected/mis-shaped keys)."""


class PrivacyBudgetError(LatentprivError):
    """A release would exceed the privacy budget recorded in the ledger."""

    exit_code = 3

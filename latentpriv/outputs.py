"""One rule for every file a command writes.

**The rule**: a command never replaces an existing file that it did not write itself in this run, unless the
user passed ``--overwrite``; it never replaces one of its own inputs, even with ``--overwrite``.
:func:`check_outputs` applies it (every CLI command calls it, before any slow work, for every path it is
going to write; folder runs, which resume in their own output folder, use :func:`check_folder_outputs`), and :func:`latentpriv.io.atomic_write` records each file it writes with
:func:`mark_written`, so that a run may rewrite its own files (snapshots, resumed chunks).

**Permissions**: files are created with ``0o666 & ~umask`` like ``open()`` would create them, not the
``0600`` of :func:`tempfile.mkstemp`, so collaborators on a shared server read results as their umask says.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

from latentpriv.errors import InputError

_LOCK = threading.Lock()
_WRITTEN: set[str] = set()   # resolved paths this process wrote since begin_run()


def begin_run() -> None:
    """Start a new run: files written before no longer count as "written in this run" (the CLI calls it)."""
    with _LOCK:
        _WRITTEN.clear()


def _key(path: str | os.PathLike) -> str:
    return str(Path(path).resolve())


def mark_written(path: str | os.PathLike) -> None:
    """Record that this run wrote ``path`` (it may replace it again without ``--overwrite``)."""
    with _LOCK:
        _WRITTEN.add(_key(path))


def written_in_this_run(path: str | os.PathLike) -> bool:
    with _LOCK:
        return _key(path) in _WRITTEN


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _LOCK:   # setting and restoring is the only portable way; keep other threads of ours out meanwhile
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """Permission bits of a new regular file: ``0o666 & ~umask``."""
    return 0o666 & ~current_umask()


def check_outputs(paths: Iterable[str | os.PathLike | None], *, overwrite: bool,
                  inputs: Iterable[str | os.PathLike | None] = (), option: str = "-o") -> None:
    """Refuse (``InputError``) to write any of ``paths`` that the rule forbids; ``None`` entries are skipped.

    Args:
        paths: every file the command is going to write.
        overwrite: the user's ``--overwrite``.
        inputs: files the command reads; never replaced.
        option: the option that names the outputs, for the message (``-o``, ``--save-image``, ...).
    """
    resolved_inputs = {_key(p) for p in inputs if p is not None}
    for p in paths:
        if p is None:
            continue
        p = Path(p)
        if _key(p) in resolved_inputs:
            raise InputError(f"{p}: refusing to overwrite the input file; choose another {option}")
        if p.is_dir():
            raise InputError(f"{p}: is a directory, not a file; choose another {option}")
        if (p.exists() or p.is_symlink()) and not overwrite and not written_in_this_run(p):
            raise InputError(f"{p}: already exists; pass --overwrite to replace it or choose another {option}")


def check_folder_outputs(paths: Iterable[str | os.PathLike | None], *, overwrite: bool,
                         marker: str | os.PathLike, where: str, option: str = "output") -> None:
    """The rule for the outputs of a folder run, which may be resumed: a folder that holds ``marker`` (the run's
    own record, e.g. ``OUTDIR/results.jsonl``, created the moment a run starts there) is a run's own, and its
    files may be replaced by a rerun; otherwise an existing file among ``paths`` is refused unless
    ``overwrite``, with ``InputError("<path>: already exists <where>; pass --overwrite to replace it or choose
    an empty <option> folder")``. ``paths`` may be lazy (a generator): nothing is listed when the rule cannot
    refuse. Inputs among the outputs are the caller's own check (they are refused even with ``overwrite``)."""
    if overwrite or Path(marker).exists():
        return
    for p in paths:
        if p is not None and Path(p).exists():
            raise InputError(f"{p}: already exists {where}; pass --overwrite to replace it or choose an empty "
                             f"{option} folder")


def check_writable(folder: str | os.PathLike, *, option: str = "-o") -> None:
    """Raise :class:`InputError` unless files can be created in ``folder`` or, while it does not exist yet, in
    its nearest existing parent (a probe file is created and removed; no folder is created). Commands call
    it before slow work whose results go to ``folder``, so a read-only output fails at once, not at the end."""
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise NotADirectoryError(f"{probe} is not a folder")
        fd, tmp = tempfile.mkstemp(prefix=".latentpriv-probe.", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise InputError(f"{folder}: cannot write there ({exc.strerror or exc}); choose another {option}") from exc

"""Batch runs over a folder: deterministic sharding across processes, verified resume, per-item records.

This is the I/O layer behind ``latentpriv invert DIR -o OUTDIR`` and ``latentpriv privatize DIR -o OUTDIR``.
A command describes its per-item work as a :class:`BatchTask` (load one input, process a batch of them;
both pure apart from reading the input); :func:`run_batch` does everything else:

* **Inputs**: the files in ``DIR`` whose suffix the task accepts, sorted by name (code-point order, so
  every process and every machine sees the same order). Hidden files are ignored. Outputs mirror the
  input names: ``face01.png -> OUTDIR/face01.npy + OUTDIR/face01.json``.
* **Atomic, verifiable outputs**: every file goes through :func:`latentpriv.io.atomic_write`. The
  *sidecar* JSON is written last and records the input's sha256, the configuration's sha256 and every
  output's sha256, so its presence with matching hashes is what "complete" means.
* **Resume**: a rerun skips complete items (verified: sidecar parses, input/config hashes and seed match,
  each output exists with the recorded sha256, ``.npy`` outputs load finite); anything else is redone.
  ``overwrite=True`` redoes everything.
* **Sharding**: the sorted items are cut into global batches of ``batch_size``; rank ``r`` of ``W`` takes
  batches ``r, r+W, r+2W, ...``. Every item belongs to exactly one batch and every batch to exactly one
  rank, so nothing is done twice or missed, and a batch holds the same items whatever ``W`` is.
  Rank 0 lists the folder and broadcasts the list, so all ranks agree even if files appear meanwhile.
* **Seeds**: each item gets ``item_seed(seed, name)``, a function of the base seed and its file name
  only, so results do not depend on the number of processes or on which items were already done.
* **Records**: ``OUTDIR/results.jsonl`` receives one JSON line per item per run (``ok``, ``skipped`` or
  ``failed``; metrics, seconds, error, rank, run id), appended under an ``fcntl`` lock and fsync'd,
  safe across processes and nodes sharing the folder. After a barrier rank 0 writes
  ``OUTDIR/summary.json``. A failing item never stops the run; the summary counts it.
* **Interruption**: SIGTERM/SIGINT abandon the batch in flight (nothing half-written: files are atomic,
  and the per-item write + record step is shielded), and :class:`BatchInterrupted` propagates so the
  command exits non-zero; rerunning continues where it stopped.

The engine never prints; it logs through :mod:`logging` and returns a :class:`BatchSummary`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import glob
import hashlib
import json
import logging
import math
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latentpriv.errors import ConfigError, InputError, LatentprivError
from latentpriv.io import (
    IMAGE_SUFFIXES,
    float01_to_uint8,
    json_default,
    save_image,
    save_npy,
    sha256_file,
    write_json,
)

log = logging.getLogger(__name__)

RESULTS_NAME = "results.jsonl"
SUMMARY_NAME = "summary.json"
STATUSES = ("ok", "skipped", "failed")
#: exit status of a run stopped by a signal (128 + SIGTERM), as a shell reports it
EXIT_INTERRUPTED = 128 + int(signal.SIGTERM)


# ----------------------------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class BatchItem:
    """One input of a batch run.

    Attributes:
        index: position in the sorted input list (global across ranks).
        name: the input's file name, e.g. ``"face01.png"``; the item's identity in every record.
        path: the input file.
        seed: ``item_seed(base_seed, name)``, or None when the run has no base seed.
        sha256: hex sha256 of the input's bytes (filled in by the engine before ``load``; empty for
            tasks with a ``fingerprint_key``, whose inputs are secret).
        fingerprint: what the sidecar records to recognise this input on resume: ``sha256`` or, for
            tasks with a ``fingerprint_key``, HMAC-SHA256 of the bytes under that key.
    """

    index: int
    name: str
    path: Path
    seed: int | None = None
    sha256: str = ""
    fingerprint: str = ""

    @property
    def stem(self) -> str:
        return Path(self.name).stem


@dataclass
class ItemOutput:
    """What a task produces for one item.

    Attributes:
        files: output suffix -> content. ``np.ndarray`` under a ``.npy`` suffix is saved with
            :func:`latentpriv.io.save_npy`; ``uint8 [H, W, 3]`` under an image suffix with
            :func:`latentpriv.io.save_image`; a dict under a ``.json`` suffix with :func:`write_json`;
            ``bytes`` are written as they are. Every suffix must be one of the task's ``output_suffixes``.
        record: provenance for the sidecar JSON (the engine adds a ``"batch"`` section).
        metrics: small JSON-able numbers for ``results.jsonl`` (loss, PSNR, epsilon spent, ...).
        on_written: called once every output is on disk (e.g. commit a pending ledger charge);
            on_failed: called when writing failed before the outputs reached disk (cancel it).
    """

    files: dict[str, Any]
    record: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    on_written: Callable[[], None] | None = None
    on_failed: Callable[[], None] | None = None


@dataclass(frozen=True)
class BatchTask:
    """How one command processes the items of a folder.

    Attributes:
        name: the command (``"invert"``), recorded in results and summary.
        input_suffixes: lower-case suffixes of the inputs to take, e.g. ``IMAGE_SUFFIXES`` or ``(".npy",)``.
        output_suffixes: what each item writes, appended to the input's stem (``".npy"``,
            ``"_recon.png"``); every item must produce every one of them.
        load: ``load(item) -> payload``; reads and validates one input, raising
            :class:`~latentpriv.errors.LatentprivError` for a bad one (that item fails, the run goes on).
        process: ``process(items, payloads) -> outputs``; one entry per item, each an :class:`ItemOutput`
            or an ``Exception`` for an item that failed on its own. Raising fails the whole batch, which
            the engine then retries item by item (when ``retry_alone``).
        config: everything that determines the outputs besides the input bytes (resolved config,
            generator name and weights sha256, base seed, ...); its canonical JSON's sha256 is recorded
            and a mismatch makes an earlier output incomplete.
        sidecar_suffix: the JSON written last for each item (``".json"``); its presence and hashes mark
            the item complete. It must not also be in ``output_suffixes``.
        verify: optional ``verify(item, paths)`` raising on an output that is present but unusable
            (paths maps output suffix -> path); run on resume on top of the hash checks.
        retry_alone: when a batch raises, retry its items one at a time (set False for tasks with
            side effects that must not repeat, e.g. spending privacy budget).
        output_dirs: output suffix -> another folder for that output (default: OUTDIR), e.g.
            reconstructions written to a separate image folder.
        fingerprint_key: for secret inputs (true latents): the sidecar then records a keyed HMAC of
            the input instead of its sha256, so a released record does not let anyone test a guessed
            input. Keep the key private (e.g. beside the privacy ledger).
        sidecar_first: write the sidecar (with the outputs' precomputed sha256) *before* the outputs, so
            the last output's rename is the moment the item becomes complete (``.npy``/bytes outputs only).
            A privacy release needs this: a crash can then never leave a released file that a rerun
            would not recognise and release again.
        close: called by :func:`run_cli` on every rank once the run ends, however it ends, while the
            process group still exists (e.g. settle the ledger's pending charges).
        preflight: optional ``preflight(paths)`` over every input of the folder, run by rank 0 before the
            output folder is created or touched. It checks what does not depend on one file alone (a
            missing boundary, settings that no input can satisfy) and raises a
            :class:`~latentpriv.errors.LatentprivError`: the run then stops once, with that one line, and
            leaves nothing behind (no OUTDIR, results.jsonl, summary.json or run lock). A file it cannot
            read is left to fail on its own.
    """

    name: str
    input_suffixes: tuple[str, ...]
    output_suffixes: tuple[str, ...]
    load: Callable[[BatchItem], Any]
    process: Callable[[list[BatchItem], list[Any]], Sequence[ItemOutput | Exception]]
    config: Mapping[str, Any] = field(default_factory=dict)
    sidecar_suffix: str = ".json"
    verify: Callable[[BatchItem, dict[str, Path]], None] | None = None
    retry_alone: bool = True
    output_dirs: Mapping[str, Path] = field(default_factory=dict)
    fingerprint_key: bytes | None = None
    sidecar_first: bool = False
    close: Callable[[], None] | None = None
    preflight: Callable[[list[Path]], None] | None = None

    def __post_init__(self) -> None:
        if not self.output_suffixes:
            raise ValueError("BatchTask.output_suffixes must name at least one output")
        if self.sidecar_suffix in self.output_suffixes:
            raise ValueError(f"sidecar suffix {self.sidecar_suffix!r} is also an output suffix")
        if len(set(self.output_suffixes)) != len(self.output_suffixes):
            raise ValueError(f"duplicate output suffixes {self.output_suffixes}")

    @property
    def config_sha256(self) -> str:
        return config_sha256(self.config)

    def output_paths(self, outdir: Path, item: BatchItem) -> dict[str, Path]:
        return {suffix: Path(self.output_dirs.get(suffix, outdir)) / f"{item.stem}{suffix}"
                for suffix in self.output_suffixes}

    def sidecar_path(self, outdir: Path, item: BatchItem) -> Path:
        return outdir / f"{item.stem}{self.sidecar_suffix}"


@dataclass
class BatchSummary:
    """Counts over all ranks for one run (what rank 0 writes to ``summary.json``)."""

    command: str
    run_id: str
    input_dir: str
    outdir: str
    world_size: int
    batch_size: int
    total: int
    ok: int
    skipped: int
    failed: int
    failed_items: list[str]
    errors: dict[str, str]
    wall_seconds: float
    items_per_hour: float | None
    config_sha256: str
    started: str
    finished: str

    @property
    def exit_code(self) -> int:
        """0 when nothing failed, else 1."""
        return 1 if self.failed else 0

    def line(self) -> str:
        """The one-line human summary, e.g. ``invert: 5 ok, 0 skipped, 1 failed (of 6) in 3.1 s``."""
        text = (f"{self.command}: {self.ok} ok, {self.skipped} skipped, {self.failed} failed "
                f"(of {self.total}) in {self.wall_seconds:.1f} s")
        if self.world_size > 1:
            text += f" on {self.world_size} processes"
        if self.items_per_hour:
            text += f", {self.items_per_hour:.0f} items/hour"
        if self.failed_items:
            shown = ", ".join(self.failed_items[:5]) + (", ..." if len(self.failed_items) > 5 else "")
            text += f"; failed: {shown}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class ItemsFailed(LatentprivError):
    """Some items of a folder run failed (the others were written); exit status 1."""

    exit_code = 1


class BatchInterrupted(BaseException):
    """A batch run was stopped by a signal; finished items are on disk and a rerun resumes.

    A ``BaseException`` (like ``KeyboardInterrupt``) so that per-item ``except Exception`` handlers,
    in the engine or in task code, cannot swallow it.
    """

    def __init__(self, signum: int, done: int = 0) -> None:
        self.signum = signum
        self.done = done
        name = signal.Signals(signum).name if signum in signal.Signals._value2member_map_ else str(signum)
        super().__init__(f"interrupted by {name}")

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum)


# ------------------------------------------------------------------------------------------- pure helpers


def item_seed(base_seed: int, name: str) -> int:
    """A 63-bit seed for one item: sha256 of ``"<base_seed>:<name>"``.

    Depends only on the base seed and the item's file name, so an item gets the same seed in a single
    process, under torchrun with any number of ranks, and on a resumed run.
    """
    digest = hashlib.sha256(f"{int(base_seed)}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def config_sha256(config: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, no whitespace) of ``config``."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=json_default)
    return hashlib.sha256(text.encode()).hexdigest()


def make_batches(n_items: int, batch_size: int) -> list[range]:
    """Cut ``range(n_items)`` into consecutive batches of ``batch_size`` (the last may be shorter)."""
    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: must be >= 1")
    return [range(start, min(start + batch_size, n_items)) for start in range(0, n_items, batch_size)]


def shard_batches(n_items: int, batch_size: int, rank: int, world_size: int) -> list[range]:
    """The batches rank ``rank`` of ``world_size`` processes: global batches ``rank, rank+W, ...``.

    Over all ranks the shards are disjoint and cover ``range(n_items)`` exactly once; the batches are the
    same whatever ``world_size`` is.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
    return make_batches(n_items, batch_size)[rank::world_size]


def list_inputs(input_dir: str | os.PathLike, suffixes: Sequence[str]) -> list[str]:
    """Sorted names of the files in ``input_dir`` with one of ``suffixes`` (case-insensitive).

    Hidden files (``.name``) and sub-folders are ignored. Raises :class:`InputError` for a missing folder,
    an empty selection, or two inputs with the same stem (their outputs would collide).
    """
    folder = Path(input_dir)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; pass a directory of inputs")
    wanted = tuple(s.lower() for s in suffixes)
    names = sorted(p.name for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in wanted)
    if not names:
        raise InputError(f"{folder}: no input files ({', '.join(wanted)}) in this folder")
    by_stem: dict[str, str] = {}
    for name in names:
        stem = Path(name).stem
        if stem in by_stem:
            raise InputError(f"{folder}: {by_stem[stem]!r} and {name!r} have the same stem, so their outputs "
                             "would overwrite each other; rename one")
        by_stem[stem] = name
    return names


def _check_outdir(task: BatchTask, input_dir: Path, outdir: Path, names: Sequence[str]) -> None:
    for folder in {outdir, *map(Path, task.output_dirs.values())}:
        if input_dir.resolve() == folder.resolve():
            raise InputError(f"{folder}: an output folder is the input folder; choose a separate folder so "
                             "outputs never overwrite or mix with inputs")
    inputs = {(input_dir / n).resolve() for n in names}
    reserved = {(outdir / RESULTS_NAME).resolve(), (outdir / SUMMARY_NAME).resolve()}
    for name in names:
        item = BatchItem(0, name, input_dir / name)
        for path in (*task.output_paths(outdir, item).values(), task.sidecar_path(outdir, item)):
            if path.resolve() in inputs:
                raise InputError(f"{path}: this output would overwrite an input; choose another output folder")
            if path.resolve() in reserved:
                raise InputError(f"{input_dir / name}: its output would be named {path.name}, which the batch "
                                 "run uses for its own records; rename that input")


# ------------------------------------------------------------------------------------- results.jsonl lock


def _check_foreign_files(task: BatchTask, input_dir: Path, outdir: Path, names: Sequence[str]) -> None:
    """The overwrite rule (latentpriv.outputs) for folder runs: a folder no batch run has written (no
    results.jsonl) must not hold files with output names; resume inside a run's own folder is unaffected."""
    if (outdir / RESULTS_NAME).exists() or not outdir.is_dir():
        return
    for name in names:
        item = BatchItem(0, name, input_dir / name)
        for path in (*task.output_paths(outdir, item).values(), task.sidecar_path(outdir, item)):
            if path.exists():
                raise InputError(f"{path}: already exists in a folder no {task.name} run has written; pass "
                                 "--overwrite to replace it or choose an empty output folder")


def append_jsonl(path: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Append one JSON line to ``path`` under an exclusive ``fcntl`` lock, then fsync.

    Safe for many processes (and nodes on a shared POSIX filesystem with working locks) appending to
    the same file: each line is written whole by one ``write`` while the lock is held.
    """
    import fcntl

    line = json.dumps(record, sort_keys=False, default=json_default, allow_nan=False) + "\n"
    data = line.encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)   # the umask decides, like open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    except OSError as exc:   # full disk, read-only or vanished folder: one line, not a traceback
        raise InputError(f"{path}: cannot append the run's record ({exc.strerror or exc}); "
                         "free space or choose a writable output folder") from exc


def read_results(outdir: str | os.PathLike, run_id: str | None = None) -> list[dict[str, Any]]:
    """The records in ``OUTDIR/results.jsonl`` (optionally of one run); unparsable lines are skipped."""
    path = Path(outdir) / RESULTS_NAME
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s: skipping an unreadable line", path)
            continue
        if run_id is None or rec.get("run_id") == run_id:
            out.append(rec)
    return out


# ---------------------------------------------------------------------------------------- completeness


def _sanitize(obj: Any) -> Any:
    """Replace non-finite floats by None so records stay strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return _sanitize(obj.item())
    if isinstance(obj, dict):
        return {str(k): _sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_sanitize(v) for v in obj]
    return obj


def check_complete(task: BatchTask, outdir: Path, item: BatchItem, config_hash: str) -> str | None:
    """None when ``item``'s outputs in ``outdir`` are complete and current, else the reason they are not.

    Complete means: the sidecar exists and parses; it records this input's fingerprint (sha256 or keyed
    HMAC), this configuration's hash and this item's seed; every output exists with the sha256 recorded
    in the sidecar; ``.npy`` outputs
    load without pickle and hold only finite numbers; the task's ``verify`` hook passes.
    """
    sidecar = task.sidecar_path(outdir, item)
    if not sidecar.is_file():
        return "no sidecar"
    try:
        record = json.loads(sidecar.read_text())
        batch = record["batch"]
        recorded = batch["outputs"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{sidecar.name} unreadable or not written by a batch run"
    if not isinstance(batch, dict) or not isinstance(recorded, dict):   # an edited sidecar: redo, never crash
        return f"{sidecar.name}: its batch section has the wrong types (edited?)"
    field_name = "input_hmac_sha256" if task.fingerprint_key else "input_sha256"
    if not item.fingerprint or batch.get(field_name) != item.fingerprint:
        return "input changed"
    if batch.get("config_sha256") != config_hash:
        return "configuration changed"
    if batch.get("seed") != item.seed:
        return "seed changed"
    paths = task.output_paths(outdir, item)
    for suffix, path in paths.items():
        if not path.is_file():
            return f"{path.name} missing"
        if recorded.get(path.name) != sha256_file(path):
            return f"{path.name} does not match its recorded sha256"
        if suffix.endswith(".npy"):
            try:
                arr = np.load(path, allow_pickle=False)
            except (OSError, ValueError, EOFError):
                return f"{path.name} does not load"
            if np.issubdtype(arr.dtype, np.number) and not np.isfinite(arr).all():
                return f"{path.name} holds NaN/inf"
    if task.verify is not None:
        try:
            task.verify(item, paths)
        except Exception as exc:
            return f"verify failed: {exc}"
    return None


def _encode(path: Path, content: Any) -> bytes:
    """The bytes :func:`_write_file` writes for ``.npy`` arrays and raw ``bytes`` (for ``sidecar_first``)."""
    if isinstance(content, (bytes, bytearray)):
        return bytes(content)
    if path.suffix.lower() == ".npy":
        import io

        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(np.asarray(content)), allow_pickle=False)
        return buf.getvalue()
    raise TypeError(f"sidecar_first tasks write .npy or bytes outputs, not {type(content).__name__} ({path.name})")


def _write_file(path: Path, content: Any) -> None:
    suffix = path.suffix.lower()
    if isinstance(content, (bytes, bytearray)):
        from latentpriv.io import atomic_write

        with atomic_write(path) as fh:
            fh.write(content)
    elif suffix == ".npy":
        save_npy(path, np.asarray(content))
    elif suffix == ".json":
        write_json(path, _sanitize(content))
    elif suffix in IMAGE_SUFFIXES:
        save_image(path, np.asarray(content))
    else:
        raise TypeError(f"don't know how to write {type(content).__name__} to {path.name}")


# ------------------------------------------------------------------------------------------- interruption


class _SignalGuard:
    """Turns SIGTERM/SIGINT into :class:`BatchInterrupted`, deferred while a critical section runs."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._depth = 0
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        first = self.signum is None
        self.signum = signum
        if self._depth == 0 and first:
            raise BatchInterrupted(signum)

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread; leave the defaults
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handler)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """Run a short block (write one item's files and its record) without being interrupted."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        self.check()

    def check(self) -> None:
        if self.signum is not None and self._depth == 0:
            raise BatchInterrupted(self.signum)


# ------------------------------------------------------------------------------------------------ engine


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _error_class(name: str) -> type[LatentprivError]:
    """The :mod:`latentpriv.errors` class called ``name`` (its exit code), else :class:`InputError`."""
    from latentpriv import errors

    cls = getattr(errors, name, None)
    return cls if isinstance(cls, type) and issubclass(cls, LatentprivError) else InputError


def _error_text(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, LatentprivError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Runner:
    def __init__(self, task: BatchTask, outdir: Path, run_id: str, rank: int, guard: _SignalGuard,
                 overwrite: bool) -> None:
        self.task = task
        self.outdir = outdir
        self.run_id = run_id
        self.rank = rank
        self.guard = guard
        self.overwrite = overwrite
        self.config_hash = task.config_sha256
        self.counts = {status: 0 for status in STATUSES}
        self.failed: list[str] = []
        self.errors: dict[str, str] = {}
        self.results_path = outdir / RESULTS_NAME
        self.host = socket.gethostname()
        self.finished = 0

    def record(self, item: BatchItem, status: str, *, seconds: float, metrics: Mapping[str, Any] | None = None,
               error: str | None = None, reason: str | None = None, outputs: Sequence[str] = ()) -> None:
        line = {
            "run_id": self.run_id,
            "time": _now(),
            "command": self.task.name,
            "item": item.name,
            "status": status,
            "seconds": round(seconds, 4),
            "metrics": _sanitize(dict(metrics or {})),
            "error": error,
            "rank": self.rank,
            "host": self.host,
        }
        if reason:
            line["reason"] = reason
        if outputs:
            line["outputs"] = list(outputs)
        append_jsonl(self.results_path, line)
        self.counts[status] += 1
        self.finished += 1
        if status == "failed":
            self.failed.append(item.name)
            self.errors[item.name] = error or ""
            log.warning("%s: failed: %s", item.name, error)

    def write_item(self, item: BatchItem, out: ItemOutput, seconds: float) -> None:
        """Write one item's outputs, then its sidecar, then its results line: shielded from signals."""
        paths = self.task.output_paths(self.outdir, item)
        missing = set(paths) - set(out.files)
        extra = set(out.files) - set(paths)
        if missing or extra:
            raise RuntimeError(f"task {self.task.name} returned outputs {sorted(out.files)} for {item.name}, "
                               f"expected {sorted(paths)}")
        sidecar = self.task.sidecar_path(self.outdir, item)
        if self.task.sidecar_first:
            self._write_sidecar_first(item, out, paths, sidecar, seconds)
            return
        with self.guard.critical():
            with contextlib.suppress(FileNotFoundError):
                sidecar.unlink()  # an old sidecar must not vouch for the new outputs while they are written
            hashes = {}
            for suffix, path in paths.items():
                _write_file(path, out.files[suffix])
                hashes[path.name] = sha256_file(path)
            write_json(sidecar, self._sidecar_record(item, out, hashes))
            if out.on_written is not None:
                out.on_written()
            self.record(item, "ok", seconds=seconds, metrics=out.metrics, outputs=[*hashes, sidecar.name])

    def _sidecar_record(self, item: BatchItem, out: ItemOutput, hashes: dict[str, str]) -> dict[str, Any]:
        record = dict(_sanitize(out.record))
        record["batch"] = {
            "command": self.task.name,
            "input": item.name,
            ("input_hmac_sha256" if self.task.fingerprint_key else "input_sha256"): item.fingerprint,
            "config_sha256": self.config_hash,
            "seed": item.seed,
            "outputs": hashes,
            "run_id": self.run_id,
            "written": _now(),
        }
        return record

    def _write_sidecar_first(self, item: BatchItem, out: ItemOutput, paths: dict[str, Path], sidecar: Path,
                             seconds: float) -> None:
        """Sidecar (with the precomputed hashes), then the outputs, then ``on_written``: shielded from signals.

        Until the last output is renamed into place the item is incomplete (its hash does not match), and
        ``on_failed`` runs if writing fails before that; once it is, a failure later leaves any pending
        charge for the ledger's recovery, which finds the output with its recorded sha256.
        """
        from latentpriv.io import atomic_write

        with self.guard.critical():
            written = False
            try:
                encoded = {suffix: _encode(path, out.files[suffix]) for suffix, path in paths.items()}
                hashes = {paths[s].name: hashlib.sha256(b).hexdigest() for s, b in encoded.items()}
                write_json(sidecar, self._sidecar_record(item, out, hashes))
                for suffix, path in paths.items():
                    with atomic_write(path) as fh:
                        fh.write(encoded[suffix])
                written = True
                if out.on_written is not None:
                    out.on_written()
            except BaseException:
                if not written and out.on_failed is not None:
                    out.on_failed()
                raise
            self.record(item, "ok", seconds=seconds, metrics=out.metrics, outputs=[*hashes, sidecar.name])

    def fail(self, item: BatchItem, exc: BaseException, seconds: float) -> None:
        if not isinstance(exc, LatentprivError):
            log.debug("%s: traceback", item.name, exc_info=exc)
        with self.guard.critical():
            self.record(item, "failed", seconds=seconds, error=_error_text(exc))

    def run_batch(self, items: list[BatchItem]) -> None:
        pending: list[BatchItem] = []
        payloads: list[Any] = []
        load_seconds: list[float] = []
        for item in items:
            t0 = time.perf_counter()
            try:
                item = _with_sha(item, self.task.fingerprint_key)
            except OSError as exc:
                self.fail(item, InputError(f"{item.path}: cannot read ({exc.strerror or exc})"),
                          time.perf_counter() - t0)
                continue
            if not self.overwrite:
                try:
                    reason = check_complete(self.task, self.outdir, item, self.config_hash)
                except Exception as exc:  # noqa: BLE001 - outputs we cannot verify are redone, never fatal
                    reason = f"cannot verify ({type(exc).__name__})"
                if reason is None:
                    with self.guard.critical():
                        self.record(item, "skipped", seconds=time.perf_counter() - t0, reason="complete")
                    continue
                if reason != "no sidecar":
                    log.info("%s: redoing (%s)", item.name, reason)
            try:
                payload = self.task.load(item)
            except Exception as exc:
                self.fail(item, exc, time.perf_counter() - t0)
                continue
            pending.append(item)
            payloads.append(payload)
            load_seconds.append(time.perf_counter() - t0)
        if not pending:
            return
        self._process(pending, payloads, load_seconds, allow_retry=self.task.retry_alone)

    def _process(self, items: list[BatchItem], payloads: list[Any], load_seconds: list[float],
                 allow_retry: bool) -> None:
        t0 = time.perf_counter()
        try:
            outputs = list(self.task.process(items, payloads))
            if len(outputs) != len(items):
                raise RuntimeError(f"task {self.task.name} returned {len(outputs)} results for {len(items)} items")
        except Exception as exc:
            if len(items) > 1 and allow_retry:
                log.warning("batch of %d failed (%s); retrying its items one by one", len(items), _error_text(exc))
                for item, payload, ls in zip(items, payloads, load_seconds, strict=True):
                    self._process([item], [payload], [ls], allow_retry=False)
                return
            share = (time.perf_counter() - t0) / len(items)
            for item, ls in zip(items, load_seconds, strict=True):
                self.fail(item, exc, ls + share)
            return
        share = (time.perf_counter() - t0) / len(items)
        for item, out, ls in zip(items, outputs, load_seconds, strict=True):
            if isinstance(out, BaseException):
                self.fail(item, out, ls + share)
                continue
            try:
                self.write_item(item, out, ls + share)
            except Exception as exc:
                self.fail(item, exc, ls + share)


def _with_sha(item: BatchItem, key: bytes | None = None) -> BatchItem:
    """``item`` with its input's sha256 (no key) or keyed HMAC-SHA256 (secret inputs) filled in."""
    if item.fingerprint:
        return item
    if key:
        import hmac

        mac = hmac.new(key, digestmod="sha256")
        with open(item.path, "rb") as fh:
            while block := fh.read(1 << 20):
                mac.update(block)
        return dataclasses.replace(item, fingerprint=mac.hexdigest())
    digest = sha256_file(item.path)
    return dataclasses.replace(item, sha256=digest, fingerprint=digest)


def run_batch(task: BatchTask, input_dir: str | os.PathLike, outdir: str | os.PathLike, *,
              dist: Any = None, batch_size: int = 1, overwrite: bool = False, seed: int | None = None,
              progress: bool = False) -> BatchSummary:
    """Process every input in ``input_dir`` into ``outdir``; see the module docstring for the guarantees.

    Args:
        task: what to do with each item.
        input_dir: folder of inputs (not recursive).
        outdir: output folder, created if missing; must differ from ``input_dir``.
        dist: a :class:`latentpriv.runs.distributed.Distributed` (from ``init_distributed``); None = one process.
        batch_size: items per call of ``task.process``; also the unit of sharding.
        overwrite: redo items whose outputs are already complete.
        seed: base seed; each item gets ``item_seed(seed, name)`` (None leaves ``item.seed`` None).
        progress: show a tqdm bar on rank 0.

    Returns:
        The :class:`BatchSummary` over all ranks (identical on every rank). Rank 0 has written it to
        ``OUTDIR/summary.json``.

    Raises:
        InputError: bad folder, no inputs, colliding names (raised on every rank).
        BatchInterrupted: SIGTERM/SIGINT arrived; finished items are complete on disk.
    """
    from latentpriv.runs.distributed import DistEnv, Distributed, RunLock

    if dist is None:
        import torch

        dist = Distributed(DistEnv(), torch.device("cpu"), None, owns_group=False)
    input_dir = Path(input_dir)
    outdir = Path(outdir)
    make_batches(0, batch_size)  # validates batch_size identically on every rank
    started = _now()
    t_start = time.perf_counter()

    # Rank 0 lists the folder and decides the run id; everyone gets the same plan (or the same error).
    plan: dict[str, Any]
    lock = None   # rank 0 holds the output folder's run lock: two runs never write one folder at once
    if dist.is_main:
        try:
            names = list_inputs(input_dir, task.input_suffixes)
            _check_outdir(task, input_dir, outdir, names)
            if not overwrite:
                _check_foreign_files(task, input_dir, outdir, names)
            if task.preflight is not None:   # setup errors: once, before anything is written
                task.preflight([input_dir / n for n in names])
            outdir.mkdir(parents=True, exist_ok=True)
            run_id = f"{datetime.datetime.now(datetime.timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
            lock = RunLock.acquire(outdir, run_id=run_id, command=task.name)
            (outdir / RESULTS_NAME).touch()   # marks the folder as a run's own from its first moment
            plan = {"names": names, "run_id": run_id}
        except (LatentprivError, OSError) as exc:
            plan = {"error": _error_text(exc), "type": type(exc).__name__}
    else:
        plan = {}
    plan = dist.broadcast_object(plan)
    if "error" in plan:
        raise _error_class(plan["type"])(plan["error"])
    names = plan["names"]
    run_id = plan["run_id"]
    items = [BatchItem(index=i, name=n, path=input_dir / n,
                       seed=None if seed is None else item_seed(seed, n)) for i, n in enumerate(names)]
    mine = shard_batches(len(items), batch_size, dist.rank, dist.world_size)
    n_mine = sum(len(b) for b in mine)
    log.info("%s: rank %d/%d takes %d of %d items in %d batch(es)", task.name, dist.rank, dist.world_size,
             n_mine, len(items), len(mine))

    guard = _SignalGuard()
    runner = _Runner(task, outdir, run_id, dist.rank, guard, overwrite)
    bar = None
    if progress and dist.is_main:
        from tqdm import tqdm

        bar = tqdm(total=n_mine, desc=f"{task.name} (rank 0 of {dist.world_size})" if dist.world_size > 1
                   else task.name, unit="item", leave=False)
    guard.install()
    try:
        for batch in mine:
            guard.check()
            before = runner.finished
            runner.run_batch([items[i] for i in batch])
            if bar is not None:
                bar.update(runner.finished - before)
                bar.set_postfix(ok=runner.counts["ok"], skipped=runner.counts["skipped"],
                                failed=runner.counts["failed"])
    except BatchInterrupted as exc:
        exc.done = runner.finished
        log.warning("%s: rank %d interrupted after %d of its %d items; rerun the same command to resume",
                    task.name, dist.rank, runner.finished, n_mine)
        if lock is not None:
            lock.release()
        raise
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    finally:
        guard.restore()
        if bar is not None:
            bar.close()

    # Combine the ranks' counts; every rank learns the totals (and so the exit code).
    mine_counts = {"counts": runner.counts, "failed": runner.failed, "errors": runner.errors}
    gathered = dist.all_gather_object(mine_counts)
    totals = {s: sum(g["counts"][s] for g in gathered) for s in STATUSES}
    failed_items = sorted(name for g in gathered for name in g["failed"])
    errors = {name: error for g in gathered for name, error in g["errors"].items()}
    wall = time.perf_counter() - t_start
    summary = BatchSummary(
        command=task.name, run_id=run_id, input_dir=str(input_dir), outdir=str(outdir),
        world_size=dist.world_size, batch_size=batch_size, total=len(items), ok=totals["ok"],
        skipped=totals["skipped"], failed=totals["failed"], failed_items=failed_items,
        errors={name: errors[name] for name in failed_items}, wall_seconds=round(wall, 3),
        items_per_hour=round(totals["ok"] / wall * 3600, 1) if totals["ok"] and wall > 0 else None,
        config_sha256=task.config_sha256, started=started, finished=_now(),
    )
    accounted = summary.ok + summary.skipped + summary.failed
    if accounted != summary.total:  # would be a bug in sharding; never report a partial run as complete
        raise RuntimeError(f"batch accounting error: {accounted} results for {summary.total} items")
    if dist.is_main:
        write_json(outdir / SUMMARY_NAME, summary.to_dict())
    dist.barrier()  # nobody leaves (and tears the group down) before the summary is on disk
    if lock is not None:
        lock.release()
    return summary


# ------------------------------------------------------------------------------------- command adapters
#
# The commands ``latentpriv invert DIR -o OUTDIR`` and ``latentpriv privatize DIR -o OUTDIR`` call these
# when their INPUT is a folder. They build a BatchTask from the command's options and hand it to
# :func:`run_cli`, which joins the torchrun process group, runs, prints the summary on rank 0 and exits
# with the summary's code.


def _deterministic_torch() -> None:
    """Bitwise-reproducible CUDA runs (``LATENTPRIV_DETERMINISTIC=1``), at some cost in speed.

    CUDA's fastest kernels (atomics in backward passes, autotuned convolutions) make two identical GPU
    runs differ slightly; an inversion amplifies that over its iterations. CPU runs are reproducible
    without this.
    """
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")   # must precede the first cuBLAS call
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def run_cli(build_task: Callable[[Any], BatchTask], input_dir: Path, outdir: Path | None, *, device: str,
            batch_size: int = 1, overwrite: bool = False, seed: int | None = None, progress: bool = True,
            as_json: bool = False,
            finish: Callable[[BatchSummary], tuple[str, str | None]] | None = None) -> BatchSummary:
    """Run a folder command: process group from torchrun's environment, task, summary, exit code.

    ``build_task(dist)`` makes the task once the rank's device is known (``dist.device``). Prints the
    summary line (or the summary as JSON) on rank 0. ``finish(summary)``: post-processing on rank 0 after
    the run (e.g. rendering), returning a line to print and an error text (None when all went well); an
    error makes the exit status 1 like a failed item. When items failed, rank 0 raises :class:`ItemsFailed`
    ("N of M inputs failed: <first errors>", exit status 1, printed by the CLI as one ``Error:`` line) and
    the other ranks exit with status 1 quietly; when interrupted every rank exits ``128 + signal``.
    """
    import sys

    import click

    from latentpriv.runs.distributed import init_distributed

    if outdir is None:
        raise InputError(f"{input_dir} is a folder: pass -o OUTDIR, the folder for the outputs")
    if os.environ.get("LATENTPRIV_DETERMINISTIC", "").strip() not in ("", "0"):
        _deterministic_torch()
    with init_distributed(device) as dist:
        task = build_task(dist)
        try:
            summary = run_batch(task, input_dir, outdir, dist=dist, batch_size=batch_size, overwrite=overwrite,
                                seed=seed, progress=progress and sys.stderr.isatty())
        except BatchInterrupted as exc:
            if dist.is_main or not dist.active:
                click.echo(f"Error: {task.name} {exc} after {exc.done} item(s) on this process; finished items "
                           f"are kept in {outdir}; rerun the same command to resume", err=True)
            raise SystemExit(exc.exit_code) from None
        finally:
            if task.close is not None:
                task.close()
    if dist.is_main:
        if as_json:
            click.echo(json.dumps(summary.to_dict(), indent=2))
        else:
            click.echo(summary.line())
            click.echo(f"records: {Path(outdir) / RESULTS_NAME}, summary: {Path(outdir) / SUMMARY_NAME}", err=True)
    post_error = None
    if finish is not None and dist.is_main:
        line, post_error = finish(summary)
        if line:
            click.echo(line)
    if summary.failed:
        if not dist.is_main:
            raise SystemExit(ItemsFailed.exit_code)
        shown = [summary.errors.get(name) or name for name in summary.failed_items[:3]]
        raise ItemsFailed(f"{summary.failed} of {summary.total} inputs failed: " + "; ".join(shown)
                          + (" ..." if summary.failed > 3 else "") + f" (all in {Path(outdir) / RESULTS_NAME})"
                          + (f"; {post_error}" if post_error else ""))
    if post_error:
        raise ItemsFailed(post_error)
    return summary


def secret_key(path: Path) -> bytes:
    """32 random bytes kept in ``path`` (mode 0600), made once; every process reads the same key.

    Created atomically (temp file + ``os.link``, which fails if another process got there first), so
    concurrent ranks never see a half-written key.
    """
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, os.urandom(32))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    key = path.read_bytes()
    if len(key) != 32:
        raise InputError(f"{path}: not a 32-byte batch key; delete it to make a new one (a folder run will then "
                         "not recognise, and will release again, files it released before)")
    return key


def privatize_task(*, outdir: Path, epsilon: float, attrs: Sequence[str] = (),
                   boundary_files: Sequence[Path] = (), conditions: Sequence[str] = (),
                   mechanism: str = "laplace", delta: float | None = None, clip_radius: float = 3.0,
                   center: str = "0", epsilon_split: str | None = None, noise_clip: float = 1.0,
                   space: str | None = None, layers: str | None = None, model: str = "stylegan_ffhq",
                   weights: str | None = None, device: Any = "cpu", ledger_path: Path | None = None,
                   max_epsilon: float | None = None, force: bool = False, seed: int | None = None,
                   warn: Callable[[str], None] | None = None, decorrelate: bool | None = None,
                   max_norm: float | None = None, subject: str | None = None, label: str | None = None,
                   ledger: Any = None, generator: Any = None) -> BatchTask:
    """The ``privatize`` command as a :class:`BatchTask`: ``STEM.npy -> STEM_private.npy + STEM_private.json``.

    Same options and same release as ``latentpriv privatize FILE`` (its helpers and
    :func:`~latentpriv.privacy.release.accounted_release` are reused): directions
    resolved per latent space; for each file the budget is checked and a pending charge filed in one ledger
    transaction (several processes share one ledger safely), the noise drawn, the sidecar and then the
    output written (``sidecar_first``: the output's rename completes the item) and the charge committed; a
    failed write cancels it, and after a crash the ledger's recovery commits it only if the output exists
    with the sha256 recorded before the write. ``ledger``: an open
    :class:`~latentpriv.privacy.ledger.Ledger` (default: one at ``ledger_path``). With ``seed`` each file gets its own seeded noise
    (``item_seed(seed, name)``), never one stream shared by all files. Files are processed one at a
    time and never retried within a run (a release is a side effect). Inputs are true latents, so the
    sidecar (the release record) identifies its input by an HMAC under a key kept beside the ledger
    (``<ledger>.batch-key``), never by a plain hash that would let anyone test a guessed latent.
    ``generator``: the loaded generator of ``weights``/``model`` when the caller has one (``--render``);
    the latents are then checked against its dimensions before any release (default: loaded only for
    ``center="auto"``).
    """

    from latentpriv.cli.privatize import (
        MODEL_DEFAULT_SPACE,
        load_generator_for,
        load_latent_input,
        parse_center,
        parse_layers,
        parse_split,
        resolve_center,
        resolve_covariance,
        validate_common,
    )
    from latentpriv.edit.boundaries import resolve_directions
    from latentpriv.privacy.ledger import Ledger
    from latentpriv.privacy.noise import make_noise_source
    from latentpriv.privacy.release import ReleaseParams, accounted_release

    delta_v = validate_common(mechanism, delta, max_epsilon)
    center_v = parse_center(center)
    layer_idx = parse_layers(layers)
    split = parse_split(epsilon_split)
    if layer_idx is not None and space not in (None, "wp"):
        raise ConfigError("--layers applies only to W+ latents (--space wp)")
    G = generator if generator is not None else (
        load_generator_for(weights, model, str(device)) if center_v == "auto" else None)
    n_dirs = len(attrs) + len(boundary_files)
    if n_dirs == 0:
        raise InputError("no direction given; use --attr NAME (e.g. smile) or --boundary FILE")
    params = ReleaseParams(mechanism=mechanism, epsilon=epsilon, delta=delta_v, clip_radius=clip_radius,
                           epsilon_split=split, noise_clip=noise_clip, layers=layer_idx,
                           **({} if max_norm is None else {"max_norm": max_norm}))
    spend = params.spend(n_dirs, make_noise_source(seed))  # validates the settings before any file is read
    ledger = ledger if ledger is not None else Ledger(ledger_path)
    if warn is not None:
        if mechanism == "seed":
            warn("--mechanism seed is the research notebook's step and gives NO differential-privacy guarantee")
        if seed is not None:
            warn(f"--seed {seed}: reproducible numpy noise (one seed per file), NOT for release")
    directions: dict[tuple[str, int], tuple[np.ndarray, list[Any], np.ndarray, str, Any]] = {}

    def directions_for(sp: str, dim: int):
        if (sp, dim) not in directions:
            dirs, bounds = resolve_directions(attrs=attrs, boundary_files=boundary_files, conditions=conditions,
                                              model=model, space=sp, dim=dim)
            centers, center_mode = resolve_center(center_v, dirs, sp, G)
            cov = resolve_covariance(decorrelate if mechanism != "seed" else False, weights or model, sp,
                                     device=str(device), warn_fn=warn)
            directions[(sp, dim)] = (dirs, bounds, centers, center_mode, cov)
        return directions[(sp, dim)]

    def preflight(paths: list[Path]) -> None:
        # group the inputs by the (space, dimension) their headers give, set each group up as release()
        # will; when every group fails, every input would fail the same way: a setup error, raised once
        groups: dict[tuple[str, int], int] = {}
        for path in paths:
            shape = _npy_shape(path)
            if shape is None or len(shape) not in (1, 2, 3):
                continue   # unreadable or malformed: that file fails on its own
            sp = space or ("wp" if len(shape) == 3 else str(G.default_space) if G is not None
                           else MODEL_DEFAULT_SPACE.get(model, "w"))
            dim = int(G.z_dim if sp == "z" else G.w_dim) if G is not None else int(shape[-1])
            groups[(sp, dim)] = groups.get((sp, dim), 0) + 1
        if not groups:   # no readable input: still report a missing boundary before creating anything
            resolve_directions(attrs=attrs, boundary_files=boundary_files, conditions=conditions, model=model,
                               space=space or MODEL_DEFAULT_SPACE.get(model, "w"), dim=None)
            return
        failures: list[LatentprivError] = []
        for sp, dim in groups:
            try:
                if layer_idx is not None and sp != "wp":
                    raise ConfigError(f"--layers applies only to W+ latents (--space wp); the inputs are {sp} "
                                      "latents: drop --layers")
                directions_for(sp, dim)
            except LatentprivError as exc:
                failures.append(exc)
        if len(failures) == len(groups):
            raise failures[0]

    def load(item: BatchItem) -> Any:
        inp = load_latent_input(item.path, space=space, model=model, generator=G)
        if layer_idx is not None and inp.space != "wp":
            raise InputError(f"{item.path}: --layers applies only to W+ latents, this one is {inp.space}")
        return inp

    def process(items: list[BatchItem], inputs: list[Any]) -> list[ItemOutput | Exception]:
        outs: list[ItemOutput | Exception] = []
        for item, inp in zip(items, inputs, strict=True):
            try:
                outs.append(release(item, inp))
            except LatentprivError as exc:
                outs.append(exc)
        return outs

    def release(item: BatchItem, inp: Any) -> ItemOutput:
        dirs, bounds, centers, center_mode, cov = directions_for(inp.space, int(inp.latent.shape[-1]))
        output = outdir / f"{item.stem}_private.npy"
        info = {"input": str(item.path), "output": str(output), "space": inp.space, "model": model,
                "center_mode": center_mode, "boundaries": [b.info() for b in bounds], "conditions": list(conditions)}
        if G is not None:
            info["generator"] = G.info()
        # the charge stays pending until the engine has written the output (on_written commits it)
        rel = accounted_release(inp.latent, dirs, params=params, noise=make_noise_source(item.seed), ledger=ledger,
                                center=centers, attributes=[b.attribute or b.name for b in bounds],
                                max_epsilon=max_epsilon, force=force, record_info=info,
                                ledger_info={"input_file": str(item.path), "output": str(output),
                                             "batch_item": item.name}, warn=warn, covariance=cov, model=model,
                                space=inp.space, subject=subject, output=output, output_shape=inp.raw_shape,
                                label=label, defer=True)
        metrics = {"epsilon": spend.epsilon, "delta": spend.delta, "rows": len(rel.keys),
                   "epsilon_total": rel.worst_epsilon}
        return ItemOutput(files={"_private.npy": rel.latent.reshape(inp.raw_shape)}, record=rel.record,
                          metrics=metrics, on_written=rel.commit, on_failed=rel.cancel)

    def verify(item: BatchItem, paths: dict[str, Path]) -> None:
        from latentpriv.io import load_npy

        load_npy(paths["_private.npy"])

    boundary_hashes = {str(p): sha256_file(p) for p in boundary_files if Path(p).is_file()}
    config = {
        "command": "privatize", "epsilon": epsilon, "delta": delta_v, "mechanism": mechanism,
        "clip_radius": clip_radius, "center": center, "epsilon_split": split, "noise_clip": noise_clip,
        "space": space, "layers": layer_idx, "model": model, "attrs": list(attrs), "conditions": list(conditions),
        "boundary_files": boundary_hashes, "weights": weights if center_v == "auto" else None, "seed": seed,
        "decorrelate": decorrelate, "max_norm": max_norm,
    }
    key = secret_key(ledger.path.with_name(ledger.path.name + ".batch-key"))
    return BatchTask(name="privatize", input_suffixes=(".npy",), output_suffixes=("_private.npy",),
                     sidecar_suffix="_private.json", load=load, process=process, config=config, verify=verify,
                     retry_alone=False, fingerprint_key=key, sidecar_first=True, preflight=preflight)


def _npy_shape(path: Path) -> tuple[int, ...] | None:
    """The array shape in a ``.npy`` file's header (the data is not read); None when it has no valid header."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, _ = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, _ = np.lib.format.read_array_header_2_0(fh)
            else:
                return None
    except (OSError, ValueError):
        return None
    return tuple(int(n) for n in shape)


def _content_id(source: Any) -> str | None:
    """sha256 of a weights file (its identity wherever it lies), else the source's text (e.g. "random")."""
    if source is not None and Path(str(source)).is_file():
        return sha256_file(source)
    return None if source is None else str(source)


def invert_task(G: Any, config: Any, *, device: Any, networks: Any, image_dir: Path | None = None,
                extra_record: Mapping[str, Any] | None = None, save_every: int | None = None,
                snapshot_dir: Path | None = None, align_size: int | None = None) -> BatchTask:
    """The ``invert`` command as a :class:`BatchTask`: ``STEM.<image> -> STEM.npy + STEM.json``.

    Args:
        G: a loaded generator on ``device`` (the generator contract in docs/DEVELOPING.md).
        config: the resolved :class:`~latentpriv.inversion.optimize.InversionConfig`.
        device: the rank's device.
        networks: VGG16/LPIPS (:class:`~latentpriv.inversion.perceptual.PerceptualNetworks`), loaded once and reused
            for every batch.
        image_dir: also save each final reconstruction as ``image_dir/STEM.png``.
        extra_record: more provenance for every sidecar.
        save_every: every K steps also write ``snapshot_dir/STEM_<step>.npy`` (and, with ``image_dir``,
            ``image_dir/STEM_<step>.png``), as the single-file command does; snapshots are progress
            artefacts, not outputs (resume does not check them).
        snapshot_dir: where the latent snapshots go (the run's OUTDIR).
        align_size: FFHQ-align each face to this size before inverting (``invert --align``).

    Inputs are read like ``latentpriv invert FILE`` reads them (``latentpriv.cli.invert.load_target``:
    non-square images centre-cropped) and the sidecar is the same record as the single-file command's,
    plus the engine's ``batch`` section. Each batch is one call of :func:`latentpriv.inversion.optimize.invert`
    with a generator seeded from ``config.seed``; since inversion draws its randomness per step and
    broadcasts it over the batch, every image gets the result a single-image run with that seed gives,
    whatever its batch mates, batch size or rank (up to floating-point rounding of batched kernels).
    Outputs: the latent ``[1, w_dim]`` (W), ``[1, z_dim]`` (Z) or ``[1, L, w_dim]`` (W+), float32.
    """
    import torch

    from latentpriv.cli.invert import decode_side, inversion_record, load_target
    from latentpriv.inversion.optimize import _resolve_space, config_to_dict, invert

    # the settings every image would fail on (a space the model lacks, init: mean in Z) fail once, up front
    space = _resolve_space(G, config.space)
    if config.init == "mean" and (space == "z" or getattr(G, "w_avg", None) is None):
        raise ConfigError(f"init: mean needs a W space with w_avg; model {getattr(G, 'name', '?')!r} in space "
                          f"{space!r}: use init: random")
    config_dict = config_to_dict(config)
    info = G.info() if hasattr(G, "info") else {"name": getattr(G, "name", "custom")}
    perceptual: dict[str, Any] = {"vgg16": networks.vgg_source, "lpips": networks.lpips_source}
    for key in ("vgg16", "lpips"):
        perceptual[f"{key}_sha256"] = _content_id(perceptual[key])

    def load(item: BatchItem) -> Any:
        # ([3, S, S] float in [0, 1], crop or None); huge photos reduced while decoding (bounded memory)
        return load_target(item.path, align_size=align_size, min_side=decode_side(G, config))

    def process(items: list[BatchItem], payloads: list[Any]) -> list[ItemOutput]:
        generator = torch.Generator(device="cpu").manual_seed(int(config.seed))

        def snapshot(step: Any) -> None:
            if not save_every or step.step % save_every:
                return
            lat = step.latents.float().cpu().numpy().astype(np.float32)
            images = float01_to_uint8(step.images) if image_dir is not None else None
            for j, item in enumerate(items):
                name = f"{item.stem}_{step.step:06d}"
                save_npy(Path(snapshot_dir or ".") / f"{name}.npy", lat[j:j + 1])
                if images is not None:
                    save_image(Path(image_dir) / f"{name}.png", images[j])   # type: ignore[arg-type]

        t0 = time.perf_counter()
        res = invert(G, [t for t, _ in payloads], config, device=device, generator=generator, networks=networks,
                     callback=snapshot if save_every else None)
        seconds = time.perf_counter() - t0
        lat = res.latents.numpy().astype(np.float32)
        u8 = float01_to_uint8(res.images)
        outs = []
        for j, (item, (_, crop)) in enumerate(zip(items, payloads, strict=True)):
            record = inversion_record(
                input_path=item.path, input_sha256=item.sha256, crop=crop, res=res, j=j, info=info,
                perceptual=perceptual, config=config, config_dict=config_dict, seconds=seconds,
                batch_size=len(items), device=device, aligned=align_size is not None, extra=extra_record)
            files: dict[str, Any] = {".npy": lat[j:j + 1]}
            if image_dir is not None:
                files[".png"] = u8[j]
            metrics = {"psnr": record["psnr"], "lpips": record["lpips"], "iterations": record["iterations"],
                       "loss": record["final_losses"].get("loss")}
            outs.append(ItemOutput(files=files, record=record, metrics=metrics))
        return outs

    def verify(item: BatchItem, paths: dict[str, Path]) -> None:
        arr = np.load(paths[".npy"], allow_pickle=False)
        if arr.ndim not in (2, 3) or arr.shape[0] != 1 or arr.dtype != np.float32:
            raise InputError(f"{paths['.npy']}: shape {arr.shape} {arr.dtype} is not a [1, ...] float32 latent")

    # what determines the outputs, without file locations (nodes may keep the same weights in other places)
    task_config = {"command": "invert", "inversion": config_dict,
                   "generator": {k: v for k, v in info.items() if k != "weights"},
                   "perceptual": {k: v for k, v in perceptual.items() if k.endswith("_sha256")},
                   "images": image_dir is not None, "align_size": align_size}
    outputs = (".npy",) + ((".png",) if image_dir is not None else ())
    return BatchTask(name="invert", input_suffixes=IMAGE_SUFFIXES, output_suffixes=outputs, load=load,
                     process=process, config=task_config, verify=verify,
                     output_dirs={".png": Path(image_dir)} if image_dir is not None else {})


def invert_dir(input_dir: Path, outdir: Path | None, *, config: Any, weights: str = "stylegan_ffhq",
               vgg_weights: Path | None = None, device: str = "auto", batch_size: int = 1,
               image_dir: Path | None = None, overwrite: bool = False, progress: bool = True,
               save_every: int | None = None, align: bool = False) -> BatchSummary:
    """``latentpriv invert DIR -o OUTDIR``: every image of DIR, sharded over torchrun's ranks, resumable.

    Loads the generator and VGG16/LPIPS once per rank on the rank's device, then :func:`run_cli`.
    """
    def build(dist: Any) -> BatchTask:
        from latentpriv.inversion.perceptual import PerceptualNetworks
        from latentpriv.models.registry import load_generator

        G = load_generator(str(weights), device=dist.device)
        networks = PerceptualNetworks.load(dist.device, vgg_weights=vgg_weights)
        return invert_task(G, config, device=dist.device, networks=networks, image_dir=image_dir,
                           save_every=save_every, snapshot_dir=None if outdir is None else Path(outdir),
                           align_size=int(G.resolution) if align else None)

    return run_cli(build, Path(input_dir), None if outdir is None else Path(outdir), device=device,
                   batch_size=batch_size, overwrite=overwrite, progress=progress)


def render_paths(render_dir: Path, stem: str, rows: int) -> list[Path]:
    """Where ``privatize DIR --render RENDER_DIR`` puts the images of ``STEM_private.npy``:
    ``STEM_private.png`` for one row, ``STEM_private_0000.png`` ... for N rows (as ``generate DIR`` names them)."""
    return [render_dir / (f"{stem}_private.png" if rows == 1 else f"{stem}_private_{i:04d}.png")
            for i in range(rows)]


def check_render_dir(render_dir: Path, input_dir: Path, outdir: Path, *, overwrite: bool) -> None:
    """Up-front checks of ``--render RENDER_DIR`` for a folder run (before anything is written): a folder,
    and, unless ``overwrite``, no images with render names in it while OUTDIR holds no run (the overwrite
    rule: only renders of this output folder's own releases are ever replaced)."""
    render_dir = Path(render_dir)
    if render_dir.exists() and not render_dir.is_dir():
        raise InputError(f"--render {render_dir}: a folder input renders into a folder; give --render RENDER_DIR")
    if overwrite or not render_dir.is_dir() or (Path(outdir) / RESULTS_NAME).exists():
        return
    for path in sorted(Path(input_dir).glob("*.npy")):
        stem = glob.escape(path.stem)
        for found in (*render_dir.glob(f"{stem}_private.png"), *render_dir.glob(f"{stem}_private_*.png")):
            raise InputError(f"{found}: already exists and no run has written {outdir}; pass --overwrite to replace "
                             "it or choose an empty --render folder")


def render_released(G: Any, outdir: Path, render_dir: Path, summary: BatchSummary, *, space: str | None,
                    model: str, overwrite: bool = False) -> tuple[list[Path], dict[str, str]]:
    """Render the latents a folder ``privatize`` run released or found complete (``privatize DIR --render``).

    For every item of ``summary``'s run recorded ``ok`` or ``skipped`` in ``OUTDIR/results.jsonl``:
    ``OUTDIR/STEM_private.npy`` -> :func:`render_paths` (uint8 PNGs, the generator's default truncation for
    Z/W, as ``privatize FILE --render``). An item skipped as complete whose images all exist is not rendered
    again unless ``overwrite``. Rendering reads only released latents, so it spends no budget. A file that
    fails (unreadable, wrong dimension, disk full) is reported and the others are still rendered.

    Returns ``(written image paths, {item name: one-line error})``.
    """
    from latentpriv.cli.privatize import load_latent_input, render_latents

    written: list[Path] = []
    errors: dict[str, str] = {}
    done = {rec["item"]: rec["status"] for rec in read_results(outdir, summary.run_id)
            if rec.get("status") in ("ok", "skipped")}
    for name in sorted(done):
        stem = Path(name).stem
        latent = Path(outdir) / f"{stem}_private.npy"
        try:
            inp = load_latent_input(latent, space=space, model=model, generator=G)
            paths = render_paths(Path(render_dir), stem, inp.latent.shape[0])
            if done[name] == "skipped" and not overwrite and all(p.is_file() for p in paths):
                continue
            images = render_latents(G, inp.latent, inp.space)
            for path, image in zip(paths, images, strict=True):
                save_image(path, image)
                written.append(path)
        except (LatentprivError, OSError, RuntimeError, ValueError) as exc:
            errors[name] = f"{latent}: {_error_text(exc)}" if str(latent) not in str(exc) else _error_text(exc)
            log.warning("%s: render failed: %s", name, errors[name])
    return written, errors


def privatize_dir(input_dir: Path, outdir: Path | None, *, device: str = "auto", overwrite: bool = False,
                  seed: int | None = None, warn: Callable[[str], None] | None = None,
                  render_dir: Path | None = None, **options: Any) -> BatchSummary:
    """``latentpriv privatize DIR -o OUTDIR``: every ``.npy`` of DIR, one shared ledger, resumable.

    ``options`` are :func:`privatize_task`'s (the command's options); warnings are shown on rank 0 only.
    ``render_dir`` (``--render``): after the run, rank 0 renders every latent released in it or found
    complete (:func:`render_released`) with the generator of ``--weights``/``--model``, which is loaded
    before anything is released (missing weights fail up front); a failed render exits 1 without undoing
    the releases or the other renders.
    A ledger that lies in the input or output folder is refused. Under torchrun rank 0 alone opens the
    ledger and serves the other ranks (:mod:`latentpriv.privacy.ledger_remote`). However the run ends
    (done, failed, SIGTERM: exit 143), the charges left pending are resolved before the process group
    closes: committed where the output reached disk with its recorded sha256, cancelled otherwise.
    """
    from latentpriv.privacy.ledger import Ledger
    from latentpriv.privacy.release import check_ledger_path

    if outdir is not None:
        check_ledger_path(Ledger(options.get("ledger_path")), folders=[input_dir, outdir])
        if render_dir is not None:
            check_render_dir(render_dir, input_dir, outdir, overwrite=overwrite)
    rendering: dict[str, Any] = {}

    def build(dist: Any) -> BatchTask:
        from latentpriv.cli.privatize import load_generator_for
        from latentpriv.privacy.ledger_remote import open_ledger

        if render_dir is not None:   # before the ledger opens: missing weights fail with nothing written
            rendering["G"] = load_generator_for(options.get("weights"), options.get("model", "stylegan_ffhq"),
                                                str(dist.device))

        # under torchrun rank 0 alone opens the SQLite file; the other ranks ask it over the process group
        ledger, server = open_ledger(options.pop("ledger_path", None), dist)

        def close() -> None:
            if server is not None:
                server.close()              # every other rank has said goodbye (or the wait timed out)
            if isinstance(ledger, Ledger):
                with contextlib.suppress(Exception):   # never mask the run's own exit (143 on SIGTERM)
                    ledger.recover(own=True)
            ledger.close()

        task = privatize_task(outdir=Path(outdir), device=dist.device, seed=seed,  # type: ignore[arg-type]
                              warn=warn if dist.is_main else None, ledger=ledger, generator=rendering.get("G"),
                              **options)
        # one fingerprint key for the whole job: rank 0's, kept beside the ledger on its disk (other nodes
        # would otherwise each make their own, and a resume with another world size would not recognise
        # files released on another node)
        key = dist.broadcast_object(task.fingerprint_key)
        return dataclasses.replace(task, close=close, fingerprint_key=key)

    def finish(summary: BatchSummary) -> tuple[str, str | None]:
        written, errors = render_released(rendering["G"], Path(outdir), Path(render_dir), summary,  # type: ignore[arg-type]
                                          space=options.get("space"), model=options.get("model", "stylegan_ffhq"),
                                          overwrite=overwrite)
        line = f"rendered {len(written)} image(s) to {render_dir}" + (f", {len(errors)} failed" if errors else "")
        if not errors:
            return line, None
        shown = "; ".join(list(errors.values())[:3]) + (" ..." if len(errors) > 3 else "")
        return line, f"{len(errors)} render(s) failed (their releases are kept): {shown}"

    def early_term(signum: int, frame: Any) -> None:
        raise BatchInterrupted(signum)

    # SIGTERM before the engine installs its own handler (start-up) or after it (summary) still exits 143
    previous = (signal.signal(signal.SIGTERM, early_term)
                if threading.current_thread() is threading.main_thread() else None)
    try:
        return run_cli(build, Path(input_dir), None if outdir is None else Path(outdir), device=device,
                       batch_size=1, overwrite=overwrite, seed=seed,
                       finish=finish if render_dir is not None else None)
    except BatchInterrupted as exc:
        raise SystemExit(exc.exit_code) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)

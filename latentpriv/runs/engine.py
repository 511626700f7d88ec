"""Batch runs over a folder: deterministic sharding across processes, verified resume, per-item records.

This is the I/O layer behind ``latentpriv invert DIR -o OUTDIR`` and ``latentpriv privatize DIR -o OUTDIR``.
A command describes its per-item work as a :class:`BatchTask` (load one input, process a batch of them;
both pure apart from reading the input; the tasks are :mod:`latentpriv.runs.invert` and
:mod:`latentpriv.runs.privatize`); :func:`run_batch` does everything else:

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

The engine never prints; it logs through :mod:`logging`, returns a :class:`BatchSummary` and reports lines
through the ``echo`` its caller (the CLI) passes to :func:`run_cli`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
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

from latentpriv.errors import InputError, LatentprivError
from latentpriv.io import (
    IMAGE_SUFFIXES,
    json_default,
    npy_bytes,
    save_image,
    save_npy,
    sha256_bytes,
    sha256_file,
    write_json,
)
from latentpriv.outputs import check_folder_outputs

log = logging.getLogger(__name__)

RESULTS_NAME = "results.jsonl"
SUMMARY_NAME = "summary.json"
STATUSES = ("ok", "skipped", "failed")
#: exit status of a run stopped by a signal (128 + SIGTERM), as a shell reports it
EXIT_INTERRUPTED = 128 + int(signal.SIGTERM)
#: a tqdm-like bar factory, ``progress(total=..., desc=..., unit=...) -> bar`` with ``update(n)`` and ``close()``;
#: the CLI passes tqdm, the library never draws a bar itself (None: no bar)
Progress = Callable[..., Any]


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
    """Some items of a folder run failed (the others were written); exit status 1.

    ``quiet``: raised on a rank other than 0, which has already reported (exit 1 without a message).
    """

    exit_code = 1

    def __init__(self, message: str = "", *, quiet: bool = False) -> None:
        super().__init__(message)
        self.quiet = quiet


class BatchInterrupted(BaseException):
    """A batch run was stopped by a signal; finished items are on disk and a rerun resumes.

    A ``BaseException`` (like ``KeyboardInterrupt``) so that per-item ``except Exception`` handlers,
    in the engine or in task code, cannot swallow it.
    """

    def __init__(self, signum: int, done: int = 0) -> None:
        self.signum = signum
        self.done = done
        #: the line the CLI shows (set by :func:`run_cli` on rank 0), None: exit quietly
        self.report: str | None = None
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


def _item_paths(task: BatchTask, input_dir: Path, outdir: Path, name: str) -> tuple[Path, ...]:
    """Every file the input ``name`` makes: its outputs, then its sidecar."""
    item = BatchItem(0, name, input_dir / name)
    return (*task.output_paths(outdir, item).values(), task.sidecar_path(outdir, item))


def _check_outdir(task: BatchTask, input_dir: Path, outdir: Path, names: Sequence[str]) -> None:
    for folder in {outdir, *map(Path, task.output_dirs.values())}:
        if input_dir.resolve() == folder.resolve():
            raise InputError(f"{folder}: an output folder is the input folder; choose a separate folder so "
                             "outputs never overwrite or mix with inputs")
    inputs = {(input_dir / n).resolve() for n in names}
    reserved = {(outdir / RESULTS_NAME).resolve(), (outdir / SUMMARY_NAME).resolve()}
    for name in names:
        for path in _item_paths(task, input_dir, outdir, name):
            if path.resolve() in inputs:
                raise InputError(f"{path}: this output would overwrite an input; choose another output folder")
            if path.resolve() in reserved:
                raise InputError(f"{input_dir / name}: its output would be named {path.name}, which the batch "
                                 "run uses for its own records; rename that input")


# ------------------------------------------------------------------------------------- results.jsonl lock


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
        return npy_bytes(np.asarray(content))   # exactly what save_npy writes
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
                hashes = {paths[s].name: sha256_bytes(b) for s, b in encoded.items()}
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
              progress: Progress | None = None) -> BatchSummary:
    """Process every input in ``input_dir`` into ``outdir``; see the module docstring for the guarantees.

    Args:
        task: what to do with each item.
        input_dir: folder of inputs (not recursive).
        outdir: output folder, created if missing; must differ from ``input_dir``.
        dist: a :class:`latentpriv.runs.distributed.Distributed` (from ``init_distributed``); None = one process.
        batch_size: items per call of ``task.process``; also the unit of sharding.
        overwrite: redo items whose outputs are already complete.
        seed: base seed; each item gets ``item_seed(seed, name)`` (None leaves ``item.seed`` None).
        progress: a tqdm-like factory ``progress(total=, desc=, unit=)`` for rank 0's bar over its items
            (the CLI passes tqdm); None: no bar.

    Returns:
        The :class:`BatchSummary` over all ranks (identical on every rank). Rank 0 has written it to
        ``OUTDIR/summary.json``.

    Raises:
        InputError: bad folder, no inputs, colliding names (raised on every rank).
        BatchInterrupted: SIGTERM/SIGINT arrived; finished items are complete on disk.
    """
    from latentpriv.runs.distributed import DistEnv, Distributed

    if dist is None:
        import torch

        dist = Distributed(DistEnv(), torch.device("cpu"), None, owns_group=False)
    input_dir = Path(input_dir)
    outdir = Path(outdir)
    make_batches(0, batch_size)  # validates batch_size identically on every rank
    started = _now()
    t_start = time.perf_counter()

    names, run_id, lock = _plan(task, input_dir, outdir, dist, overwrite)
    items = [BatchItem(index=i, name=n, path=input_dir / n,
                       seed=None if seed is None else item_seed(seed, n)) for i, n in enumerate(names)]
    mine = shard_batches(len(items), batch_size, dist.rank, dist.world_size)
    log.info("%s: rank %d/%d takes %d of %d items in %d batch(es)", task.name, dist.rank, dist.world_size,
             sum(len(b) for b in mine), len(items), len(mine))
    runner = _Runner(task, outdir, run_id, dist.rank, _SignalGuard(), overwrite)
    try:
        _run_shard(runner, [[items[i] for i in batch] for batch in mine], dist, progress)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    summary = _summarise(runner, dist, len(items), batch_size=batch_size, input_dir=input_dir,
                         wall=time.perf_counter() - t_start, started=started)
    if dist.is_main:
        write_json(outdir / SUMMARY_NAME, summary.to_dict())
    dist.barrier()  # nobody leaves (and tears the group down) before the summary is on disk
    if lock is not None:
        lock.release()
    return summary


def _plan(task: BatchTask, input_dir: Path, outdir: Path, dist: Any, overwrite: bool) -> tuple[list[str], str, Any]:
    """Phase 1: rank 0 lists the folder, checks the outputs, runs the preflight, creates OUTDIR, takes the
    run lock and decides the run id; every rank gets the same plan (or raises the same error).

    Returns ``(input names, run id, the lock on rank 0 or None)``.
    """
    from latentpriv.runs.distributed import RunLock

    plan: dict[str, Any]
    lock = None   # rank 0 holds the output folder's run lock: two runs never write one folder at once
    if dist.is_main:
        try:
            names = list_inputs(input_dir, task.input_suffixes)
            _check_outdir(task, input_dir, outdir, names)
            check_folder_outputs((path for n in names for path in _item_paths(task, input_dir, outdir, n)),
                                 overwrite=overwrite, marker=outdir / RESULTS_NAME,
                                 where=f"in a folder no {task.name} run has written")
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
    return plan["names"], plan["run_id"], lock


def _run_shard(runner: _Runner, batches: list[list[BatchItem]], dist: Any, progress: Progress | None) -> None:
    """Phase 2: this rank's batches, one after the other, under the signal guard (``progress``'s bar on rank 0,
    with the counts as its postfix where the bar has ``set_postfix``)."""
    task = runner.task
    n_mine = sum(len(b) for b in batches)
    bar = None
    if progress is not None and dist.is_main:
        bar = progress(total=n_mine, desc=f"{task.name} (rank 0 of {dist.world_size})" if dist.world_size > 1
                       else task.name, unit="item")
    runner.guard.install()
    try:
        for batch in batches:
            runner.guard.check()
            before = runner.finished
            runner.run_batch(batch)
            if bar is not None:
                bar.update(runner.finished - before)
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(ok=runner.counts["ok"], skipped=runner.counts["skipped"],
                                    failed=runner.counts["failed"])
    except BatchInterrupted as exc:
        exc.done = runner.finished
        log.warning("%s: rank %d interrupted after %d of its %d items; rerun the same command to resume",
                    task.name, dist.rank, runner.finished, n_mine)
        raise
    finally:
        runner.guard.restore()
        if bar is not None:
            bar.close()


def _summarise(runner: _Runner, dist: Any, total: int, *, batch_size: int, input_dir: Path, wall: float,
               started: str) -> BatchSummary:
    """Phase 3: combine the ranks' counts; every rank learns the totals (and so the exit code)."""
    mine_counts = {"counts": runner.counts, "failed": runner.failed, "errors": runner.errors}
    gathered = dist.all_gather_object(mine_counts)
    totals = {s: sum(g["counts"][s] for g in gathered) for s in STATUSES}
    failed_items = sorted(name for g in gathered for name in g["failed"])
    errors = {name: error for g in gathered for name, error in g["errors"].items()}
    summary = BatchSummary(
        command=runner.task.name, run_id=runner.run_id, input_dir=str(input_dir), outdir=str(runner.outdir),
        world_size=dist.world_size, batch_size=batch_size, total=total, ok=totals["ok"],
        skipped=totals["skipped"], failed=totals["failed"], failed_items=failed_items,
        errors={name: errors[name] for name in failed_items}, wall_seconds=round(wall, 3),
        items_per_hour=round(totals["ok"] / wall * 3600, 1) if totals["ok"] and wall > 0 else None,
        config_sha256=runner.task.config_sha256, started=started, finished=_now(),
    )
    accounted = summary.ok + summary.skipped + summary.failed
    if accounted != summary.total:  # would be a bug in sharding; never report a partial run as complete
        raise RuntimeError(f"batch accounting error: {accounted} results for {summary.total} items")
    return summary


# ------------------------------------------------------------------------------------- command adapters
#
# The commands ``latentpriv invert DIR -o OUTDIR`` and ``latentpriv privatize DIR -o OUTDIR`` run their task
# (latentpriv.runs.invert, latentpriv.runs.privatize) through :func:`run_cli`, which joins the torchrun process
# group, runs, reports the summary on rank 0 through the CLI's ``echo`` and raises for a non-zero exit.


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


def _silent(message: str = "", err: bool = False) -> None:
    log.info("%s", message)


def run_cli(build_task: Callable[[Any], BatchTask], input_dir: Path, outdir: Path | None, *, device: str,
            batch_size: int = 1, overwrite: bool = False, seed: int | None = None, progress: Progress | None = None,
            as_json: bool = False, finish: Callable[[BatchSummary], tuple[str, str | None]] | None = None,
            echo: Callable[..., None] | None = None) -> BatchSummary:
    """Run a folder command: process group from torchrun's environment, task, summary, exit status.

    ``build_task(dist)`` makes the task once the rank's device is known (``dist.device``). Reports the
    summary line (or the summary as JSON) on rank 0 through ``echo(text, err=False)`` (the CLI's
    ``click.echo``; default: the log). ``progress``: :func:`run_batch`'s bar factory (the CLI passes tqdm,
    which it disables when stderr is not a terminal). ``finish(summary)``: post-processing on rank 0 after the run (e.g.
    rendering), returning a line to report and an error text (None when all went well); an error makes the
    exit status 1 like a failed item. When items failed, rank 0 raises :class:`ItemsFailed` ("N of M inputs
    failed: <first errors>", exit status 1, printed by the CLI as one ``Error:`` line) and the other ranks
    raise it ``quiet`` (exit status 1, nothing printed); when interrupted :class:`BatchInterrupted` propagates
    (exit ``128 + signal``) with the line to show in its ``report`` (None on ranks other than 0).
    """
    from latentpriv.runs.distributed import init_distributed

    echo = echo or _silent
    if outdir is None:
        raise InputError(f"{input_dir} is a folder: pass -o OUTDIR, the folder for the outputs")
    if os.environ.get("LATENTPRIV_DETERMINISTIC", "").strip() not in ("", "0"):
        _deterministic_torch()
    with init_distributed(device) as dist:
        task = build_task(dist)
        try:
            summary = run_batch(task, input_dir, outdir, dist=dist, batch_size=batch_size, overwrite=overwrite,
                                seed=seed, progress=progress)
        except BatchInterrupted as exc:
            if dist.is_main or not dist.active:
                exc.report = (f"Error: {task.name} {exc} after {exc.done} item(s) on this process; finished "
                              f"items are kept in {outdir}; rerun the same command to resume")
            raise
        finally:
            if task.close is not None:
                task.close()
    if dist.is_main:
        if as_json:
            echo(json.dumps(summary.to_dict(), indent=2))
        else:
            echo(summary.line())
            echo(f"records: {Path(outdir) / RESULTS_NAME}, summary: {Path(outdir) / SUMMARY_NAME}", err=True)
    post_error = None
    if finish is not None and dist.is_main:
        line, post_error = finish(summary)
        if line:
            echo(line)
    if summary.failed:
        if not dist.is_main:
            raise ItemsFailed("", quiet=True)
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

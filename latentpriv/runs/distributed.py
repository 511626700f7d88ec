"""Several processes, one job: rank, world size and device from torchrun's environment.

``torchrun --nproc_per_node=N -m latentpriv ...`` starts N copies of the command and tells each one who it
is through environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``,
``GROUP_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). This module reads them, validates them, picks the
process's device (``cuda:LOCAL_RANK`` on a GPU node), and opens a process group so that the ranks can
agree on the work list, wait for each other and combine their counts. It is deliberately small: the
batch engine (:mod:`latentpriv.runs.engine`) only exchanges small Python objects (names, counts), never
tensors, so any backend works; ``nccl`` is used on GPUs and ``gloo`` on CPUs.

Without torchrun (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) everything here is a no-op single process, so
the same code path serves a laptop and a cluster.

Environment overrides, for unusual clusters:

* ``LATENTPRIV_DIST_BACKEND``: ``gloo`` or ``nccl`` instead of the automatic choice.
* ``LATENTPRIV_DIST_TIMEOUT_S``: how long a rank waits for the others at a barrier (default 86400 s:
  ranks that finish their share early wait at the final barrier while the others are still working).
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from latentpriv.devices import resolve_device
from latentpriv.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 24 * 3600
BACKENDS = ("gloo", "nccl")


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in a torchrun job (all zero/one for a plain single process).

    Attributes:
        rank: global rank, ``0 <= rank < world_size``.
        world_size: number of processes in the whole job (all nodes).
        local_rank: rank on this node; selects the GPU (``cuda:local_rank``).
        local_world_size: processes on this node.
        node_rank: this node's index (torchrun's ``GROUP_RANK``).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    node_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(environ: Mapping[str, str], key: str, default: int | None) -> int | None:
    raw = environ.get(key)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InputError(f"environment variable {key}={raw!r} is not an integer; launch with torchrun, "
                         f"which sets it, or unset it") from None


def env_from(environ: Mapping[str, str] | None = None) -> DistEnv:
    """Parse and validate torchrun's variables from ``environ`` (default ``os.environ``).

    Raises:
        InputError: a variable is not an integer, ``RANK`` is missing while ``WORLD_SIZE > 1``, or a rank is
            out of range.
    """
    environ = os.environ if environ is None else environ
    world_size = _env_int(environ, "WORLD_SIZE", 1)
    assert world_size is not None
    if world_size < 1:
        raise InputError(f"WORLD_SIZE={world_size} must be >= 1")
    rank = _env_int(environ, "RANK", None)
    if rank is None:
        if world_size > 1:
            raise InputError(f"WORLD_SIZE={world_size} but RANK is not set; launch several processes with "
                             "torchrun --nproc_per_node=N, which sets both")
        rank = 0
    if not 0 <= rank < world_size:
        raise InputError(f"RANK={rank} is outside 0..{world_size - 1} (WORLD_SIZE={world_size})")
    local_world_size = _env_int(environ, "LOCAL_WORLD_SIZE", None)
    local_rank = _env_int(environ, "LOCAL_RANK", None)
    if local_rank is None:
        local_rank = rank if world_size > 1 and local_world_size in (None, world_size) else 0
    if local_world_size is None:
        local_world_size = world_size if world_size > 1 else 1
    if not 0 <= local_rank < max(local_world_size, 1):
        raise InputError(f"LOCAL_RANK={local_rank} is outside 0..{local_world_size - 1} "
                         f"(LOCAL_WORLD_SIZE={local_world_size})")
    node_rank = _env_int(environ, "GROUP_RANK", None)
    if node_rank is None:
        node_rank = _env_int(environ, "NODE_RANK", 0) or 0
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank,
                   local_world_size=local_world_size, node_rank=node_rank)


def device_for(env: DistEnv, spec: str | torch.device | None = "auto") -> torch.device:
    """The device this rank should use for ``--device spec``.

    ``auto``/``cuda`` under torchrun give ``cuda:LOCAL_RANK`` (``LOCAL_RANK % device_count`` with a
    warning when a node runs more processes than it has visible GPUs, e.g. one GPU per process through
    ``CUDA_VISIBLE_DEVICES``); ``cpu`` gives the CPU; an explicit ``cuda:N`` is honoured as given.
    A single process behaves exactly like :func:`latentpriv.devices.resolve_device`.
    """
    if isinstance(spec, torch.device):
        return spec
    text = (spec or "auto").strip().lower()
    if not env.is_distributed or text not in ("auto", "cuda"):
        device = resolve_device(text)
        if env.is_distributed and device.type == "cuda" and env.local_world_size > 1:
            log.warning("--device %s: all %d processes on this node share one GPU; use --device cuda to give "
                        "each process its own (cuda:LOCAL_RANK)", text, env.local_world_size)
        return device
    if not torch.cuda.is_available():
        if text == "cuda":
            raise InputError("--device cuda: CUDA is not available on this machine; use --device cpu or auto")
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if env.local_world_size > count:
        log.warning("%d processes on this node but %d visible GPU(s): processes share GPUs "
                    "(LOCAL_RANK %% %d); start at most %d per node for one GPU each",
                    env.local_world_size, count, count, count)
    return torch.device("cuda", env.local_rank % count)


class Distributed:
    """A (possibly trivial) process group plus this rank's device.

    Use :func:`init_distributed` to make one and close it (or use it as a context manager). Every
    collective is a no-op in a single process, so callers never branch on ``world_size``.
    """

    def __init__(self, env: DistEnv, device: torch.device, backend: str | None, owns_group: bool) -> None:
        self.env = env
        self.device = device
        self.backend = backend
        self._owns_group = owns_group

    @property
    def rank(self) -> int:
        return self.env.rank

    @property
    def world_size(self) -> int:
        return self.env.world_size

    @property
    def is_main(self) -> bool:
        return self.env.is_main

    @property
    def active(self) -> bool:
        """True while a process group connects this rank to others."""
        import torch.distributed as dist

        return self.env.is_distributed and dist.is_available() and dist.is_initialized()

    def barrier(self) -> None:
        """Wait until every rank has arrived."""
        if not self.active:
            return
        import torch.distributed as dist

        if self.backend == "nccl" and self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index or 0])
        else:
            dist.barrier()

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Return rank ``src``'s ``obj`` on every rank (picklable, small)."""
        if not self.active:
            return obj
        import torch.distributed as dist

        box = [obj if self.rank == src else None]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, indexed by rank, on every rank."""
        if not self.active:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        """Destroy the process group if this object created it (idempotent)."""
        if self._owns_group and self.active:
            import torch.distributed as dist

            try:
                dist.destroy_process_group()
            except Exception as exc:  # shutting down anyway; don't mask the real exit reason
                log.debug("destroy_process_group failed: %s", exc)
        self._owns_group = False

    def __enter__(self) -> Distributed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Distributed(rank={self.rank}, world_size={self.world_size}, "
                f"local_rank={self.env.local_rank}, device={self.device}, backend={self.backend})")


def _timeout(environ: Mapping[str, str]) -> datetime.timedelta:
    raw = environ.get("LATENTPRIV_DIST_TIMEOUT_S")
    if raw is None or raw.strip() == "":
        return datetime.timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(raw)
    except ValueError:
        raise InputError(f"LATENTPRIV_DIST_TIMEOUT_S={raw!r} is not a number of seconds") from None
    if seconds <= 0:
        raise InputError(f"LATENTPRIV_DIST_TIMEOUT_S={raw!r} must be > 0")
    return datetime.timedelta(seconds=seconds)


def choose_backend(device: torch.device, requested: str | None = "auto") -> str:
    """``nccl`` for a CUDA device when available, else ``gloo``; ``requested`` overrides."""
    import torch.distributed as dist

    choice = (requested or "auto").strip().lower()
    if choice == "auto":
        if device.type == "cuda" and dist.is_nccl_available():
            return "nccl"
        return "gloo"
    if choice not in BACKENDS:
        raise InputError(f"distributed backend {requested!r} is not supported; use gloo or nccl")
    if choice == "nccl" and device.type != "cuda":
        raise InputError("distributed backend nccl needs CUDA devices; use gloo with --device cpu")
    return choice


def init_distributed(device: str | torch.device | None = "auto", *, backend: str | None = None,
                     environ: Mapping[str, str] | None = None) -> Distributed:
    """Read torchrun's environment, choose this rank's device and join the process group.

    Args:
        device: the user's ``--device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``); see :func:`device_for`.
        backend: ``gloo``, ``nccl`` or ``auto``/None (``LATENTPRIV_DIST_BACKEND``, else nccl when every
            process of the node has its own GPU, gloo otherwise).
        environ: the environment to read (default ``os.environ``; rendezvous uses ``env://``, i.e. the
            real environment's ``MASTER_ADDR``/``MASTER_PORT``).

    Returns:
        A :class:`Distributed`; close it when done (it is a context manager). A single process gets a
        trivial one and no process group is created. A group that already exists (the caller made it)
        is reused and left open on close.
    """
    environ = os.environ if environ is None else environ
    env = env_from(environ)
    dev = device_for(env, device)
    if not env.is_distributed:
        return Distributed(env, dev, None, owns_group=False)
    watch_parent()   # a rank stops when its launcher dies (see watch_parent)
    import torch.distributed as dist

    if not dist.is_available():
        raise InputError("this PyTorch build has no torch.distributed; run a single process instead")
    if dist.is_initialized():
        if dist.get_world_size() != env.world_size or dist.get_rank() != env.rank:
            raise InputError(f"an existing process group (rank {dist.get_rank()} of {dist.get_world_size()}) "
                             f"disagrees with RANK={env.rank} WORLD_SIZE={env.world_size}")
        return Distributed(env, dev, dist.get_backend(), owns_group=False)
    requested = backend or environ.get("LATENTPRIV_DIST_BACKEND") or "auto"
    chosen = choose_backend(dev, requested)
    if chosen == "nccl" and env.local_world_size > torch.cuda.device_count():
        # NCCL refuses two ranks on one GPU; the engine only exchanges small objects, which gloo carries fine
        if requested.strip().lower() == "nccl":
            raise InputError(f"backend nccl needs one GPU per process, but {env.local_world_size} processes share "
                             f"{torch.cuda.device_count()} GPU(s) on this node; use gloo or fewer processes")
        chosen = "gloo"
    for key in ("MASTER_ADDR", "MASTER_PORT"):
        if not environ.get(key):
            raise InputError(f"WORLD_SIZE={env.world_size} but {key} is not set; launch with torchrun, "
                             "which sets it")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend=chosen, init_method="env://", rank=env.rank,
                            world_size=env.world_size, timeout=_timeout(environ))
    log.info("rank %d/%d (node %d, local rank %d) on %s, backend %s", env.rank, env.world_size,
             env.node_rank, env.local_rank, dev, chosen)
    return Distributed(env, dev, chosen, owns_group=True)


# ----------------------------------------------------------------------------- launcher death, run lock
#
# torchrun's ranks are children of the launcher. If the launcher is killed (kill -9, a lost SSH session),
# nothing tells the ranks: they keep running and writing, and a rerun started meanwhile races them. Each
# rank therefore watches its parent: once it is gone the rank gets SIGTERM (the batch engine finishes the
# item it is writing and stops), and if it has not exited after a grace period (e.g. stuck at a barrier
# waiting for a dead peer) it is killed. A heartbeat thread checking os.getppid() is used rather than
# prctl(PR_SET_PDEATHSIG), which fires when the *thread* that forked the rank exits, not the launcher.

PARENT_POLL_S = 0.5
ORPHAN_GRACE_ENV = "LATENTPRIV_ORPHAN_GRACE_S"
DEFAULT_ORPHAN_GRACE_S = 30.0
_watcher: Any = None


def watch_parent(*, poll_s: float = PARENT_POLL_S, grace_s: float | None = None) -> bool:
    """Stop this process when its parent (the torchrun launcher) dies: SIGTERM, then SIGKILL after a grace.

    Idempotent; returns False when there is nothing to watch (the parent is already init). The grace is
    ``$LATENTPRIV_ORPHAN_GRACE_S`` (default 30 s).
    """
    import signal
    import threading
    import time

    global _watcher
    parent = os.getppid()
    if parent <= 1:
        return False
    if _watcher is not None and _watcher.is_alive():
        return True
    if grace_s is None:
        try:
            grace_s = float(os.environ.get(ORPHAN_GRACE_ENV, DEFAULT_ORPHAN_GRACE_S))
        except ValueError:
            grace_s = DEFAULT_ORPHAN_GRACE_S

    def run() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        log.error("the launcher (pid %d) is gone: stopping this rank (pid %d)", parent, os.getpid())
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(max(0.0, grace_s))
        os.kill(os.getpid(), signal.SIGKILL)

    _watcher = threading.Thread(target=run, name="latentpriv-parent-watch", daemon=True)
    _watcher.start()
    return True


LOCK_NAME = ".latentpriv-run.lock"
_HELD: dict[str, RunLock] = {}


class RunLock:
    """An exclusive lock on an output folder: one run writes it at a time.

    The file ``FOLDER/.latentpriv-run.lock`` holds ``{"pid", "host", "started", "run_id", "command"}`` and
    an ``fcntl`` lock for as long as the run lives. The kernel drops the lock when the process dies
    (kill -9 included), so a lock file whose lock is free is stale and is taken over; its contents only
    name the run that holds it in the error message.
    """

    def __init__(self, path: Path, fd: int, info: dict[str, Any]) -> None:
        self.path, self._fd, self.info = path, fd, info

    @classmethod
    def acquire(cls, folder: str | os.PathLike, *, run_id: str = "", command: str = "") -> RunLock:
        """Take ``folder``'s lock or raise :class:`InputError` naming the run that holds it."""
        import fcntl

        folder = Path(folder)
        path = folder / LOCK_NAME
        key = str(path.resolve())
        previous = _HELD.pop(key, None)
        if previous is not None:   # an earlier run of this same process ended without releasing (an error)
            previous.release()
        for _attempt in range(20):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                raise InputError(f"{folder}: cannot create the run lock {path.name} ({exc.strerror or exc}); "
                                 "choose a writable output folder") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                cls._refuse(folder, fd, exc)
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)   # we locked a file its holder had just released and removed: take the new one
        else:
            raise InputError(f"{folder}: could not take the run lock {path.name}; retry")
        return cls._take(folder, path, key, fd, run_id=run_id, command=command)

    @staticmethod
    def _refuse(folder: Path, fd: int, exc: OSError) -> None:
        """Raise the error that names the run holding ``folder``'s lock (read from the lock file)."""
        import json

        try:
            holder = json.loads(os.pread(fd, 65536, 0).decode("utf-8", "replace") or "{}")
        except ValueError:
            holder = {}
        os.close(fd)
        who = (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}, "
               f"run {holder.get('run_id', '?')}") if isinstance(holder, dict) else "unknown holder"
        raise InputError(f"{folder}: another run is writing this folder ({who}); wait for it to finish, "
                         "stop it, or choose another output folder") from exc

    @classmethod
    def _take(cls, folder: Path, path: Path, key: str, fd: int, *, run_id: str, command: str) -> RunLock:
        import json
        import socket

        try:
            stale = json.loads(os.pread(fd, 65536, 0).decode("utf-8", "replace") or "null")
        except ValueError:
            stale = None
        if isinstance(stale, dict) and stale.get("pid"):
            log.info("%s: taking over a stale run lock (pid %s on %s, run %s)", folder, stale.get("pid"),
                     stale.get("host"), stale.get("run_id"))
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "run_id": run_id, "command": command}
        data = (json.dumps(info) + "\n").encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        lock = cls(path, fd, info)
        _HELD[key] = lock
        return lock

    def release(self) -> None:
        """Drop the lock and remove the file (idempotent)."""
        import contextlib
        import fcntl

        if self._fd < 0:
            return
        _HELD.pop(str(self.path.resolve()), None)
        with contextlib.suppress(OSError):
            os.unlink(self.path)   # while still locked: nobody can have taken it in between
        with contextlib.suppress(OSError):
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = -1

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

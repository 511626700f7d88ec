"""Several processes, one job: rank, world size and device from torchrun's environment.

``torchrun --nproc_per_node=N -m latentpriv ...`` starts N copies of the command and tells each one who it
is through environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``,
``GROUP_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). This module reads them, validates them, picks the
process's device (``cuda:LOCAL_RANK`` on a GPU node), and opens a process group so that the ranks can
agree on the work list, wait for each other and combine their counts. It is deliberately small: the
batch engine (:mod:`latentpriv.batch`) only exchanges small Python objects (names, counts), never
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

"""The privacy ledger under torchrun: one process owns the SQLite file, the others ask it over the process group.

SQLite's WAL is not safe on network filesystems, and a multi-node run should need no shared-filesystem
locking, so in a torchrun job rank 0 alone opens the ledger (on its local disk) and serves every other
rank's key, check, charge and commit requests; the other ranks hold a :class:`RemoteLedger` with the same
methods. The traffic goes over a separate ``gloo`` group of the run's process group (created by every rank
in :func:`open_ledger`), so it never interleaves with the run's own collectives. Requests are small
pickled tuples between processes of one job (as ``torch.distributed``'s object collectives do).

Every pending charge a rank files is filed by rank 0's process: when the run ends, however it ends, rank 0
waits for the other ranks' goodbyes and then resolves the pending charges it still holds (committed where
the output reached disk with its recorded sha256, cancelled otherwise).
"""

from __future__ import annotations

import logging
import pickle
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: the methods a remote rank may call
_METHODS = ("keys_for", "reserve", "set_output", "commit", "cancel")


def _send(obj: Any, dst: int, group: Any) -> None:
    import torch
    import torch.distributed as dist

    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    dist.send(torch.tensor([dist.get_rank(), len(data)], dtype=torch.int64), dst=dst, group=group)
    dist.send(torch.frombuffer(bytearray(data), dtype=torch.uint8), dst=dst, group=group)


def _recv(src: int | None, group: Any) -> tuple[int, Any]:
    import torch
    import torch.distributed as dist

    head = torch.empty(2, dtype=torch.int64)
    dist.recv(head, src=src, group=group)
    sender, size = int(head[0]), int(head[1])
    buf = torch.empty(size, dtype=torch.uint8)
    dist.recv(buf, src=sender, group=group)
    return sender, pickle.loads(buf.numpy().tobytes())   # noqa: S301 - a rank of this very job


class LedgerServer:
    """Rank 0's thread answering the other ranks' requests with its own :class:`Ledger` connection."""

    def __init__(self, path: Path, group: Any, world_size: int) -> None:
        from latentpriv.privacy.ledger import Ledger

        self.ledger = Ledger(path)
        self.group = group
        self.waiting = set(range(1, world_size))
        self.thread = threading.Thread(target=self._serve, name="latentpriv-ledger", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.waiting:
            try:
                sender, (method, args, kwargs) = _recv(None, self.group)
            except Exception as exc:  # the group is gone (a rank died, shutdown): nothing more to serve
                log.debug("ledger server stops: %s", exc)
                return
            if method == "bye":
                self.waiting.discard(sender)
                continue
            try:
                if method not in _METHODS:
                    raise ValueError(f"ledger method {method!r} is not served")
                reply: tuple[bool, Any] = (True, getattr(self.ledger, method)(*args, **kwargs))
            except BaseException as exc:   # sent back and raised on the asking rank
                reply = (False, exc)
            try:
                _send(reply, sender, self.group)
            except Exception as exc:
                log.warning("ledger server: cannot answer rank %d: %s", sender, exc)

    def close(self, timeout: float = 20.0) -> None:
        """Wait (up to ``timeout``, within torchrun's 30 s between SIGTERM and SIGKILL) for every other rank's
        goodbye, then close the connection."""
        self.thread.join(timeout)
        if self.thread.is_alive():
            log.warning("ledger server: ranks %s did not finish; their pending charges are resolved now",
                        sorted(self.waiting))
        self.ledger.close()


class RemoteLedger:
    """A non-zero rank's view of the ledger: each call is answered by rank 0's :class:`LedgerServer`."""

    def __init__(self, path: Path, group: Any) -> None:
        self.path = Path(path)
        self.is_default = False
        self.group = group
        self._closed = False

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        from latentpriv.privacy.ledger import shielded

        with shielded():   # a request and its answer are never cut apart by SIGTERM
            _send((method, args, kwargs), 0, self.group)
            _, (ok, value) = _recv(0, self.group)
        if not ok:
            raise value
        return value

    def keys_for(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("keys_for", *args, **kwargs)

    def reserve(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("reserve", *args, **kwargs)

    def set_output(self, *args: Any, **kwargs: Any) -> None:
        self._call("set_output", *args, **kwargs)

    def commit(self, res: Any) -> None:
        self._call("commit", res)
        res.state = "committed"

    def cancel(self, res: Any) -> None:
        self._call("cancel", res)
        res.state = "cancelled"

    def recover(self, **kwargs: Any) -> None:
        """Rank 0 resolves the pending charges (they are its process's)."""

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                _send(("bye", (), {}), 0, self.group)
            except Exception as exc:
                log.debug("ledger: goodbye to rank 0 failed: %s", exc)


def open_ledger(path: str | Path | None, dist: Any) -> tuple[Any, LedgerServer | None]:
    """The ledger this rank uses: a :class:`Ledger` (single process, or rank 0, which also starts the
    server) or a :class:`RemoteLedger`. Every rank of a torchrun job must call it (it creates a group)."""
    from latentpriv.privacy.ledger import Ledger

    local = Ledger(path)
    if not getattr(dist, "active", False) or dist.world_size < 2:
        return local, None
    import torch.distributed as tdist

    group = tdist.new_group(backend="gloo")
    if dist.rank == 0:
        local.connect()   # create the file (and the secret) before any other rank asks
        return local, LedgerServer(local.path, group, dist.world_size)
    return RemoteLedger(local.path, group), None

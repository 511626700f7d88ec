"""The ledger under a process group: rank 0 alone opens the SQLite file, rank 1 reserves, commits and is refused
through it (ledger_remote.py)."""

from __future__ import annotations

import multiprocessing as mp
import types

import numpy as np
import torch.distributed  # noqa: F401  (imported before forking: the ranks start at once)

from latentpriv.privacy.ledger import Ledger, Profile, Spend

PROFILE = Profile.make("coordinate", {"d": "smile"}, "smile")


def _rank(rank: int, init: str, path: str, queue) -> None:
    import torch.distributed as dist

    from latentpriv.errors import PrivacyBudgetError
    from latentpriv.privacy.ledger_remote import RemoteLedger, open_ledger

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        ledger, server = open_ledger(path, types.SimpleNamespace(active=True, world_size=2, rank=rank))
        assert isinstance(ledger, RemoteLedger) == (rank == 1) and (server is not None) == (rank == 0)
        out = []
        if rank == 1:
            faces, _ = ledger.keys_for(np.full((1, 16), 0.5), family="m:w", directions=np.eye(16)[:1])
            res = ledger.reserve(faces, Spend("laplace", 1.0), PROFILE, max_epsilon=1.5)
            ledger.commit(res)
            out.append(res.state)
            try:
                ledger.reserve(faces, Spend("laplace", 1.0), PROFILE, max_epsilon=1.5)
            except PrivacyBudgetError as exc:       # raised on rank 1, decided by rank 0
                out.append(type(exc).__name__)
            ledger.close()
        else:
            server.close(timeout=60)
            ledger.close()
        queue.put((rank, out))
    finally:
        dist.destroy_process_group()


def test_rank_zero_serves_the_other_ranks(tmp_path):
    path = str(tmp_path / "l.sqlite")
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    init = f"file://{tmp_path / 'rendezvous'}"
    procs = [ctx.Process(target=_rank, args=(r, init, path, queue)) for r in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    results = dict(queue.get(timeout=5) for _ in procs)
    assert results[1] == ["committed", "PrivacyBudgetError"]
    with Ledger(path) as led:
        (rel,) = led.releases()
        assert rel["state"] == "committed"

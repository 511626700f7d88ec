"""torchrun environment parsing, device choice and the single-process no-op group.

The real multi-process path (gloo over two ranks) runs in tests/test_runs_torchrun.py under torchrun.
"""

from __future__ import annotations

import datetime

import pytest
import torch

from latentpriv.errors import InputError
from latentpriv.runs import distributed
from latentpriv.runs.distributed import DistEnv, choose_backend, device_for, env_from, init_distributed

TORCHRUN_RANK3_OF_8 = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                       "GROUP_RANK": "1", "MASTER_ADDR": "node0", "MASTER_PORT": "29500"}


def test_no_torchrun_variables_means_one_process():
    env = env_from({})
    assert env == DistEnv(rank=0, world_size=1, local_rank=0, local_world_size=1, node_rank=0)
    assert not env.is_distributed and env.is_main


def test_torchrun_variables_are_read():
    env = env_from(TORCHRUN_RANK3_OF_8)
    assert (env.rank, env.world_size, env.local_rank, env.local_world_size, env.node_rank) == (3, 8, 1, 2, 1)
    assert env.is_distributed and not env.is_main


def test_local_rank_defaults_to_rank_on_a_single_node():
    env = env_from({"RANK": "1", "WORLD_SIZE": "2"})
    assert (env.local_rank, env.local_world_size) == (1, 2)


@pytest.mark.parametrize("environ, message", [
    ({"WORLD_SIZE": "2"}, "RANK is not set"),
    ({"RANK": "2", "WORLD_SIZE": "2"}, "outside 0..1"),
    ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x' is not an integer"),
    ({"WORLD_SIZE": "0"}, "must be >= 1"),
    ({"RANK": "0", "WORLD_SIZE": "4", "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "2"}, "LOCAL_RANK=2 is outside"),
])
def test_inconsistent_environment_is_a_one_line_error(environ, message):
    with pytest.raises(InputError, match=message):
        env_from(environ)


def test_device_on_cpu_machines():
    env = env_from(TORCHRUN_RANK3_OF_8)
    assert device_for(env, "cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert device_for(env, "auto") == torch.device("cpu")
        with pytest.raises(InputError, match="CUDA is not available"):
            device_for(env, "cuda")
        with pytest.raises(InputError, match="CUDA is not available"):
            device_for(DistEnv(), "cuda:0")


def test_device_follows_local_rank_on_gpu_nodes(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    env = DistEnv(rank=3, world_size=4, local_rank=1, local_world_size=2, node_rank=1)
    assert device_for(env, "auto") == torch.device("cuda", 1)
    assert device_for(env, "cuda") == torch.device("cuda", 1)
    assert device_for(env, "cpu") == torch.device("cpu")
    # more processes than visible GPUs (e.g. one GPU per process via CUDA_VISIBLE_DEVICES): share, and say so
    crowded = DistEnv(rank=3, world_size=4, local_rank=3, local_world_size=4)
    with caplog.at_level("WARNING", logger="latentpriv.runs.distributed"):
        assert device_for(crowded, "auto") == torch.device("cuda", 1)
    assert "processes share GPUs" in caplog.text


def test_backend_choice():
    assert choose_backend(torch.device("cpu")) == "gloo"
    assert choose_backend(torch.device("cpu"), "GLOO") == "gloo"
    with pytest.raises(InputError, match="nccl needs CUDA"):
        choose_backend(torch.device("cpu"), "nccl")
    with pytest.raises(InputError, match="not supported"):
        choose_backend(torch.device("cpu"), "mpi")


def test_timeout_from_environment():
    assert distributed._timeout({}) == datetime.timedelta(hours=24)
    assert distributed._timeout({"LATENTPRIV_DIST_TIMEOUT_S": "90"}) == datetime.timedelta(seconds=90)
    with pytest.raises(InputError, match="must be > 0"):
        distributed._timeout({"LATENTPRIV_DIST_TIMEOUT_S": "0"})


def test_single_process_group_is_a_no_op():
    with init_distributed("cpu", environ={}) as dist:
        assert not dist.active and dist.is_main and dist.world_size == 1
        assert dist.device == torch.device("cpu")
        dist.barrier()
        assert dist.broadcast_object({"a": 1}) == {"a": 1}
        assert dist.all_gather_object(5) == [5]
    assert not torch.distributed.is_initialized()


def test_missing_rendezvous_address_is_reported(monkeypatch):
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(InputError, match="MASTER_ADDR is not set"):
        init_distributed("cpu", environ={"RANK": "0", "WORLD_SIZE": "2"})


def test_resolve_device_reads_local_rank_through_env_from(monkeypatch):
    """devices.resolve_device("auto") takes LOCAL_RANK from the one torchrun parser: a malformed value is a
    one-line InputError (was a ValueError traceback), a valid one picks cuda:LOCAL_RANK % count."""
    from latentpriv.devices import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "NODE_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert resolve_device("auto") == torch.device("cuda", 0)
    for key, value in TORCHRUN_RANK3_OF_8.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert resolve_device("auto") == torch.device("cuda", 1)
    monkeypatch.setenv("LOCAL_RANK", "one")
    with pytest.raises(InputError, match="LOCAL_RANK='one' is not an integer"):
        resolve_device("auto")

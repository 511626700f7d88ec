"""Shared helpers of the batch-run tests (tests/test_runs_*.py): inputs, environments, ledger lines."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

STANDIN = Path(__file__).parent / "batch_standin.py"
REPO = Path(__file__).resolve().parents[1]


def images(folder: Path, n: int, size: int = 8, start: int = 0) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(start, start + n):
        arr = np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8)
        name = f"face{i:02d}.png"
        Image.fromarray(arr).save(folder / name)
        names.append(name)
    return names


def env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def torchrun(nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]


def oks(records: list[dict]) -> list[str]:
    return sorted(r["item"] for r in records if r["status"] == "ok")


def latents(folder: Path, n: int, dim: int = 512, same: bool = False) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(11)
    base = rng.standard_normal((1, dim)).astype(np.float32)
    names = []
    for i in range(n):
        name = f"w{i:02d}.npy"
        np.save(folder / name, base if same else rng.standard_normal((1, dim)).astype(np.float32))
        names.append(name)
    return names


def boundary(path: Path, dim: int = 512) -> Path:
    b = np.random.default_rng(5).standard_normal((1, dim))
    np.save(path, b / np.linalg.norm(b))
    return path


def ledger_lines(path: Path) -> list[dict]:
    """The ledger's charges that count (committed or pending), one per released file, with their info fields."""
    from latentpriv.privacy.ledger import Ledger

    return [{**e, **e["info"]} for e in Ledger(path).entries() if e["state"] != "cancelled"]

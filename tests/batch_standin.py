"""A stand-in batch command for the engine's tests: cheap, seeded, and runnable under torchrun.

Each image becomes ``STEM.npy``: its per-channel mean (float32 [3]) plus Gaussian noise drawn from a
``numpy`` Generator seeded with the item's seed, and a ``STEM.json`` sidecar. ``--sleep`` slows each
item down so that a test can interrupt a run midway; ``--fail-batch`` makes every multi-item batch
raise (to exercise the one-by-one retry).

    python tests/batch_standin.py IN OUT --seed 3 --batch-size 2
    torchrun --standalone --nproc_per_node=2 tests/batch_standin.py IN OUT --seed 3
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from latentpriv.errors import LatentprivError
from latentpriv.io import IMAGE_SUFFIXES, load_image
from latentpriv.runs.distributed import init_distributed
from latentpriv.runs.engine import BatchInterrupted, BatchItem, BatchTask, ItemOutput, run_batch


def make_task(*, sleep: float = 0.0, fail_batch: bool = False, noise: float = 0.1) -> BatchTask:
    def load(item: BatchItem) -> np.ndarray:
        return load_image(item.path)

    def process(items: list[BatchItem], images: list[np.ndarray]) -> list[ItemOutput]:
        if fail_batch and len(items) > 1:
            raise RuntimeError("batch failure requested")
        outs = []
        for item, image in zip(items, images, strict=True):
            time.sleep(sleep)
            rng = np.random.default_rng(item.seed)
            value = image.reshape(-1, 3).mean(axis=0).astype(np.float32) / 255.0
            value = value + noise * rng.standard_normal(3).astype(np.float32)
            outs.append(ItemOutput(files={".npy": value}, record={"source": item.name},
                                   metrics={"mean": float(value.mean())}))
        return outs

    return BatchTask(name="standin", input_suffixes=IMAGE_SUFFIXES, output_suffixes=(".npy",),
                     load=load, process=process, config={"noise": noise, "kind": "standin"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("input_dir")
    parser.add_argument("outdir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--fail-batch", action="store_true")
    args = parser.parse_args(argv)
    try:
        with init_distributed("cpu") as dist:
            summary = run_batch(make_task(sleep=args.sleep, fail_batch=args.fail_batch), args.input_dir,
                                args.outdir, dist=dist, batch_size=args.batch_size, overwrite=args.overwrite,
                                seed=args.seed)
    except BatchInterrupted as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return exc.exit_code
    except LatentprivError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    if summary is not None and dist.is_main:
        print(summary.line())
    return summary.exit_code


if __name__ == "__main__":
    sys.exit(main())

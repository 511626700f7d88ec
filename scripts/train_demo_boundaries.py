#!/usr/bin/env python
"""Train the project's demo boundaries for ``dcgan64`` (smile, mouth_open, pose) into ``boundaries/``.

Rerun from the repository root (needs the face extra, ``pip install -e ".[face]"``; ~2 minutes on 2 CPU
cores)::

    python scripts/train_demo_boundaries.py            # writes boundaries/dcgan64_{smile,mouth_open,pose}_boundary.{npy,json}
    python scripts/train_demo_boundaries.py --out /tmp/b --num 1000

It is ``latentpriv boundary train --model dcgan64 --attr ATTR --num 4000 --seed 0 --ratio 0.1 --C 0.01``
for each attribute, except that the latents are sampled and scored once and shared by all attributes
(the command would re-sample the same latents for each, since the sampler seed is the same). The same
library functions are called: :func:`latentpriv.edit.training.sample_and_score`,
:func:`~latentpriv.edit.training.train_boundary` and :func:`~latentpriv.edit.training.boundary_record`.

``C = 0.01`` rather than InterFaceGAN's ``C = 1``: with a few hundred training samples per class in
dcgan64's 100-d Z, ``C = 1`` fits the training set perfectly and validates a few points worse.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

#: boundary name (file: dcgan64_<name>_boundary.npy) -> scorer key
ATTRIBUTES = {"smile": "smile", "mouth_open": "mouth_open", "pose": "yaw"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--out", type=Path, default=Path("boundaries"), help="output folder (default: boundaries)")
    parser.add_argument("--num", type=int, default=4000, help="latents to sample (default 4000)")
    parser.add_argument("--seed", type=int, default=0, help="sampler and split seed (default 0)")
    parser.add_argument("--ratio", type=float, default=0.1, help="per-class fraction (default 0.1)")
    parser.add_argument("--C", type=float, default=0.01, help="SVM regularisation (default 0.01)")
    parser.add_argument("--device", default="cpu", help="device for sampling (default cpu)")
    args = parser.parse_args(argv)

    from latentpriv.devices import resolve_device
    from latentpriv.edit.training import boundary_record, sample_and_score, train_boundary
    from latentpriv.edit.training_run import write_boundary
    from latentpriv.faces.attributes import score_images
    from latentpriv.faces.models import require_dlib
    from latentpriv.models.registry import load_generator

    require_dlib()
    G = load_generator("dcgan64", device=resolve_device(args.device))
    t0 = time.perf_counter()
    latents, scores = sample_and_score(G, score_images, args.num, generator=torch.Generator().manual_seed(args.seed))
    print(f"sampled and scored {args.num} faces in {time.perf_counter() - t0:.0f} s "
          f"({np.isfinite(scores['smile']).mean():.1%} with a detected face)", file=sys.stderr)

    for name, key in ATTRIBUTES.items():
        result = train_boundary(latents, scores[key], rng=np.random.default_rng(args.seed), ratio=args.ratio,
                                C=args.C)
        stem = f"dcgan64_{name}_boundary"
        record = boundary_record(
            result, name=stem, attribute=name, space="z", model=G.name, model_info=G.info(), num=args.num,
            sampler_seed=args.seed, split_seed=args.seed,
            scorer=f"latentpriv.faces.attributes.score_images['{key}'] (dlib 68-point landmarks)",
        )
        record["command"] = (f"latentpriv boundary train --model dcgan64 --attr {name} --num {args.num} "
                             f"--seed {args.seed} --ratio {args.ratio} --C {args.C} -o {args.out / stem}.npy")
        npy, _ = write_boundary(args.out / f"{stem}.npy", result.boundary, record)
        print(f"{name:<11} validation accuracy {result.val_accuracy:.3f}  train {result.train_accuracy:.3f}  "
              f"{result.chosen}/class  -> {npy}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

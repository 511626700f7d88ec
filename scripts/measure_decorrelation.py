#!/usr/bin/env python3
"""Held-out R^2 of each protected coordinate from the released residual, orthogonal vs oblique split.

For dcgan64 (Z, with the demo boundaries in boundaries/) and a synthetic-weights StyleGAN (W, spec recipe
seed 0; only its mapping network matters) with InterFaceGAN's W boundaries (shipped in
latentpriv/data/interfacegan), estimate the latent covariance (``latentpriv.edit.covariance``; cached as
``latentpriv boundary covariance`` does), then print a markdown table of ``residual_r2`` for
``U = N`` (orthogonal, InterFaceGAN's split) and ``U = split_basis(N, Sigma)`` (oblique, decorrelated).

    python scripts/measure_decorrelation.py [--num 100000] [--heldout 20000] [--device cpu]
        [--stylegan stylegan_ffhq]   # real weights instead of the synthetic ones, if fetched

A second estimate from independent samples (seed + 1) re-evaluates the oblique split, so that the split's
own sampling error shows. About 3 minutes on 2 CPU cores (mapping network only). Estimates go to a temporary
folder unless --use-cache (then they land in the normal cache, where `privatize` finds them and decorrelates
by default).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _load_dirs(paths: list[Path]) -> np.ndarray:
    from latentpriv.privacy.mechanisms import orthonormalize

    return orthonormalize([np.load(p, allow_pickle=False) for p in paths])


def _rows(label: str, stats, other, sets: dict[str, list[Path]]) -> list[str]:
    """``stats``: Sigma of the split and the R^2 moments; ``other``: an estimate from independent samples
    (another seed), on which the oblique split computed from ``stats`` is re-evaluated (regression fitted
    on ``other``'s fit moments, R^2 on its held-out moments), so U's own sampling error is not hidden."""
    from latentpriv.edit.covariance import residual_r2
    from latentpriv.privacy.mechanisms import split_basis

    out = []
    for name, paths in sets.items():
        N = _load_dirs(paths)
        off = residual_r2(stats, N, split_basis(N))
        U = split_basis(N, stats)
        on, cross = residual_r2(stats, N, U), residual_r2(other, N, U)
        fmt = lambda v: ", ".join(f"{x:.4f}" for x in v)  # noqa: E731
        out.append(f"| {label} | {name} | {len(paths)} | {fmt(off)} | {fmt(on)} | {fmt(cross)} |")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num", type=int, default=100_000)
    ap.add_argument("--heldout", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--use-cache", action="store_true",
                    help="Read and write the normal covariance cache instead of a temporary folder.")
    ap.add_argument("--stylegan", default=None, metavar="NAME|FILE",
                    help="StyleGAN weights to measure instead of the synthetic ones (e.g. stylegan_ffhq).")
    args = ap.parse_args(argv)
    if not args.use_cache:
        with tempfile.TemporaryDirectory() as home:
            # weights are still found in ./weights and the user cache, which come after LATENTPRIV_HOME
            os.environ["LATENTPRIV_HOME"] = home
            return _measure(args)
    return _measure(args)


def _measure(args) -> int:

    from latentpriv.edit.covariance import covariance_for, spectrum_summary

    lines = ["| model (space) | directions | k | R^2 orthogonal | R^2 oblique | R^2 oblique, independent samples |",
             "|---|---|---|---|---|---|"]
    notes = []
    t0 = time.time()
    kw = dict(num=args.num, heldout_num=args.heldout, estimate=True, device=args.device, batch_size=args.batch_size)

    dc = ROOT / "boundaries"
    stats = covariance_for("dcgan64", "z", seed=args.seed, **kw)
    other = covariance_for("dcgan64", "z", seed=args.seed + 1, **kw)
    attrs = ["smile", "mouth_open", "pose"]
    sets = {a: [dc / f"dcgan64_{a}_boundary.npy"] for a in attrs}
    sets["smile+mouth_open+pose"] = [dc / f"dcgan64_{a}_boundary.npy" for a in attrs]
    lines += _rows("dcgan64 (Z)", stats, other, sets)
    s = spectrum_summary(stats)
    notes.append(f"dcgan64 Z: eigenvalues {s['eig_min']:.3f}..{s['eig_max']:.3f}, effective rank "
                 f"{s['effective_rank']:.1f}/{stats.dim}")

    from latentpriv.models.synthetic import write_synthetic_checkpoint

    ifg = ROOT / "latentpriv" / "data" / "interfacegan"
    with tempfile.TemporaryDirectory() as tmp:
        if args.stylegan:
            ckpt, label = args.stylegan, f"{args.stylegan} (W)"
        else:
            # resolution 8 keeps the full checkpoint's mapping network (same manifest positions, same values)
            ckpt = write_synthetic_checkpoint(Path(tmp) / "stylegan_synthetic_seed0.pth", 0, resolution=8)
            label = "synthetic StyleGAN (W)"
        stats = covariance_for(ckpt, "w", seed=args.seed, **kw)
        other = covariance_for(ckpt, "w", seed=args.seed + 1, **kw)
    wattrs = ["age", "eyeglasses", "gender", "pose", "smile"]
    sets = {a: [ifg / f"stylegan_ffhq_{a}_w_boundary.npy"] for a in wattrs}
    sets["smile+gender"] = [ifg / "stylegan_ffhq_smile_w_boundary.npy", ifg / "stylegan_ffhq_gender_w_boundary.npy"]
    sets["all five"] = [ifg / f"stylegan_ffhq_{a}_w_boundary.npy" for a in wattrs]
    lines += _rows(label, stats, other, sets)
    s = spectrum_summary(stats)
    notes.append(f"{label}: eigenvalues {s['eig_min']:.4g}..{s['eig_max']:.4g} (condition "
                 f"{s['condition']:.3g}), effective rank {s['effective_rank']:.1f}/{stats.dim}")

    print(f"Sigma from {args.num} samples, R^2 on {args.heldout} held-out samples (seeds {args.seed}, "
          f"{args.seed + 1} for the independent column); "
          f"{time.time() - t0:.0f} s on {args.device}\n")
    print("\n".join(lines))
    print()
    for n in notes:
        print(f"- {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

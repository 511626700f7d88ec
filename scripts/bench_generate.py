#!/usr/bin/env python3
"""Benchmark ``G.synthesize`` + the official postprocess at 1024 px: wall time and peak memory per batch.

Uses the spec's synthetic-weights recipe (the real ``stylegan_ffhq.pth`` has the same architecture, so the
cost is the same). Writes its section of docs/BENCHMARKS.md.

    python scripts/bench_generate.py --device cuda --batch 8
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import time
from pathlib import Path

import torch

from latentpriv.devices import resolve_device
from latentpriv.models.stylegan import stylegan_from_state_dict
from latentpriv.models.synthetic import synthetic_state_dict, to_torch_state_dict

START, END = "<!-- bench_generate:start -->", "<!-- bench_generate:end -->"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--resolution", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--output", default="docs/BENCHMARKS.md")
    args = ap.parse_args()

    device = resolve_device(args.device)
    G = stylegan_from_state_dict(to_torch_state_dict(synthetic_state_dict(0, resolution=args.resolution)),
                                 device=device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    w = G.mapping(G.sample_z(args.batch, gen))
    rows = []
    with torch.no_grad():
        for _ in range(2):  # warm-up: cuDNN autotune, allocator
            G.to_uint8(G.synthesize(w, space="w"))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for _ in range(args.repeats):
            _sync(device)
            t0 = time.perf_counter()
            G.to_uint8(G.synthesize(w, space="w"))
            _sync(device)
            times.append(time.perf_counter() - t0)
    times.sort()
    med = times[len(times) // 2]
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    rows.append((args.batch, med, med / args.batch, peak))
    line = (f"| {args.resolution} | {args.batch} | {med * 1000:.1f} | {med / args.batch * 1000:.1f} | "
            f"{args.batch / med:.1f} | {peak:.2f} GiB |")
    print(line)
    section = "\n".join([
        START, "## Generation (`latentpriv generate`)", "",
        f"Measured {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')} on {name} "
        f"(torch {torch.__version__}) by `scripts/bench_generate.py --batch {args.batch}`: synthesis + uint8 "
        f"postprocess of one batch, no grad, float32, synthetic weights; median of {args.repeats} after 2 warm-ups.",
        "", "| px | batch | ms / batch | ms / image | images / s | peak GPU memory |", "|---:|---:|---:|---:|---:|---:|",
        line, END])
    out = Path(args.output)
    text = out.read_text() if out.exists() else "# Benchmarks\n"
    if START in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), section, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    out.write_text(text)


if __name__ == "__main__":
    main()

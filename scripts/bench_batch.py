#!/usr/bin/env python3
"""Inversion throughput on one GPU: images/hour at 1024 px for batch size 1 vs larger batches.

    python scripts/bench_batch.py                          # GPU, 1024 px, batch 1,2,4,...,32, 300 s budget
    python scripts/bench_batch.py --time-limit 120 --batch-sizes 1,4,16 --amp none,bf16
    python scripts/bench_batch.py --device cpu --resolution 32 --steps 3 --no-write   # smoke test

What is measured: :func:`latentpriv.inversion.optimize.invert` (the function behind ``latentpriv invert``) with
the chosen preset's loss, optimiser and resize settings, on ``B`` random target images at a time. Each
configuration runs ``--warmup`` + ``--steps`` optimiser steps; the time per step is the median of the
timed steps (CUDA synchronised). Early stopping is switched off so every image costs the same number
of steps, and ``images/hour = 3600 * B / (overhead + step_seconds * iterations)`` with ``iterations`` the
preset's (what a full ``latentpriv invert`` run does per image; with early stopping on, real runs can be
faster) and ``overhead`` the once-per-batch work before the first and after the last step. The generator is the spec's synthetic-weights
StyleGAN (same architecture and cost as the released FFHQ model) and the VGG16/LPIPS weights are
random: the time of a step does not depend on weight values, and nothing has to be downloaded.

Batch sizes are tried in increasing order until one runs out of memory, the time limit would be
passed, or the list ends; the best is the highest throughput. The results go to a JSON file and, in
place between markers, to the "Batch throughput" section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
START = "<!-- bench_batch:start -->"
END = "<!-- bench_batch:end -->"


def _parse_ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated integers, e.g. 1,2,4,8") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: batch sizes must be >= 1")
    return sorted(set(values))


def _parse_amp(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in ("none", "bf16")]
    if not values or bad:
        raise argparse.ArgumentTypeError(f"{text!r}: choose from none, bf16 (comma-separated)")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resolution", type=int, default=1024, help="generator resolution (default 1024)")
    p.add_argument("--batch-sizes", type=_parse_ints, default=_parse_ints("1,2,4,8,16,32"),
                   help="batch sizes to try, ascending (default 1,2,4,8,16,32)")
    p.add_argument("--steps", type=int, default=10, help="timed optimiser steps per configuration (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--time-limit", type=float, default=300.0,
                   help="seconds for the whole benchmark; larger batches are skipped when they would not fit "
                        "(default 300)")
    p.add_argument("--preset", default="default", help="inversion preset whose settings are timed (default)")
    p.add_argument("--config", type=Path, default=None, help="inversion config YAML instead of --preset")
    p.add_argument("--amp", type=_parse_amp, default=["none"],
                   help="precision(s) to time: none (float32) and/or bf16 (default none)")
    p.add_argument("--device", default="auto", help="auto, cuda[:N] or cpu (default auto)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--output", type=Path, default=REPO / "docs" / "BENCHMARKS.md",
                   help="markdown file whose 'Batch throughput' section is replaced (default docs/BENCHMARKS.md)")
    p.add_argument("--no-write", action="store_true", help="print only; leave the markdown file alone")
    p.add_argument("--from-json", type=Path, default=None,
                   help="measure nothing: write the section from a --json file of an earlier run")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        p.error("--steps must be >= 1 and --warmup >= 0")
    if args.time_limit <= 0:
        p.error("--time-limit must be > 0")
    return args


def load_inversion_config(args: argparse.Namespace) -> tuple[Any, str]:
    from latentpriv.errors import ConfigError
    from latentpriv.inversion import optimize as inversion

    try:
        config = inversion.load_config(args.preset if args.config is None else None, args.config)
        source = str(args.config) if args.config else f"preset {args.preset}"
    except ConfigError as exc:
        if args.config is not None:
            raise
        print(f"note: {exc}; timing the built-in InversionConfig defaults", file=sys.stderr)
        config, source = inversion.InversionConfig(), "InversionConfig defaults"
    return config, source


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_config(G: Any, nets: Any, config: Any, batch: int, amp: str, args: argparse.Namespace,
                device: Any) -> dict[str, Any]:
    """Median seconds per optimiser step for a batch of ``batch`` random targets."""
    import torch

    from latentpriv.inversion.optimize import invert

    steps = args.warmup + args.steps
    cfg = dataclasses.replace(config, iterations=steps, amp=amp,
                              early_stop=dataclasses.replace(config.early_stop, patience=0))
    gen = torch.Generator().manual_seed(batch)
    targets = torch.rand((batch, 3, args.resolution, args.resolution), generator=gen)
    stamps: list[float] = []

    def callback(step: Any) -> None:
        _sync(device)
        stamps.append(time.perf_counter())

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    t0 = time.perf_counter()
    invert(G, targets.to(device), cfg, device=device, generator=torch.Generator().manual_seed(0),
           networks=nets, callback=callback)
    _sync(device)
    t_end = time.perf_counter()
    marks = [t0, *stamps]
    deltas = [b - a for a, b in zip(marks[:-1], marks[1:], strict=True)][args.warmup:]
    step_s = statistics.median(deltas)
    # once per batch: targets' features, initial latent, noise-ramp statistics (before the first step),
    # final renderings and metrics (after the last one)
    overhead = max(0.0, (stamps[0] - t0) - step_s) + (t_end - stamps[-1])
    per_image_run = (overhead + step_s * config.iterations) / batch
    out = {
        "batch_size": batch, "amp": amp, "step_seconds": step_s, "steps_timed": len(deltas),
        "batch_overhead_seconds": overhead, "seconds_per_image": per_image_run,
        "images_per_hour": 3600.0 / per_image_run, "wall_seconds": t_end - t0,
    }
    if device.type == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from latentpriv.devices import resolve_device
    from latentpriv.inversion.perceptual import PerceptualNetworks
    from latentpriv.models.stylegan import stylegan_from_state_dict
    from latentpriv.models.synthetic import synthetic_state_dict, to_torch_state_dict

    t_start = time.perf_counter()
    deadline = t_start + args.time_limit
    device = resolve_device(args.device)
    config, source = load_inversion_config(args)
    G = stylegan_from_state_dict(to_torch_state_dict(synthetic_state_dict(0, resolution=args.resolution)),
                                 name="synthetic").to(device)   # built on the CPU, then moved whole
    nets = PerceptualNetworks.random(torch.Generator().manual_seed(0), device)
    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "resolution": args.resolution, "config": source,
        "iterations": config.iterations, "space": config.space, "steps_timed": args.steps,
        "time_limit_s": args.time_limit, "results": [], "stopped": None,
        "command": "python scripts/bench_batch.py " + " ".join(sys.argv[1:]),
    }
    # one short untimed run first: CUDA context, kernel selection and allocator warm-up would otherwise be
    # charged to the first configuration measured
    time_config(G, nets, config, min(args.batch_sizes), args.amp[0],
                argparse.Namespace(**{**vars(args), "warmup": 0, "steps": 2}), device)
    for amp in args.amp:
        previous: dict[str, Any] | None = None
        for batch in args.batch_sizes:
            if previous is not None:
                guess = previous["step_seconds"] * batch / previous["batch_size"] * (args.warmup + args.steps) + 5
                if time.perf_counter() + guess > deadline:
                    info["stopped"] = f"time limit: batch {batch} ({amp}) would need ~{guess:.0f} s more"
                    break
            elif time.perf_counter() > deadline:
                info["stopped"] = "time limit"
                break
            try:
                result = time_config(G, nets, config, batch, amp, args, device)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                info["results"].append({"batch_size": batch, "amp": amp, "oom": True})
                print(f"batch {batch:3d} {amp:4s}: out of memory", file=sys.stderr)
                break
            info["results"].append(result)
            print(f"batch {batch:3d} {amp:4s}: {result['step_seconds'] * 1000:8.1f} ms/step  "
                  f"{result['images_per_hour']:8.1f} images/hour"
                  + (f"  peak {result['peak_memory_gib']:.1f} GiB" if "peak_memory_gib" in result else ""),
                  file=sys.stderr)
            previous = result
            if device.type == "cuda":
                torch.cuda.empty_cache()
    info["total_seconds"] = time.perf_counter() - t_start
    return info


def markdown(info: dict[str, Any]) -> str:
    ok = [r for r in info["results"] if not r.get("oom")]
    lines = [
        START,
        "## Batch throughput (inversion)",
        "",
        f"Measured {info['date']} on {info['device']} (torch {info['torch']}) by `scripts/bench_batch.py`: "
        f"`invert` at {info['resolution']} px with {info['config']} ({info['iterations']} iterations per image, "
        f"space `{info['space']}`), synthetic-weights StyleGAN and random VGG16/LPIPS weights (timing does not "
        f"depend on weight values), early stopping off (real runs may stop earlier and be faster); median of "
        f"{info['steps_timed']} timed steps. images/hour = 3600 x batch / (per-batch setup + seconds per step x "
        "iterations).",
        "",
        f"Command: `{info.get('command', 'python scripts/bench_batch.py')}`",
        "",
        "| batch | precision | ms / step | setup s / batch | s / image (full run) | images / hour | peak GPU memory |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in info["results"]:
        if r.get("oom"):
            lines.append(f"| {r['batch_size']} | {_precision(r['amp'])} | out of memory | | | | |")
            continue
        mem = f"{r['peak_memory_gib']:.1f} GiB" if "peak_memory_gib" in r else "-"
        lines.append(f"| {r['batch_size']} | {_precision(r['amp'])} | {r['step_seconds'] * 1000:.1f} | "
                     f"{r['batch_overhead_seconds']:.2f} | {r['seconds_per_image']:.2f} | "
                     f"{r['images_per_hour']:.0f} | {mem} |")
    if ok:
        lines.append("")
        base = next((r for r in ok if r["batch_size"] == 1 and r["amp"] == "none"), None) or \
            min(ok, key=lambda r: (r["batch_size"], r["amp"] != "none"))
        lines.append(f"Batch {base['batch_size']} ({_precision(base['amp'])}): {base['images_per_hour']:.0f} "
                     "images/hour.")
        for amp in dict.fromkeys(r["amp"] for r in ok):
            best = max((r for r in ok if r["amp"] == amp), key=lambda r: r["images_per_hour"])
            lines.append(f"Best {_precision(amp)}: batch {best['batch_size']}, {best['images_per_hour']:.0f} "
                         f"images/hour ({best['images_per_hour'] / base['images_per_hour']:.1f}x batch "
                         f"{base['batch_size']} {_precision(base['amp'])}).")
        lines.append("")
        lines.append("Use `latentpriv invert DIR -o OUTDIR --batch-size B` (bf16: `--set amp=bf16`); on N GPUs "
                     "`torchrun --nproc_per_node=N` multiplies this by about N, since the ranks share no work "
                     "(see docs/scale.md).")
    if info.get("stopped"):
        lines.append(f"Stopped early: {info['stopped']}.")
    if info.get("note"):
        lines += ["", str(info["note"])]
    lines.append(END)
    return "\n".join(lines) + "\n"


def _precision(amp: str) -> str:
    return {"none": "float32", "bf16": "bf16 autocast"}.get(amp, amp)


def write_section(path: Path, section: str) -> None:
    """Replace the marked section of ``path`` (or append it), atomically; other sections are untouched."""
    from latentpriv.io import atomic_write

    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    if START in text and END in text and text.index(START) < text.index(END):
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + section.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with atomic_write(path, "w") as fh:
        fh.write(text)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = json.loads(args.from_json.read_text()) if args.from_json else run(args)
    section = markdown(info)
    print(section)
    if args.json is not None:
        args.json.write_text(json.dumps(info, indent=2) + "\n")
    if not args.no_write:
        write_section(args.output, section)
        print(f"wrote {args.output}", file=sys.stderr)
    ok = [r for r in info["results"] if not r.get("oom") and math.isfinite(r["images_per_hour"])]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

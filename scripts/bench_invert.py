#!/usr/bin/env python3
"""Benchmark `latentpriv invert`: quality per wall time and cost per iteration, default vs seed preset.

Writes (or updates) its own section of docs/BENCHMARKS.md, between ``<!-- bench_invert:begin -->`` and
``<!-- bench_invert:end -->``; inside it each (mode, device kind) table is its own sub-block, so a CPU
run and a later GPU run both stay. Other sections of the file are left alone.

Modes (``--modes``, comma-separated):

* ``quality``: self-consistency. A StyleGAN with the synthetic weights of spec section 12 cut to
  ``--resolution`` px, ``--targets`` targets rendered from known Z (seed 123, default truncation, uint8),
  real VGG16/LPIPS weights. Each preset (plus ``--variant`` s) runs ``--iterations`` steps on the batch;
  PSNR/LPIPS of the current latents are measured every ``--eval-every`` steps (evaluation time is not
  counted in the wall time). Reports when the default first reaches the seed preset's final quality.
* ``cost``: seconds per iteration and peak memory at ``--sizes`` px, batch 1 and 4, both presets.
* ``gpu``: 1024 px, batch 1 and 8, iterations/s and peak memory, float32 and bf16 autocast (bf16 is
  also checked for quality at ``--resolution`` px; use it only where that holds).

One command, bounded by ``--time-limit`` seconds (measurements that would start after it are listed as
skipped). Example (the lead's GPU run)::

    python scripts/bench_invert.py --device cuda --modes quality,cost,gpu --time-limit 480
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import platform
import re
import sys
import threading
import time
from pathlib import Path

import torch

from latentpriv.evaluate.metrics import psnr
from latentpriv.inversion.optimize import InversionConfig, invert, load_config
from latentpriv.inversion.perceptual import PerceptualNetworks, lpips
from latentpriv.io import float01_to_uint8

REPO = Path(__file__).resolve().parents[1]

BEGIN, END = "<!-- bench_invert:begin -->", "<!-- bench_invert:end -->"


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


class PeakRSS:
    """Peak resident memory of this process while active (CPU runs), sampled every 5 ms from /proc."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return 0

    def __enter__(self):
        self.base = self.rss()
        self.peak = self.base

        def run():
            while not self._stop.wait(0.005):
                self.peak = max(self.peak, self.rss())

        self._t = threading.Thread(target=run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.rss())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_generator(resolution: int, device: torch.device, fmap_max: int | None = None):
    """Spec section 12 weights (seed 0) cut to ``resolution``; ``fmap_max`` narrows the channels (fast)."""
    from latentpriv.models.stylegan import StyleGANConfig, state_dict_manifest, stylegan_from_state_dict
    from latentpriv.models.synthetic import synthetic_state_dict, to_torch_state_dict

    if fmap_max:
        sd = synthetic_state_dict(0, manifest=state_dict_manifest(StyleGANConfig.standard(resolution, fmap_max=fmap_max)))
    else:
        sd = synthetic_state_dict(0, resolution=resolution)
    return stylegan_from_state_dict(to_torch_state_dict(sd), device=device, name=f"synthetic{resolution}")


def make_targets(G, n: int, device: torch.device) -> torch.Tensor:
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(123)).to(device)
    with torch.no_grad():
        u8 = ((G.synthesize(z, "z").float() + 1) * 127.5 + 0.5).floor().clamp(0, 255)
    return (u8 / 255.0).float()


def preset(name: str, overrides=()) -> InversionConfig:
    return load_config(name, overrides=list(overrides))


# --------------------------------------------------------------------------------------- quality


def run_quality(args, device, nets, deadline) -> dict:
    G = synthetic_generator(args.resolution, device, args.fmap_max)
    targets = make_targets(G, args.targets, device)
    runs = [("seed", "seed", [f"iterations={args.iterations}"])] if not args.no_seed else []
    runs.append(("default", "default", []))
    for spec in args.variant:
        name, _, sets = spec.partition("=")
        runs.append((name, "default", [f"iterations={args.iterations}"] + [s for s in sets.split(";") if s]))
    if args.bf16_check and device.type == "cuda":
        runs.append(("default+bf16", "default", [f"iterations={args.iterations}", "amp=bf16"]))
    out = {"resolution": args.resolution, "fmap_max": args.fmap_max, "targets": args.targets, "iterations": args.iterations, "runs": {}}
    for name, base, sets in runs:
        if deadline.left() < 5:
            out["runs"][name] = {"skipped": "time limit"}
            continue
        cfg = preset(base, sets)
        curve = []
        state = {"eval": 0.0, "t0": 0.0}
        space = cfg.space if cfg.space != "auto" else G.default_space
        trunc = {} if cfg.truncation == "default" else {"truncation_psi": None, "truncation_layers": None}

        def cb(st, curve=curve, state=state, space=space, trunc=trunc):
            if st.step == 1 or st.step % args.eval_every == 0 or st.step == st.iterations:
                sync(device)
                e0 = time.perf_counter()
                with torch.no_grad():
                    img = ((G.synthesize(st.latents, space, **trunc).float() + 1) / 2).clamp(0, 1)
                    p = float(psnr(float01_to_uint8(img), float01_to_uint8(targets)).mean())
                    lp = float(lpips(img, targets, nets, size=min(256, G.resolution)).mean())
                sync(device)
                curve.append({"step": st.step, "seconds": round(e0 - state["t0"] - state["eval"], 3),
                              "psnr": round(p, 3), "lpips": round(lp, 4)})
                state["eval"] += time.perf_counter() - e0
            return deadline.left() < 2

        sync(device)
        state["t0"] = t0 = time.perf_counter()
        res = invert(G, targets, cfg, device=device, generator=torch.Generator().manual_seed(cfg.seed), networks=nets,
                     callback=cb)
        sync(device)
        wall = time.perf_counter() - t0 - state["eval"]
        out["runs"][name] = {"config": base, "overrides": sets, "wall_s": round(wall, 2),
                             "steps": int(res.history["loss"].shape[0]),
                             "final_psnr": round(float(res.metrics["psnr"].mean()), 3),
                             "final_lpips": round(float(res.metrics["lpips"].mean()), 4), "curve": curve}
        print(f"[quality] {name}: {out['runs'][name]['final_psnr']} dB, LPIPS {out['runs'][name]['final_lpips']}, "
              f"{wall:.1f} s", flush=True)
    seed = out["runs"].get("seed", {})
    if "final_psnr" in seed:
        for name, r in out["runs"].items():
            if name == "seed" or "curve" not in r:
                continue
            hit = next((c for c in r["curve"] if c["psnr"] >= seed["final_psnr"] and c["lpips"] <= seed["final_lpips"]),
                       None)
            r["reaches_seed_quality"] = None if hit is None else {
                "step": hit["step"], "seconds": hit["seconds"],
                "fraction_of_seed_wall": round(hit["seconds"] / seed["wall_s"], 4) if seed["wall_s"] else None}
    return out


# ------------------------------------------------------------------------------------------ cost


def time_steps(G, targets, cfg, device, nets, steps: int) -> tuple[float, int]:
    """Seconds per iteration (after one warm-up step) and peak memory in bytes."""
    cfg = dataclasses.replace(cfg, iterations=steps + 1, early_stop=dataclasses.replace(cfg.early_stop, patience=0),
                              noise_ramp=dataclasses.replace(cfg.noise_ramp, samples=min(cfg.noise_ramp.samples, 1000)))
    marks = {}

    def cb(st):
        if st.step == 1:
            sync(device)
            marks["t1"] = time.perf_counter()
        if st.step == st.iterations:
            sync(device)
            marks["t2"] = time.perf_counter()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        invert(G, targets, cfg, device=device, networks=nets, callback=cb)
        peak = torch.cuda.max_memory_allocated(device)
    else:
        with PeakRSS() as m:
            invert(G, targets, cfg, device=device, networks=nets, callback=cb)
        peak = m.peak
    return (marks["t2"] - marks["t1"]) / steps, peak


def step_flops(G, targets, cfg, device, nets) -> float:
    """FLOPs of one optimisation step (convolutions and matrix products, forward and backward, as counted
    by ``torch.utils.flop_counter``): the count of a 2-iteration run minus that of a 1-iteration run, so
    set-up (target features) and the final metrics cancel."""
    from torch.utils.flop_counter import FlopCounterMode

    def count(iterations: int) -> int:
        c = dataclasses.replace(cfg, iterations=iterations, early_stop=dataclasses.replace(cfg.early_stop, patience=0),
                                noise_ramp=dataclasses.replace(cfg.noise_ramp, samples=min(cfg.noise_ramp.samples, 1000)))
        with FlopCounterMode(display=False) as fc:
            invert(G, targets, c, device=device, networks=nets)
        return fc.get_total_flops()

    return float(count(2) - count(1))


def peak_gflops(device: torch.device) -> float:
    """The best throughput this device reaches on plain float32 work like the inverter's (a 512->512 3x3
    convolution at 32x32, batch 4, and a 4096^2 matrix product): the ceiling for any batch size."""
    import torch.nn.functional as F

    def rate(fn, flops: float) -> float:
        for _ in range(2):
            fn()
        sync(device)
        t = time.perf_counter()
        for _ in range(5):
            fn()
        sync(device)
        return flops * 5 / (time.perf_counter() - t) / 1e9

    x = torch.randn(4, 512, 32, 32, device=device)
    w = torch.randn(512, 512, 3, 3, device=device)
    a = torch.randn(4096, 4096, device=device)
    return max(rate(lambda: F.conv2d(x, w, padding=1), 2 * 4 * 32 * 32 * 512 * 512 * 9),
               rate(lambda: a @ a, 2 * 4096**3))


def run_cost(args, device, nets, deadline, sizes, batches, amps=("none",)) -> dict:
    rows = []
    peak_rate = peak_gflops(device) if args.flops else None
    for size in sizes:
        if deadline.left() < 10:
            rows.append({"size": size, "skipped": "time limit"})
            continue
        G = synthetic_generator(size, device)
        tall = make_targets(G, max(batches), device)
        # one untimed step at the largest batch first: the first run at a size also grows the process heap
        # (and warms caches), which otherwise lands on whichever preset is timed first
        time_steps(G, tall, preset("default"), device, nets, 1)
        for b in batches:
            for name in ("default", "seed"):
                for amp in amps:
                    if deadline.left() < 5:
                        rows.append({"size": size, "batch": b, "preset": name, "amp": amp, "skipped": "time limit"})
                        continue
                    cfg = preset(name, [f"amp={amp}"])
                    s, peak = time_steps(G, tall[:b], cfg, device, nets, args.steps)
                    row = {"size": size, "batch": b, "preset": name, "amp": amp, "s_per_it": round(s, 4),
                           "it_per_s": round(1 / s, 2), "peak_mib": round(peak / 2**20, 1)}
                    if args.flops and amp == "none":
                        fl = step_flops(G, tall[:b], cfg, device, nets)
                        row.update(gflop_per_it=round(fl / 1e9, 1), gflops=round(fl / 1e9 / s, 1))
                    rows.append(row)
                    print(f"[cost] {size}px b{b} {name} {amp}: {s:.4f} s/it, peak {peak / 2**20:.0f} MiB"
                          + (f", {row['gflop_per_it']} GFLOP/it = {row['gflops']} GFLOP/s" if "gflops" in row else ""),
                          flush=True)
        del G
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {"rows": rows, "steps": args.steps, "peak_gflops": None if peak_rate is None else round(peak_rate, 1)}


# --------------------------------------------------------------------------------------- report


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return (f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, "
            f"{torch.get_num_threads()} torch threads, torch {torch.__version__}")


def render_quality(q: dict, note: str) -> str:
    seed = q["runs"].get("seed", {})
    narrow = f", channels capped at {q['fmap_max']}" if q.get("fmap_max") else ""
    lines = [f"Synthetic StyleGAN {q['resolution']} px{narrow} (spec section 12 weights, seed 0), {q['targets']} targets from "
             f"known Z (seed 123, default truncation, uint8), real VGG16/LPIPS, {q['iterations']} iterations per "
             f"preset on the batch. Wall time excludes the periodic evaluation. {note}", "",
             f"| run | overrides | wall s | final PSNR dB | final LPIPS | reaches seed@{q['iterations']} quality at |",
             "|---|---|---|---|---|---|"]
    for name, r in q["runs"].items():
        if "skipped" in r:
            lines.append(f"| {name} | | skipped ({r['skipped']}) | | | |")
            continue
        reach = r.get("reaches_seed_quality", "")
        if name == "seed":
            reach = "(reference)"
        elif reach is None:
            reach = "not reached"
        elif reach:
            reach = f"step {reach['step']}, {reach['seconds']} s = {100 * reach['fraction_of_seed_wall']:.1f}% of seed wall"
        ov = "; ".join(s for s in r["overrides"] if not s.startswith("iterations=")) or "-"
        lines.append(f"| {name} | {ov} | {r['wall_s']} | {r['final_psnr']} | {r['final_lpips']} | {reach} |")
    lines += ["", "PSNR / LPIPS (mean over targets) against optimisation time:", ""]
    steps = sorted({c["step"] for r in q["runs"].values() for c in r.get("curve", [])})
    names = [n for n, r in q["runs"].items() if r.get("curve")]
    lines.append("| step | " + " | ".join(f"{n} s / PSNR / LPIPS" for n in names) + " |")
    lines.append("|---" * (len(names) + 1) + "|")
    for s in steps:
        cells = []
        for n in names:
            c = next((c for c in q["runs"][n]["curve"] if c["step"] == s), None)
            cells.append("" if c is None else f"{c['seconds']} / {c['psnr']} / {c['lpips']}")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    if seed.get("final_psnr") is not None:
        lines += ["", f"Seed preset after {q['iterations']} iterations: {seed['final_psnr']} dB, LPIPS {seed['final_lpips']}."]
    return "\n".join(lines)


def render_cost(c: dict, note: str, title: str) -> str:
    lines = [f"{title} ({c['steps']} timed iterations after one warm-up; peak memory = "
             f"{'torch.cuda.max_memory_allocated' if 'GPU' in title else 'peak process RSS, generator and VGG included'}). {note}", "",
             "| px | batch | preset | amp | s/iteration | it/s | peak MiB | GFLOP/it | GFLOP/s (% of peak) |",
             "|---|---|---|---|---|---|---|---|---|"]
    pk = c.get("peak_gflops")
    for r in c["rows"]:
        if "skipped" in r:
            lines.append(f"| {r['size']} | {r.get('batch', '')} | {r.get('preset', '')} | {r.get('amp', '')} | skipped "
                         f"({r['skipped']}) | | | | |")
        else:
            rate = "" if "gflops" not in r else f"{r['gflops']}" + (f" ({100 * r['gflops'] / pk:.0f} %)" if pk else "")
            lines.append(f"| {r['size']} | {r['batch']} | {r['preset']} | {r['amp']} | {r['s_per_it']} | "
                         f"{r['it_per_s']} | {r['peak_mib']} | {r.get('gflop_per_it', '')} | {rate} |")
    if pk:
        lines += ["", f"Peak: {pk} GFLOP/s, the best of a 512->512 3x3 convolution (32x32, batch 4) and a 4096^2 "
                  "float32 matrix product on this device. A batch of B costs B times the FLOPs of batch 1, so "
                  "batch B / batch 1 per step >= B x (batch-1 GFLOP/s) / peak: listed as \"floor\" below."]
    by = {(r["size"], r["batch"], r["preset"], r["amp"]): r["s_per_it"] for r in c["rows"] if "s_per_it" in r}
    rates = {(r["size"], r["batch"], r["preset"], r["amp"]): r["gflops"] for r in c["rows"] if "gflops" in r}
    ratios = []
    for (size, b, name, amp), s in sorted(by.items()):
        if b != 1:
            base = by.get((size, 1, name, amp))
            if base:
                r1 = rates.get((size, 1, name, amp))
                floor = f" (floor {b * r1 / pk:.2f}x)" if pk and r1 else ""
                ratios.append(f"{size} px {name} {amp}: batch {b} = {s / base:.2f}x batch 1 per step{floor}")
        if name == "default" and (size, b, "seed", amp) in by:
            ratios.append(f"{size} px b{b} {amp}: default/seed cost = {s / by[(size, b, 'seed', amp)]:.2f}")
    if ratios:
        lines += ["", "Ratios: " + "; ".join(ratios) + "."]
    return "\n".join(lines)


def update_markdown(path: Path, blocks: dict[str, str]) -> None:
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    if BEGIN not in text:
        text = text.rstrip("\n") + f"\n\n{BEGIN}\n## Inversion (`scripts/bench_invert.py`)\n\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    section, tail = rest.split(END, 1)
    for key, body in blocks.items():
        b, e = f"<!-- bench_invert/{key} -->", f"<!-- /bench_invert/{key} -->"
        block = f"{b}\n{body}\n{e}"
        if b in section:
            section = re.sub(re.escape(b) + r".*?" + re.escape(e), lambda _m, block=block: block, section, flags=re.S)
        else:
            section = section.rstrip("\n") + f"\n\n{block}\n"
    from latentpriv.io import atomic_write

    with atomic_write(path, "w") as fh:
        fh.write(head + BEGIN + section + END + tail)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--modes", default="quality,cost")
    ap.add_argument("--resolution", type=int, default=128, help="quality benchmark generator resolution")
    ap.add_argument("--fmap-max", type=int, default=None, help="narrow quality generator (quick CPU runs)")
    ap.add_argument("--targets", type=int, default=4)
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--variant", action="append", default=[],
                    help="extra default-based run NAME=key=val;key=val (quality mode)")
    ap.add_argument("--no-seed", action="store_true", help="quality: skip the seed preset (quick tuning runs)")
    ap.add_argument("--bf16-check", action="store_true", help="quality run of the default with bf16 (GPU)")
    ap.add_argument("--sizes", default="128,256,1024")
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--steps", type=int, default=3, help="timed iterations per cost measurement")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--flops", action=argparse.BooleanOptionalAction, default=None,
                    help="cost: count FLOPs per step and compare with the device's peak (default: on for CPU)")
    ap.add_argument("--time-limit", type=float, default=1800.0, help="seconds for the whole run")
    ap.add_argument("--note", default="", help="free text added to the tables (e.g. CPU contention)")
    ap.add_argument("--label", default="", help="machine label: keeps this machine's tables apart from another's "
                    "of the same kind (e.g. --label 2core writes cost-cpu-2core)")
    ap.add_argument("--output", type=Path, default=REPO / "docs" / "BENCHMARKS.md")
    ap.add_argument("--json", type=Path, default=None, help="also write raw results here")
    args = ap.parse_args(argv)

    from latentpriv.devices import resolve_device
    from latentpriv.runs.allocator import tune_host_allocator

    # as the latentpriv command does (allocator.py); LATENTPRIV_TUNE_MALLOC=0 measures glibc's default
    print(f"host allocator tuned: {tune_host_allocator()}", flush=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.flops is None:
        args.flops = device.type == "cpu"
    deadline = Deadline(args.time_limit)
    nets = PerceptualNetworks.load(device)
    kind = "gpu" if device.type == "cuda" else "cpu"
    suffix = f"-{args.label}" if args.label else ""
    title_label = f": {args.label}" if args.label else ""
    stamp = f"{_dt.date.today().isoformat()}, {_machine(device)}."
    note = (stamp + " " + args.note).strip()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    results, blocks = {}, {}
    if "quality" in modes:
        try:
            results["quality"] = q = run_quality(args, device, nets, deadline)
            blocks[f"quality-{kind}{suffix}"] = (f"### Quality per wall time ({kind.upper()}{title_label})\n\n"
                                                 + render_quality(q, note))
        except Exception as exc:  # noqa: BLE001 - keep the other modes' results
            results["quality_error"] = repr(exc)
            print(f"[quality] failed: {exc!r}", file=sys.stderr)
    if "cost" in modes:
        sizes = [int(s) for s in args.sizes.split(",")]
        batches = [int(b) for b in args.batches.split(",")]
        try:
            results["cost"] = c = run_cost(args, device, nets, deadline, sizes, batches)
            blocks[f"cost-{kind}{suffix}"] = (f"### Cost per iteration ({kind.upper()}{title_label})\n\n"
                                      + render_cost(c, note, f"{kind.upper()} cost"))
        except Exception as exc:  # noqa: BLE001
            results["cost_error"] = repr(exc)
            print(f"[cost] failed: {exc!r}", file=sys.stderr)
    if "gpu" in modes:
        if device.type != "cuda":
            print("gpu mode needs --device cuda; skipped", file=sys.stderr)
        else:
            results["gpu"] = g = run_cost(args, device, nets, deadline, [1024], [1, 8], amps=("none", "bf16"))
            blocks["gpu-1024"] = "### GPU at 1024 px\n\n" + render_cost(g, note, "GPU 1024 px")
    update_markdown(args.output, blocks)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    print(f"updated {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

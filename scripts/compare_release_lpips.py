#!/usr/bin/env python3
"""How much the float-level release construction changes the rendered image (LPIPS), at the defaults.

For each face the library's release (``latentpriv.privatize``, laplace, epsilon 1, seeded here so the two
constructions see the same released coordinate) gives ``new = fl32(P(r + z) + atilde U)``; the 0.1
construction with the *same* released coordinate is ``old = fl32(w + (atilde - a) n)``. Both are rendered
and compared with LPIPS (VGG, v0.1), so the number isolates what the residual dither changes. Models:
dcgan64 (Z, its smile boundary) and the spec's synthetic StyleGAN (W, the InterFaceGAN smile boundary).
Writes its section of docs/BENCHMARKS.md.

    python scripts/compare_release_lpips.py --faces 64
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import tempfile
from pathlib import Path

import numpy as np
import torch

import latentpriv
from latentpriv.edit.boundaries import resolve_directions
from latentpriv.inversion.perceptual import PerceptualNetworks, lpips
from latentpriv.privacy.mechanisms import privatize

START, END = "<!-- release_lpips:start -->", "<!-- release_lpips:end -->"


def _render01(G, lat: np.ndarray, space: str) -> torch.Tensor:
    with torch.no_grad():
        img = G.synthesize(torch.from_numpy(np.ascontiguousarray(lat, dtype=np.float32)), space=space)
    return ((img.clamp(-1, 1) + 1) / 2).float()


def measure(G, space: str, attr: str, model: str, faces: int, nets: PerceptualNetworks, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    z = G.sample_z(faces, generator=gen)
    w = (G.mapping(z) if space == "w" else z).detach().numpy().astype(np.float32)
    dirs, _ = resolve_directions(attrs=[attr], model=model, space=space, dim=w.shape[1])
    res = privatize(w, dirs, epsilon=1.0, seed=seed)
    new = res.latent.astype(np.float64)
    n = dirs[0]
    atilde = new @ n
    old = (w.astype(np.float64) + np.outer(atilde - w.astype(np.float64) @ n, n)).astype(np.float32)
    d = lpips(_render01(G, old, space), _render01(G, new.astype(np.float32), space), nets, size=None).numpy()
    base = lpips(_render01(G, w, space), _render01(G, old, space), nets, size=None).numpy()
    return {"faces": faces, "sigma": res.record["residual_release"]["sigma"],
            "lpips_median": float(np.median(d)), "lpips_p95": float(np.percentile(d, 95)),
            "lpips_max": float(d.max()), "edit_lpips_median": float(np.median(base))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--faces", type=int, default=64)
    ap.add_argument("--resolution", type=int, default=128, help="synthetic StyleGAN resolution")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", default="docs/BENCHMARKS.md")
    args = ap.parse_args()
    torch.set_num_threads(2)
    nets = PerceptualNetworks.load("cpu")
    rows = []
    G = latentpriv.load_generator("dcgan64", device="cpu")
    rows.append(("dcgan64 (Z, smile)", measure(G, "z", "smile", "dcgan64", args.faces, nets, args.seed)))
    from latentpriv.models.synthetic import write_synthetic_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        path = write_synthetic_checkpoint(Path(tmp) / "synthetic.pth", 0, resolution=args.resolution)
        G = latentpriv.load_generator(str(path), device="cpu")
        rows.append((f"synthetic StyleGAN {args.resolution} px (W, InterFaceGAN smile)",
                     measure(G, "w", "smile", "stylegan_ffhq", args.faces, nets, args.seed)))
    lines = [START, "## Release construction: image change (LPIPS)", "",
             f"Measured {dt.date.today().isoformat()} with `python scripts/compare_release_lpips.py "
             f"--faces {args.faces}` (laplace, epsilon 1, defaults; the same released coordinate in both "
             "constructions, so the difference is the residual dither alone). For scale, the last column is the "
             "LPIPS of the edit itself (original vs the 0.1 release).", "",
             "| model | faces | dither sigma | LPIPS new vs 0.1: median | p95 | max | edit itself: median |",
             "|---|---|---|---|---|---|---|"]
    for name, r in rows:
        print(name, r)
        lines.append(f"| {name} | {r['faces']} | {r['sigma']:.4f} | {r['lpips_median']:.4f} | {r['lpips_p95']:.4f} | "
                     f"{r['lpips_max']:.4f} | {r['edit_lpips_median']:.4f} |")
    lines.append(END)
    section = "\n".join(lines)
    out = Path(args.output)
    text = out.read_text() if out.exists() else "# Benchmarks\n"
    if START in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _m: section, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    out.write_text(text)


if __name__ == "__main__":
    main()

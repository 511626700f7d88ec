"""Peak memory of inverting a huge photo: a 12000x12000 picture into dcgan64 (64 px).

Photos are reduced while decoding to what the model needs (``latentpriv.io.load_image(min_side=...)``), so
the peak is one 8-bit decode of the photo plus torch and the model, never a full-size float tensor (the
issue this guards against measured 7.85 GB and 56 s for the PNG before). Each case runs ``latentpriv
invert`` in its own process and reads that process's peak RSS with ``os.wait4`` (ru_maxrss).

    python scripts/bench_large_photo.py                 # -> "Large photos" section of docs/BENCHMARKS.md
    python scripts/bench_large_photo.py --side 6000 --no-write
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
START, END = "<!-- bench_large_photo:start -->", "<!-- bench_large_photo:end -->"
LIMIT_GB = 1.5


def make_photo(path: Path, side: int) -> None:
    """A smooth photo-like picture (gradients and a disc; a few hundred KB as PNG), written by a child
    process so that its own memory does not count."""
    code = (
        "import sys, numpy as np; from PIL import Image\n"
        "s = int(sys.argv[2]); y = np.linspace(0, 1, s, dtype=np.float32)[:, None]\n"
        "x = np.linspace(0, 1, s, dtype=np.float32)[None, :]\n"
        "img = np.empty((s, s, 3), np.uint8)\n"
        "img[..., 0] = (255 * y).astype(np.uint8); img[..., 1] = (255 * x).astype(np.uint8)\n"
        "img[..., 2] = np.where((x - .5) ** 2 + (y - .5) ** 2 < .1, 220, 40).astype(np.uint8)\n"
        "Image.fromarray(img).save(sys.argv[1], quality=90)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path), str(side)], check=True)


def peak_rss(cmd: list[str]) -> tuple[int, float, float]:
    """(exit code, peak RSS in bytes, wall seconds) of ``cmd`` run as a child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        sys.stderr.write(err)
    return proc.returncode, usage.ru_maxrss * 1024, wall   # ru_maxrss is in KiB on Linux


def replace_section(path: Path, body: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{START}\n{body.rstrip()}\n{END}"
    if START in text and END in text:
        text = text[:text.index(START)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", type=int, default=12000, help="photo side in pixels (default 12000)")
    ap.add_argument("--iterations", type=int, default=2, help="inversion steps (memory does not depend on them)")
    ap.add_argument("--output", type=Path, default=REPO / "docs" / "BENCHMARKS.md")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for suffix in (".png", ".jpg"):
            photo = Path(tmp) / f"photo{suffix}"
            make_photo(photo, args.side)
            cmd = [sys.executable, "-m", "latentpriv", "invert", str(photo), "-o", str(Path(tmp) / f"w{suffix}.npy"),
                   "--weights", "dcgan64", "--device", "cpu", "--iterations", str(args.iterations), "--quiet"]
            code, rss, wall = peak_rss(cmd)
            rows.append((suffix[1:].upper(), photo.stat().st_size, code, rss, wall))
            print(f"{suffix[1:].upper()}: {photo.stat().st_size / 1e3:.0f} kB, exit {code}, peak RSS {rss / 1e9:.2f} GB, "
                  f"{wall:.1f} s")
        # the empty-work baseline: the same command on a 64 px photo
        small = Path(tmp) / "small.png"
        make_photo(small, 64)
        code, base_rss, base_wall = peak_rss([sys.executable, "-m", "latentpriv", "invert", str(small), "-o",
                                              str(Path(tmp) / "s.npy"), "--weights", "dcgan64", "--device", "cpu",
                                              "--iterations", str(args.iterations), "--quiet"])
        print(f"baseline 64 px: peak RSS {base_rss / 1e9:.2f} GB, {base_wall:.1f} s")

    ok = all(code == 0 and rss <= LIMIT_GB * 1e9 for _, _, code, rss, _ in rows)
    lines = [
        "## Large photos (`scripts/bench_large_photo.py`)",
        "",
        f"`latentpriv invert PHOTO --weights dcgan64 --iterations {args.iterations}` on a {args.side}x{args.side} "
        "photo, one process per row, peak RSS of that process (`os.wait4` ru_maxrss). The photo is reduced while "
        "decoding (JPEG DCT scaling, then `Image.reduce`) to twice what the model and VGG need, so no full-size "
        f"float tensor exists. Target: <= {LIMIT_GB} GB.",
        "",
        "| photo | file size | peak RSS | wall | exit |",
        "|---|---|---|---|---|",
        *[f"| {fmt} {args.side}x{args.side} | {size / 1e3:.0f} kB | {rss / 1e9:.2f} GB | {wall:.1f} s | {code} |"
          for fmt, size, code, rss, wall in rows],
        f"| PNG 64x64 (baseline: torch, model, VGG16) | - | {base_rss / 1e9:.2f} GB | {base_wall:.1f} s | {code} |",
        "",
        "A PNG costs one 8-bit decode of the full photo on top of the baseline (Pillow keeps RGB at 4 bytes a "
        "pixel, freed before the optimisation starts); a JPEG is decoded at 1/8 scale and costs nothing extra. "
        "The default pixel limit (200 MP, `LATENTPRIV_MAX_PIXELS`) bounds the PNG case at about 0.8 GB over the "
        "baseline. Wall times are on a shared machine and mostly start-up.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU(s), Python {platform.python_version()}; "
        f"measured {time.strftime('%Y-%m-%d')}. {'Within' if ok else 'OVER'} the {LIMIT_GB} GB target.",
    ]
    if not args.no_write:
        replace_section(args.output, "\n".join(lines))
        print(f"wrote {args.output}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

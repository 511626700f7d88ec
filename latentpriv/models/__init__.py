"""Generator families behind one contract (see ``docs/DEVELOPING.md``).

* :mod:`latentpriv.models.stylegan` – InterFaceGAN's StyleGAN v1 (``stylegan_ffhq`` and any size).
* :mod:`latentpriv.models.dcgan` – the offline demo generator ``dcgan64``.
* :mod:`latentpriv.models.synthetic` – the spec's synthetic StyleGAN weights (tests, benchmarks).
* :mod:`latentpriv.models.registry` – ``load_generator(path_or_name, device=...)``.

Submodules are imported on use, so ``import latentpriv.models`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_generator"]


def __getattr__(name: str) -> Any:
    if name == "load_generator":
        from latentpriv.models.registry import load_generator

        return load_generator
    raise AttributeError(f"module 'latentpriv.models' has no attribute {name!r}")

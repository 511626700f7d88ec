"""Generator families behind one contract (see ``docs/DEVELOPING.md``).

* :mod:`latentpriv.models.stylegan` – InterFaceGAN's StyleGAN v1 (``stylegan_ffhq`` and any size).
* :mod:`latentpriv.models.dcgan` – the offline demo generator ``dcgan64``.
* :mod:`latentpriv.models.synthetic` – the spec's synthetic StyleGAN weights (tests, benchmarks).
* :mod:`latentpriv.models.registry` – ``load_generator(path_or_name, device=...)``, ``model_names()``.
* :mod:`latentpriv.models.protocol` – the contract itself: :class:`Generator` and ``check_generator``.

Submodules are imported on use, so ``import latentpriv.models`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Generator", "load_generator", "model_names"]


def __getattr__(name: str) -> Any:
    if name in ("load_generator", "model_names"):
        from latentpriv.models import registry

        return getattr(registry, name)
    if name == "Generator":
        from latentpriv.models.protocol import Generator

        return Generator
    raise AttributeError(f"module 'latentpriv.models' has no attribute {name!r}")

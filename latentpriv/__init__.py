"""latentpriv: differentially private attribute editing in a GAN's latent space.

The public Python API is re-exported here lazily, so ``import latentpriv`` stays cheap::

    G = latentpriv.load_generator("stylegan_ffhq", device="auto")
    images = G.synthesize(w, space="w")          # float [N,3,H,W], nominal range [-1,1]
    result = latentpriv.privatize(w, directions, epsilon=1.0)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_generator": "latentpriv.models.registry",
    "invert": "latentpriv.inversion.optimize",
    "privatize": "latentpriv.privacy.mechanisms",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'latentpriv' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

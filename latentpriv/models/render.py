"""Latents -> images with a generator: the render step at the end of the flow (photo -> latent -> private
latent -> image).

Renders go through the generator's own ``G.to_uint8`` (the official postprocess of its [-1, 1] output).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def load_generator_for(weights: str | None, model: str, device: str) -> Any:
    """The generator of ``--weights`` (a file or name) when given, else of ``--model``, on ``device``."""
    import latentpriv  # the package's public loader (what users and tests patch)

    return latentpriv.load_generator(weights or model, device=device)


def render_latents(G: Any, latent: np.ndarray, space: str) -> np.ndarray:
    """uint8 ``[N, H, W, 3]`` images of a latent batch ``[N, D]`` (Z/W, the generator's default truncation)
    or ``[N, L, D]`` (W+, never truncated)."""
    import torch

    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(latent, dtype=np.float32))
        device = getattr(G, "device", None)
        if isinstance(device, torch.device):
            x = x.to(device)
        images = G.synthesize(x, space=space)
    return G.to_uint8(images)

"""Latents -> images with a generator: the render step at the end of the flow (photo -> latent -> private
latent -> image).

Renders go through the generator's own ``G.to_uint8`` (the official postprocess of its [-1, 1] output).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from latentpriv.models.protocol import Generator


def load_generator_for(weights: str | None, model: str, device: str) -> Any:
    """The generator of ``--weights`` (a file or name) when given, else of ``--model``, on ``device``."""
    import latentpriv  # the package's public loader (what users and tests patch)

    return latentpriv.load_generator(weights or model, device=device)


def render_latents(G: Generator, latent: np.ndarray, space: str) -> np.ndarray:
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


def row_image_paths(folder: Path, name: str, rows: int) -> list[Path]:
    """Where the images of a latent file with ``rows`` rows go in a folder: ``NAME.png`` for one row,
    ``NAME_0000.png`` ... for N rows (``generate DIR``, ``privatize DIR --render``)."""
    return [Path(folder) / (f"{name}.png" if rows == 1 else f"{name}_{i:04d}.png") for i in range(rows)]

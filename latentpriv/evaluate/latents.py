"""The latents that the evaluation commands (``evaluate --sweep``, ``attack``) release: sampled from the
generator or read from files."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from latentpriv.errors import ConfigError, InputError

if TYPE_CHECKING:
    from latentpriv.models.protocol import Generator


def sample_latents(G: Generator, n: int, space: str, seed: int) -> np.ndarray:
    """``n`` faces of ``G`` as float32 latents ``[n, z_dim]`` (Z) or ``[n, w_dim]`` (W: their mapping).

    Drawn with ``G.sample_z(n, torch.Generator().manual_seed(seed))``; W+ is refused (a sampled face has
    one W for every layer: pass inverted W+ latents instead).
    """
    import torch

    if space == "wp":
        raise ConfigError("sampling draws Z/W latents; for W+ pass latents from `latentpriv invert`")
    with torch.no_grad():
        z = G.sample_z(n, torch.Generator().manual_seed(int(seed)))
        lat = z if space == "z" else G.mapping(z)   # sample_z draws on G.device (the generator contract)
    return lat.detach().cpu().numpy().astype(np.float32)


def stack_latents(parts: Sequence[Any], mixed: str) -> tuple[np.ndarray, str]:
    """Concatenate loaded latent files (objects with ``latent`` and ``space``) into one float32 batch.

    Returns ``(latents, space)``. Files in different spaces are refused with the message ``mixed``, in
    which ``{spaces}`` is replaced by the sorted spaces found.
    """
    sp = parts[0].space
    spaces = sorted({p.space for p in parts})
    if len(spaces) > 1:
        raise InputError(mixed.replace("{spaces}", str(spaces)))
    return np.concatenate([p.latent for p in parts]).astype(np.float32), sp

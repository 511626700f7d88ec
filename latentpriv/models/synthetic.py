"""Synthetic StyleGAN weights: the normative recipe of ``STYLEGAN_SPEC.md`` section 12 (v1), numpy only.

A checkpoint-shaped dict that exercises every key of ``stylegan_ffhq.pth`` without the real 100 MB file,
reproducible from a SEED alone. For manifest entry ``i`` (0-based position in the official 153-entry
state-dict order, counting skipped entries) a random entry is
``(default_rng(SEED*100000 + i).standard_normal(shape) * scale).astype(float32)``; ``truncation.truncation``
is omitted, ``synthesis.lod`` is 0.0 and blur kernels are the constant [1,2,1]x[1,2,1]/16 kernel.

``resolution=R`` cuts the dict to a smaller, still complete StyleGAN: the mapping network, ``w_avg``,
``lod``, synthesis layers ``0 .. 2*log2(R)-3`` and ToRGBs ``output0 .. log2(R)-2`` (e.g. 128 px -> layers
0..11 and output0..5). The kept entries keep their positions in the full manifest, so their values are
identical to the full checkpoint's.

Pass ``manifest=state_dict_manifest(StyleGANConfig(...))`` to build weights for any other architecture
(e.g. narrow channels for fast tests); the same per-position rule applies.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from latentpriv.models.stylegan import ManifestEntry, StyleGANConfig, state_dict_manifest

RECIPE_VERSION = 1

_RULES: tuple[tuple[str, str, float | None], ...] = (
    # (regex anchored at both ends, kind, scale); first match wins
    (r"truncation\.truncation", "omit", None),
    (r"synthesis\.lod", "lod", None),
    (r"synthesis\.layer\d+\.blur\.kernel", "blur", None),
    (r"mapping\.dense\d+\.linear\.weight", "random", 100.0),
    (r"mapping\.dense\d+\.wscale\.bias", "random", 10.0),
    (r"truncation\.w_avg", "random", 1.0),
    (r"synthesis\.layer0\.first_layer", "random", 1.0),
    (r"synthesis\.layer\d+\.epilogue\.apply_noise\.noise", "random", 1.0),
    (r"synthesis\.layer\d+\.epilogue\.apply_noise\.weight", "random", 0.2),
    (r"synthesis\.layer\d+\.epilogue\.bias", "random", 0.1),
    (r"synthesis\.layer\d+\.epilogue\.style_mod\.dense\.linear\.weight", "random", 1.0),
    (r"synthesis\.layer\d+\.epilogue\.style_mod\.dense\.wscale\.bias", "random", 0.1),
    (r"synthesis\.layer\d+\.conv\.weight", "random", 1.0),
    (r"synthesis\.layer\d+\.weight", "random", 1.0),
    (r"synthesis\.output\d+\.conv\.weight", "random", 0.25),
    (r"synthesis\.output\d+\.bias", "random", 0.1),
)
_COMPILED = tuple((re.compile(p), kind, scale) for p, kind, scale in _RULES)


def classify(key: str) -> tuple[str, float | None]:
    """``(kind, scale)`` of a state-dict key under the recipe; kind is omit, lod, blur or random."""
    for rx, kind, scale in _COMPILED:
        if rx.fullmatch(key):
            return kind, scale
    raise ValueError(f"key {key!r} is not covered by the synthetic-weights recipe")


def ffhq_manifest() -> list[ManifestEntry]:
    """The 153-entry official ``stylegan_ffhq`` state-dict manifest (same as the spec's JSON file)."""
    return state_dict_manifest(StyleGANConfig.standard(1024))


def read_manifest(path: str | os.PathLike) -> list[ManifestEntry]:
    """Read a manifest JSON file (a list of ``{key, shape, dtype, tensor_type}``) in its order."""
    data = json.loads(Path(path).read_text())
    return [ManifestEntry(d["key"], tuple(int(s) for s in d["shape"]), d.get("tensor_type", "parameter"))
            for d in data]


def _keep_for_resolution(key: str, resolution: int) -> bool:
    num_layers = 2 * int(round(math.log2(resolution))) - 2
    if m := re.fullmatch(r"synthesis\.layer(\d+)\..+", key):
        return int(m.group(1)) < num_layers
    if m := re.fullmatch(r"synthesis\.output(\d+)\..+", key):
        return int(m.group(1)) < num_layers // 2
    return True


def synthetic_state_dict(seed: int, *, resolution: int | None = None,
                         manifest: Sequence[ManifestEntry | Mapping] | None = None) -> dict[str, np.ndarray]:
    """The recipe's checkpoint for ``seed``: ``{key: float32 ndarray}`` in manifest order.

    ``manifest`` defaults to :func:`ffhq_manifest` (entries may also be the JSON dicts); ``resolution``
    (a power of two >= 4, at most the manifest's) keeps only the keys of a generator of that size.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    entries = [e if isinstance(e, ManifestEntry) else
               ManifestEntry(e["key"], tuple(int(s) for s in e["shape"]), e.get("tensor_type", "parameter"))
               for e in (manifest if manifest is not None else ffhq_manifest())]
    if resolution is not None and (resolution < 4 or resolution & (resolution - 1)):
        raise ValueError(f"resolution must be a power of two >= 4, got {resolution}")
    out: dict[str, np.ndarray] = {}
    for i, e in enumerate(entries):
        if resolution is not None and not _keep_for_resolution(e.key, resolution):
            continue
        kind, scale = classify(e.key)
        if kind == "omit":
            continue
        if kind == "lod":
            out[e.key] = np.zeros(e.shape, dtype=np.float32)
        elif kind == "blur":
            k = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0]) / 16.0
            out[e.key] = np.ascontiguousarray(np.broadcast_to(k.astype(np.float32), e.shape))
        else:
            rng = np.random.default_rng(int(seed) * 100000 + i)
            out[e.key] = (rng.standard_normal(e.shape) * scale).astype(np.float32)
    if resolution is not None and not any(k.startswith("synthesis.output") for k in out):
        raise ValueError(f"resolution {resolution} keeps no synthesis block of this manifest")
    return out


def to_torch_state_dict(arrays: Mapping[str, np.ndarray]) -> dict:
    """``{key: torch.Tensor}`` (sharing memory with the arrays)."""
    import torch

    # np.ascontiguousarray would turn the 0-d lod into shape (1,); np.require keeps the shape.
    return {k: torch.from_numpy(np.require(v, dtype=np.float32, requirements="C")) for k, v in arrays.items()}


def save_checkpoint(arrays: Mapping[str, np.ndarray], path: str | os.PathLike) -> Path:
    """Save ``arrays`` as a plain ``torch.save`` state dict (the layout of ``stylegan_ffhq.pth``), atomically."""
    import torch

    from latentpriv.io import atomic_write

    path = Path(path)
    with atomic_write(path) as fh:
        torch.save(to_torch_state_dict(arrays), fh)
    return path


def write_synthetic_checkpoint(path: str | os.PathLike, seed: int, *, resolution: int | None = None,
                               manifest: Iterable[ManifestEntry | Mapping] | None = None) -> Path:
    """Build :func:`synthetic_state_dict` and save it to ``path``; returns the path."""
    return save_checkpoint(synthetic_state_dict(seed, resolution=resolution,
                                                manifest=list(manifest) if manifest is not None else None), path)

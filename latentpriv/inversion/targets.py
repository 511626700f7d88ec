"""What an inversion starts from and what it records: photos read as targets, and the per-image record.

Shared by ``latentpriv invert FILE...`` and folder runs (:mod:`latentpriv.runs.invert`), so a latent
inverted either way carries the same record.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latentpriv.errors import InputError

if TYPE_CHECKING:
    from latentpriv.models.protocol import Generator

log = logging.getLogger(__name__)


def decode_side(G: Generator, config: Any) -> int:
    """The short side a target needs at most: twice the larger of the generator and VGG input sizes.

    Photos larger than that are reduced while decoding (``load_image(min_side=...)``): the optimiser
    resizes every target to these sizes anyway, and a 12000 px photo never exists as a float tensor.
    """
    loss = getattr(config, "loss", None)
    vgg = getattr(getattr(loss, "resize", None), "size", None) or 0
    return 2 * max(int(G.resolution), int(vgg), 64)


def load_target(path: str | os.PathLike, *, align_size: int | None = None, min_side: int | None = None):
    """Read an image file as a float ``[3, S, S]`` tensor in [0, 1]; non-square images are centre-cropped.

    ``align_size``: first align the largest face the FFHQ way (``latentpriv.faces.align.align_image``, the
    face extra) to ``align_size`` px; a photo without a face is then an InputError.
    ``min_side``: larger photos are reduced while decoding to a short side >= this (see :func:`decode_side`;
    with ``align_size`` the photo keeps at least ``max(4 * align_size, 2048)`` px for the landmark detector).
    Returns ``(tensor, crop)`` where ``crop`` is None or ``(left, top, size)``. Raises InputError.
    """
    from latentpriv.io import load_image, uint8_to_float01

    if min_side is not None and align_size is not None:
        min_side = max(int(min_side), 4 * int(align_size), 2048)
    arr = load_image(path, min_side=min_side)
    if align_size is not None:
        from latentpriv.faces.align import align_image

        arr = align_image(arr, size=int(align_size), name=str(path))
    h, w = arr.shape[:2]
    crop = None
    if h != w:
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        arr = arr[top:top + s, left:left + s]
        crop = (left, top, s)
        log.warning("%s: %dx%d is not square; centre-cropped to %dx%d (align faces first for best results)",
                    path, w, h, s, s)
    if min(arr.shape[:2]) < 8:
        raise InputError(f"{path}: image is {w}x{h}; need at least 8x8 pixels")
    return uint8_to_float01(arr[None])[0], crop


def perceptual_record(networks: Any, *, unhashed_as_text: bool = False) -> dict[str, Any]:
    """Where the VGG16/LPIPS weights came from and their sha256 (their identity wherever they lie).

    A source that is not a file (``"random"`` in tests) has sha256 None, or its own text with
    ``unhashed_as_text`` (what folder runs record and hash into their configuration).
    """
    from latentpriv.io import sha256_file

    out: dict[str, Any] = {"vgg16": networks.vgg_source, "lpips": networks.lpips_source}
    for key in ("vgg16", "lpips"):
        source = out[key]
        if source is not None and Path(str(source)).is_file():
            out[f"{key}_sha256"] = sha256_file(source)
        else:
            out[f"{key}_sha256"] = None if source is None or not unhashed_as_text else str(source)
    return out


def inversion_record(*, input_path: Path, input_sha256: str | None, crop: Any, res: Any, j: int, info: dict,
                     perceptual: dict, config: Any, config_dict: dict, seconds: float, batch_size: int,
                     device: Any, aligned: bool = False, extra: dict | None = None) -> dict[str, Any]:
    """The sidecar record of image ``j`` of an inversion result ``res`` (single-file and folder runs alike)."""
    from latentpriv import __version__

    return {
        "latentpriv_version": __version__,
        "command": "invert",
        "input": str(input_path),
        "input_sha256": input_sha256,
        "aligned": aligned,
        "centre_crop": None if crop is None else {"left": crop[0], "top": crop[1], "size": crop[2]},
        "space": res.space,
        "shape": [1, *res.latents.shape[1:]],
        "note": ("pre-truncation W: render with `latentpriv generate` (default truncation) "
                 if res.space == "w" else ""),
        "model": info,
        "weights_sha256": info.get("sha256") if isinstance(info, dict) else None,
        "perceptual_weights": perceptual,
        "config": config_dict,
        "seed": config.seed,
        "iterations": int(res.iterations[j]),
        "iterations_max": config.iterations,
        "final_losses": {name: float(h[-1, j]) for name, h in res.history.items()},
        "psnr": float(res.metrics["psnr"][j]),
        "lpips": float(res.metrics["lpips"][j]),
        "seconds": seconds,
        "batch_size": batch_size,
        "device": str(device),
        **dict(extra or {}),
    }

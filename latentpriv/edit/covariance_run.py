"""``latentpriv boundary covariance``: estimate (once) and cache a model's latent covariance.

The estimate and its cache are :mod:`latentpriv.edit.covariance`; this module picks the space (the model's
default, which needs the generator loaded) and reports the spectrum.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from latentpriv.errors import InputError


def covariance_command(model: str | None, space: str | None = None, *, num: int | None = None,
                       heldout_num: int | None = None, seed: int | None = None, force: bool = False,
                       device: str = "auto", batch_size: int = 4096,
                       progress: Callable[..., Any] | None = None) -> tuple[Any, dict]:
    """The cached (or, when missing or ``force``, newly estimated) covariance of ``model`` in ``space``
    (None: the model's default space) and its summary (``describe()`` and the spectrum).

    ``progress``: a factory of progress bars (tqdm's keyword arguments ``total``, ``desc``, ``unit``; a
    context manager with ``update(n)``), or None. Returns ``(LatentCovariance, summary dict)``.
    """
    from latentpriv.edit import covariance as cov

    if model is None:
        raise InputError("--model is required (e.g. --model dcgan64), or pass --show")
    target: Any = model
    if space is None:
        from latentpriv.models.registry import load_generator

        target = load_generator(model, device=device)  # its default space; the loaded model is reused
        space = target.default_space
    total = (num or cov.DEFAULT_NUM) + (heldout_num or cov.DEFAULT_HELDOUT_NUM)
    bar = (progress(total=total, desc=f"sampling {model} ({space})", unit="latent") if progress is not None
           else contextlib.nullcontext())
    with bar as b:
        stats = cov.covariance_for(target, space, num=num, heldout_num=heldout_num, seed=seed, estimate=True,
                                   force=force, device=device, batch_size=batch_size,
                                   progress=b.update if b is not None else None)
    return stats, {**stats.describe(), **cov.spectrum_summary(stats)}

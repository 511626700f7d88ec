"""One accounted release: the ledger check, the draw, the ledger line and the record, in that order.

``latentpriv privatize FILE`` and the batch engine (``privatize DIR``, torchrun shards) release through
:func:`accounted_release`, so both refuse, warn, count and describe a release the same way:

1. under the ledger's file lock, the prospective totals of every row are checked against ``max_epsilon``
   (:class:`~latentpriv.errors.PrivacyBudgetError` and nothing drawn if a row would go over, unless
   ``force``);
2. the noise is drawn (:func:`~latentpriv.privacy.mechanisms.privatize`);
3. the ledger line is appended *before* anything is written, so a crash in between over-counts, never
   under-counts;
4. ``commit`` (the caller's atomic file writes) runs while the lock is still held.

The record never holds the true coordinate, the noise or a plain hash of the latent (see
docs/PRIVACY.md); the ledger keys are the row hashes of :func:`~latentpriv.privacy.ledger.row_keys`.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from latentpriv.privacy.ledger import (
    Ledger,
    Spend,
    Total,
    row_keys,
    spend_from_calibration,
    spend_from_record,
)
from latentpriv.privacy.mechanisms import Calibration, calibrate, privatize
from latentpriv.privacy.noise import NoiseSource


@dataclass(frozen=True)
class ReleaseParams:
    """The mechanism's settings, as the user gave them (validated by :func:`calibrate`)."""

    mechanism: str = "laplace"
    epsilon: float = 1.0
    delta: float = 0.0
    clip_radius: float = 3.0
    epsilon_split: Sequence[float] | None = None
    noise_clip: float = 1.0
    layers: Sequence[int] | None = None

    def calibration(self, k: int, noise: NoiseSource) -> Calibration:
        """Calibrate for ``k`` directions and ``noise``'s grid (its slack widens the noise scale)."""
        return calibrate(self.mechanism, epsilon=self.epsilon, delta=self.delta, clip_radius=self.clip_radius, k=k,
                         epsilon_split=self.epsilon_split, noise_clip=self.noise_clip,
                         grid_slack=noise.grid_slack())

    def spend(self, k: int, noise: NoiseSource) -> Spend:
        """What one release costs each row."""
        return spend_from_calibration(self.calibration(k, noise))


@dataclass(frozen=True)
class Release:
    """``latent``: released latent, the input's shape. ``record``: the JSON record (with ``release_id``).
    ``keys``: the ledger key of each row, in order. ``totals``: each distinct row's composed spend after
    this release (ledger key -> :class:`Total`)."""

    latent: np.ndarray
    record: dict[str, Any]
    keys: list[str]
    totals: dict[str, Total]

    @property
    def worst_epsilon(self) -> float | None:
        """The largest total epsilon over the rows (None: some row has a release without a guarantee)."""
        eps = [t.epsilon for t in self.totals.values()]
        return None if any(e is None for e in eps) else max(eps)  # type: ignore[type-var]


def accounted_release(latent: np.ndarray, directions: np.ndarray, *, params: ReleaseParams, noise: NoiseSource,
                      ledger: Ledger, center: Any = 0.0, attributes: Sequence[str] = (),
                      max_epsilon: float | None = None, force: bool = False,
                      record_info: Mapping[str, Any] | None = None, ledger_info: Mapping[str, Any] | None = None,
                      commit: Callable[[np.ndarray, dict[str, Any]], None] | None = None,
                      warn: Callable[[str], None] | None = None) -> Release:
    """Release ``latent`` along ``directions`` and account for it in ``ledger``.

    Args:
        latent: float ``(D,)``, ``(N, D)`` or W+ ``(N, L, D)``; each row (first axis) is one record.
        directions: ``[k, D]`` orthonormal rows (see :func:`~latentpriv.privacy.mechanisms.prepare_directions`).
        params: mechanism settings; ``noise``: the noise source (OpenDP unless the user asked for a seed).
        ledger: the spend ledger; ``max_epsilon``: refuse (before any draw) if a row's total would exceed
            it; ``force``: release anyway, with a warning and ``forced: true`` in the ledger line.
        center: the clamp centre, a number or ``k`` numbers.
        attributes: names of the directions (record and ledger line).
        record_info / ledger_info: extra fields for the record / the ledger line (file names, model).
        commit: called as ``commit(released_latent, record)`` after the ledger line, under the lock
            (the caller's atomic writes); None: the caller writes later (still after the ledger line).
        warn: where warnings go (the ``--force`` overshoot); None: :func:`warnings.warn`.

    Raises:
        PrivacyBudgetError: a row would exceed ``max_epsilon`` (nothing drawn or written).
    """
    spend = params.spend(len(directions), noise)
    keys = row_keys(latent)
    release_id = uuid.uuid4().hex
    attributes = list(attributes)
    with ledger.transaction() as txn:
        after = txn.check(keys, spend, max_epsilon=None if force else max_epsilon)
        if force and max_epsilon is not None:
            over = [t for t in after.values() if t.epsilon is None or t.epsilon > max_epsilon]
            if over:
                msg = f"--force: {len(over)} input(s) go past --max-epsilon {max_epsilon:g}"
                warn(msg) if warn is not None else warnings.warn(msg, stacklevel=2)
        with warnings.catch_warnings():
            # the seed mechanism's warning is the caller's to give, once per run, not once per file
            warnings.simplefilter("ignore")
            result = privatize(latent, directions, epsilon=params.epsilon, delta=params.delta,
                               mechanism=params.mechanism, clip_radius=params.clip_radius, center=center,
                               noise=noise, epsilon_split=params.epsilon_split, layers=params.layers,
                               noise_clip=params.noise_clip, attributes=attributes or None)
        record = dict(result.record)
        if spend_from_record(record) != spend:  # pragma: no cover - internal consistency
            raise RuntimeError("internal error: the record's spend differs from the calibrated one")
        record["release_id"] = release_id
        record.update(record_info or {})
        record["ledger"] = str(ledger.path)
        # the ledger line first: a crash before the outputs are written over-counts, never under-counts
        txn.append(keys, spend, {"release_id": release_id, **(ledger_info or {}), "attributes": attributes,
                                 "command": "privatize"}, forced=force)
        released = np.asarray(result.latent)
        if commit is not None:
            commit(released, record)
    return Release(latent=released, record=record, keys=keys, totals=after)

"""Differential privacy for latent attributes: mechanisms, noise sources, accounting, ledger, audit.

* :mod:`~latentpriv.privacy.mechanisms` - :func:`privatize`: a coordinate mechanism and the float-level release
* :mod:`~latentpriv.privacy.coordinate_mechanisms` - the mechanisms as classes (laplace, gaussian, rr, seed), each
  with its calibration, release, guarantee, spend and neighbouring relation; the registry
* :mod:`~latentpriv.privacy.float_release` - directions, the split, the residual dither
* :mod:`~latentpriv.privacy.release` - one accounted release (budget check, draw, write, charge)
* :mod:`~latentpriv.privacy.noise` - OpenDP (secure) and seeded numpy noise behind one interface
* :mod:`~latentpriv.privacy.accounting` - Gaussian calibration (discrete and analytic), zCDP conversion
* :mod:`~latentpriv.privacy.ledger` - the SQLite spend ledger: composition, protection profiles, face keys
* :mod:`~latentpriv.privacy.audit` - empirical epsilon lower bounds (Clopper-Pearson)

Submodules are imported on first use so that ``import latentpriv.privacy`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "privatize": "mechanisms",
    "PrivatizeResult": "mechanisms",
    "MECHANISMS": "mechanisms",
    "calibrate": "mechanisms",
    "REGISTRY": "coordinate_mechanisms",
    "get_mechanism": "coordinate_mechanisms",
    "validate_params": "coordinate_mechanisms",
    "audit": "audit",
    "AuditResult": "audit",
    "Ledger": "ledger",
    "analytic_gaussian_sigma": "accounting",
    "OpenDPNoise": "noise",
    "SeededNoise": "noise",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'latentpriv.privacy' has no attribute {name!r}")
    return getattr(importlib.import_module(f"latentpriv.privacy.{module}"), name)

"""Where the read-only ``shared/`` folder (spec, fixtures, InterFaceGAN boundaries) is: one lookup for all tests.

Beside the repository root, or ``$LATENTPRIV_SHARED``. Module-level so parametrize lists can use it;
the ``shared_dir`` fixture in conftest.py fails loudly when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ["LATENTPRIV_SHARED"]).expanduser() if os.environ.get("LATENTPRIV_SHARED") \
    else REPO.parent / "shared"
IFG_BOUNDARIES = SHARED / "boundaries" / "interfacegan"

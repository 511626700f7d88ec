"""Host allocator tuning (allocator.py): applied once on glibc, opt-out by environment."""

from __future__ import annotations

import platform
import subprocess
import sys

from latentpriv.runs.allocator import tune_host_allocator


def test_opt_out_changes_nothing():
    assert tune_host_allocator(environ={"LATENTPRIV_TUNE_MALLOC": "0"}) is False


def test_applied_on_glibc_and_allocations_still_work():
    # in a fresh interpreter, so this test process's allocator is left as it is
    code = ("from latentpriv.runs.allocator import tune_host_allocator as t; a = t(); b = t(); "
            "import numpy as np; x = np.ones(80 << 20, dtype=np.uint8); del x; y = np.ones(80 << 20, dtype=np.uint8); "
            "print(a, b, int(y.sum()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    glibc = platform.libc_ver()[0] == "glibc"
    assert out == [str(glibc), str(glibc), str(80 << 20)]

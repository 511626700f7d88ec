"""Host memory allocator tuning for CPU runs (glibc malloc).

Why: glibc serves every allocation of 32 MiB or more with a fresh ``mmap`` and gives it back with
``munmap`` on free, so each such tensor is page-faulted in again, page by page, on every optimisation
step. A StyleGAN step at 256 px with batch 4, or at 1024 px with any batch, allocates many tensors that
big; on the 2-core development VM that made a batch-4 step at 1024 px cost 7.5x a batch-1 step, and
allocating and filling a 40 MiB tensor took 18 ms instead of 1.5 ms (docs/BENCHMARKS.md).

:func:`tune_host_allocator` asks glibc to serve large blocks from the heap (``M_MMAP_MAX = 0``) and to
keep freed memory for reuse (``M_TRIM_THRESHOLD`` = 1 GiB), the usual advice for PyTorch CPU work. The
price is that the process keeps its peak memory until it exits (measured: +40 % peak RSS at 1024 px,
batch 4). Threads' own arenas still fall back to ``mmap`` when their heap cannot grow, so no
allocation can fail because of this. The ``latentpriv`` command calls it at start-up;
``LATENTPRIV_TUNE_MALLOC=0`` turns it off. Library users may call it themselves. Not glibc (macOS,
musl): nothing happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["tune_host_allocator"]

_M_TRIM_THRESHOLD = -1   # glibc <malloc.h>
_M_MMAP_MAX = -4
_KEEP_BYTES = 1 << 30

_state: dict[str, bool] = {}


def tune_host_allocator(*, environ: dict[str, str] | None = None) -> bool:
    """Apply the glibc settings above once per process; return True if they are in effect.

    Returns False (and changes nothing) when ``LATENTPRIV_TUNE_MALLOC=0`` or the C library is not glibc.
    """
    env = os.environ if environ is None else environ
    if env.get("LATENTPRIV_TUNE_MALLOC", "1").strip() in ("0", "false", "no", "off"):
        return False
    if "applied" in _state:
        return _state["applied"]
    ok = False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = getattr(libc, "mallopt", None)
        gnu = getattr(libc, "gnu_get_libc_version", None)
        if mallopt is not None and gnu is not None:  # glibc only: other libcs differ in parameter numbers
            mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            ok = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES))
    except OSError:  # pragma: no cover - no loadable C library
        ok = False
    _state["applied"] = ok
    return ok

"""Process-level tuning of a pipeline worker: how glibc's malloc hands memory back to the kernel.

A pipeline worker allocates and frees buffers of one to tens of MiB for every batch: numpy
arrays of key codes and sums, zstd compression contexts of the Parquet writer, Arrow IPC and
pickled elements. glibc serves allocations above ``M_MMAP_THRESHOLD`` (128 KiB, raised only as
big blocks are freed, and at most to 32 MiB) with a fresh ``mmap`` and unmaps them on ``free``,
and trims its heaps above ``M_TRIM_THRESHOLD``; the next batch then faults every page of the
same sizes in again. Measured on a 6M-span batch run: ~640k page faults and ~2.2 s of kernel
time (~15% of the run's CPU), against ~115k and ~0.85 s once freed memory up to
:data:`RETAIN_BYTES` is kept for reuse. The price is memory held at its peak (50–100 MiB more
peak RSS on that run; the peak itself does not move with the input size).

:func:`tune_allocator` is called by the pipeline's DoFns in ``setup`` (so every worker process
of any runner is tuned, not only the in-process one). ``TENANTRY_MALLOC_TUNING=0`` turns it off;
on other C libraries (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading

log = logging.getLogger(__name__)

#: freed blocks and heap tops up to this size are kept for reuse instead of returned to the kernel
RETAIN_BYTES = 256 << 20

# mallopt(3) parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_lock = threading.Lock()
_state: bool | None = None  # None: not tried yet; else whether the tuning is in effect


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        version = libc.gnu_get_libc_version  # only glibc has it (musl's mallopt is a no-op stub)
        version.restype = ctypes.c_char_p
        version()
        return libc
    except (OSError, AttributeError):
        return None


def tune_allocator() -> bool:
    """Keep up to :data:`RETAIN_BYTES` of freed memory for reuse (module docstring); once per
    process. Returns whether the tuning is in effect."""
    global _state
    with _lock:
        if _state is not None:
            return _state
        _state = False
        if os.environ.get("TENANTRY_MALLOC_TUNING", "1").strip().lower() in ("0", "false", "no", "off"):
            return False
        libc = _glibc()
        if libc is None:
            return False
        mallopt = libc.mallopt
        mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        mallopt.restype = ctypes.c_int
        # mmap threshold first: setting either disables glibc's own adjustment of both
        ok = mallopt(_M_MMAP_THRESHOLD, RETAIN_BYTES) == 1 and mallopt(_M_TRIM_THRESHOLD, RETAIN_BYTES) == 1
        if not ok:
            log.debug("mallopt refused the allocator tuning; running with glibc's defaults")
        _state = ok
        return ok

"""Keep freed heap memory for reuse instead of handing it back to the kernel at once.

Why: a cold retrieve allocates and frees several buffers of 256 KB to 1 MB per
instance (socket reads, the joined data set, the HTTP chunk h11 joins). With
glibc's defaults the larger ones come from ``mmap``, or from the top of the heap,
which ``free`` trims back to the kernel; either way the next buffer is faulted in
page by page again. Measured here: two 512 KB joins cost 600 us with the
defaults, 56 us with the settings below; a cold C-GET of 100 x 526 KB through a
fresh gateway 278 -> 237 ms, 40 ms less CPU (docs/benchmarks.md, issue 3).

The settings: buffers up to ``MMAP_THRESHOLD`` come from the heap, and up to
``TRIM_THRESHOLD`` of free memory stays at the top of each heap (glibc trims per
arena: the main thread's and each worker thread's). The cost is resident memory
the process keeps after a burst. Linux with glibc only (``mallopt``); elsewhere,
or when the operator chose (glibc's ``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_``, or ``glibc.malloc`` tunables in ``GLIBC_TUNABLES``),
nothing is changed.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 4 * 1024 * 1024
TRIM_THRESHOLD = 64 * 1024 * 1024

_M_TRIM_THRESHOLD = -1  # glibc malloc.h
_M_MMAP_THRESHOLD = -3
_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_freed_memory() -> bool:
    """Apply the settings; whether they are in force (False: not glibc, or the
    environment already chose)."""
    if not sys.platform.startswith("linux") or any(name in os.environ for name in _ENV):
        return False
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done: bool = int(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) == 1
    done = int(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) == 1 and done
    if not done:  # musl and others accept the call and ignore it
        log.debug("mallopt refused the heap settings; allocator defaults kept")
    return done

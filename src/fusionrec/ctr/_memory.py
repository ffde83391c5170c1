"""glibc malloc settings for training: keep freed tensor memory in the process.

A training step allocates and frees the same large tensors (activations of 4,096-row batches,
50,000 x 128 in DIN's attention) every step. glibc's malloc serves a block above its mmap
threshold with a fresh mmap and unmaps it when freed (the threshold starts at 128 KB and rises
to at most 32 MB only as such blocks are freed), and returns a heap top over 128 KB to the system;
either way the next step faults every page of its tensors in again, zeroed by the kernel. On
the taobao configs that was 10-20% of a DIN step (docs/benchmarks.md). Raising the mmap
threshold to glibc's maximum and the trim threshold to 256 MB keeps those pages mapped; the cost
is up to 256 MB of freed memory the process does not give back while it trains. Elsewhere than
glibc (macOS, musl) nothing changes. ``FUSIONREC_MALLOC_TUNING=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's largest (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit)
TRIM_THRESHOLD_BYTES = 256 * 1024 * 1024

_tuned: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc's thresholds once per process; whether they are set."""
    global _tuned
    if _tuned is None:
        _tuned = False
        if os.environ.get("FUSIONREC_MALLOC_TUNING", "1") != "0":
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                mallopt = libc.mallopt
            except (OSError, AttributeError):  # not glibc
                return False
            mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            _tuned = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    return _tuned

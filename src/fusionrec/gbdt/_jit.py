"""Kernels compiled twice: threaded for big inputs, serial for small ones.

Entering a numba ``prange`` region costs several microseconds (waking the thread pool),
more than a small node's whole histogram scan or partition; a boosting run makes tens of
thousands of such calls on small data. The serial twin runs the same code with ``prange``
as ``range``, so both give identical results.
"""

from __future__ import annotations

import types

import numba
from numba import njit

from fusionrec.gbdt.params import effective_n_threads


def parallel_and_serial(function):
    """(threaded, serial) compiled versions of ``function``, each with its own disk cache."""
    twin = types.FunctionType(function.__code__, function.__globals__, function.__name__ + "_serial", function.__defaults__, function.__closure__)
    twin.__qualname__ = function.__qualname__ + "_serial"  # its own cache file
    twin.__doc__ = function.__doc__
    return njit(parallel=True, cache=True, nogil=True)(function), njit(cache=True, nogil=True)(twin)


class numba_threads:
    """Run numba kernels with ``n`` threads, restoring the previous count afterwards."""

    def __init__(self, n_jobs):
        self.n = effective_n_threads(n_jobs)

    def __enter__(self):
        self.previous = numba.get_num_threads()
        numba.set_num_threads(max(1, min(self.n, numba.config.NUMBA_NUM_THREADS)))

    def __exit__(self, *exc):
        numba.set_num_threads(self.previous)

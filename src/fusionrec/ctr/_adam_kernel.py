"""tf.train.AdamOptimizer's update of an embedding table from the rows a batch looked up.

TensorFlow's Adam applies a table's sparse gradient (``_apply_sparse_shared``) densely: every
row's moments decay (m *= beta1, v *= beta2), the batch's rows add their (duplicate-summed)
gradient, and every row moves by lr_t * m / (sqrt(v) + epsilon), lr_t = lr * sqrt(1 - beta2^t)
/ (1 - beta1^t) (Kingma & Ba, ICLR 2015, section 2 before 2.1). Handing torch a dense gradient for
that costs a zero-filled table-sized tensor per table per step and a sort of the batch's ids;
these kernels take the looked-up rows and walk the table once (a torchrun rank: three vectorized passes).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit, prange

_ROWS_PER_CHUNK = 4096  # rows per parallel task of the numba-parallel kernel
_MIN_ELEMENTS_PER_THREAD = 1 << 18  # a smaller table is one task: a thread hand-off costs more
_pool: ThreadPoolExecutor | None = None


@njit(cache=True, nogil=True)
def _decay(exp_avg, exp_avg_sq, beta1, beta2):  # pragma: no cover - numba
    """m *= beta1, v *= beta2 over flat float32 arrays (a loop LLVM vectorizes)."""
    b1 = np.float32(beta1)
    b2 = np.float32(beta2)
    for i in range(exp_avg.shape[0]):
        exp_avg[i] = b1 * exp_avg[i]
        exp_avg_sq[i] = b2 * exp_avg_sq[i]


@njit(cache=True, nogil=True)
def _add_gradients(exp_avg, exp_avg_sq, rows, row_grads, beta1, beta2):  # pragma: no cover - numba
    """m[r] += (1 - beta1) g, v[r] += (1 - beta2) g^2 for the rows that have a gradient."""
    one = np.float32(1.0)
    b1 = np.float32(beta1)
    b2 = np.float32(beta2)
    for k in range(rows.shape[0]):
        r = rows[k]
        for j in range(row_grads.shape[1]):
            g = row_grads[k, j]
            exp_avg[r, j] = exp_avg[r, j] + (one - b1) * g
            exp_avg_sq[r, j] = exp_avg_sq[r, j] + (one - b2) * g * g


@njit(cache=True, nogil=True)
def _move(weights, exp_avg, exp_avg_sq, lr_t, epsilon):  # pragma: no cover - numba
    """w -= lr_t m / (sqrt(v) + epsilon) over flat float32 arrays."""
    lr = np.float32(lr_t)
    eps = np.float32(epsilon)
    for i in range(weights.shape[0]):
        weights[i] -= lr * exp_avg[i] / (np.sqrt(exp_avg_sq[i]) + eps)


@njit(parallel=True, cache=True, nogil=True)
def _update_rows_numba_parallel(weights, exp_avg, exp_avg_sq, rows, row_grads, lr_t, beta1, beta2, epsilon):  # pragma: no cover - numba
    """``adam_rows_update`` in one pass, numba's parallel loop over chunks of rows (``rows``
    sorted). 3-4x faster than the three passes below on the taobao tables."""
    n_rows, dim = weights.shape
    n_grads = rows.shape[0]
    one = np.float32(1.0)
    b1 = np.float32(beta1)
    b2 = np.float32(beta2)
    lr = np.float32(lr_t)
    eps = np.float32(epsilon)
    n_chunks = (n_rows + _ROWS_PER_CHUNK - 1) // _ROWS_PER_CHUNK
    for chunk in prange(n_chunks):
        start = chunk * _ROWS_PER_CHUNK
        stop = min(n_rows, start + _ROWS_PER_CHUNK)
        k = np.searchsorted(rows, start)
        for r in range(start, stop):
            if k < n_grads and rows[k] == r:
                for j in range(dim):
                    g = row_grads[k, j]
                    m = b1 * exp_avg[r, j] + (one - b1) * g
                    v = b2 * exp_avg_sq[r, j] + (one - b2) * g * g
                    exp_avg[r, j] = m
                    exp_avg_sq[r, j] = v
                    weights[r, j] -= lr * m / (math.sqrt(v) + eps)
                k += 1
            else:
                for j in range(dim):
                    m = b1 * exp_avg[r, j]
                    v = b2 * exp_avg_sq[r, j]
                    exp_avg[r, j] = m
                    exp_avg_sq[r, j] = v
                    weights[r, j] -= lr * m / (math.sqrt(v) + eps)


def _side_by_side(function, arrays: tuple, scalars: tuple, n_parts: int) -> None:
    """``function(*slices, *scalars)`` over ``n_parts`` equal ranges of the flat ``arrays`` at once
    (the kernels release the GIL). Python threads, not numba's parallel loops: numba's OpenMP pool
    beside torch's in a training process ended torchrun ranks with "terminate called without an
    active exception" at exit (twice in full test runs)."""
    global _pool
    if n_parts == 1:
        function(*arrays, *scalars)
        return
    if _pool is None or _pool._max_workers < n_parts:
        _pool = ThreadPoolExecutor(n_parts, thread_name_prefix="adam")
    bounds = np.linspace(0, arrays[0].shape[0], n_parts + 1).astype(np.int64)
    futures = [_pool.submit(function, *(a[bounds[i]:bounds[i + 1]] for a in arrays), *scalars) for i in range(n_parts)]
    for future in futures:
        future.result()


def adam_rows_update(weights, exp_avg, exp_avg_sq, rows, row_grads, lr_t, beta1, beta2, epsilon, n_threads: int = 1,
                     numba_threads: bool = True) -> None:  # fmt: skip
    """One Adam step of a (n_rows, dim) float32 table in place. ``rows``: the distinct rows that
    have a gradient, ``row_grads[k]`` row ``rows[k]``'s; every other row's gradient is zero.
    Arithmetic in float32 in TensorFlow's order (m = beta1 m + (1 - beta1) g, ...), in three
    passes: decay every row's moments, add the batch's rows' gradients, move every row.
    ``numba_threads``: one pass with numba's parallel loop instead (single-process training; a
    torchrun rank takes the passes on Python threads, see ``_side_by_side``)."""
    if numba_threads:
        _update_rows_numba_parallel(weights, exp_avg, exp_avg_sq, rows, row_grads, lr_t, beta1, beta2, epsilon)
        return
    flat = (exp_avg.reshape(-1), exp_avg_sq.reshape(-1))
    n_parts = max(1, min(n_threads, weights.size // _MIN_ELEMENTS_PER_THREAD))
    _side_by_side(_decay, flat, (beta1, beta2), n_parts)
    _add_gradients(exp_avg, exp_avg_sq, rows, row_grads, beta1, beta2)
    _side_by_side(_move, (weights.reshape(-1),) + flat, (lr_t, epsilon), n_parts)

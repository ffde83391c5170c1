"""tf.train.AdamOptimizer's update of an embedding table from the rows a batch looked up.

TensorFlow's Adam applies a table's sparse gradient (``_apply_sparse_shared``) densely: every
row's moments decay (m *= beta1, v *= beta2), the batch's rows add their (duplicate-summed)
gradient, and every row moves by lr_t * m / (sqrt(v) + epsilon), lr_t = lr * sqrt(1 - beta2^t)
/ (1 - beta1^t) (Kingma & Ba, ICLR 2015, section 2 before 2.1). Handing torch a dense gradient for
that costs a zero-filled table-sized tensor per table per step and a sort of the batch's ids;
this kernel takes the looked-up rows and walks the table once.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

_ROWS_PER_CHUNK = 4096  # rows per parallel task: enough work to pay for waking a thread


@njit(parallel=True, cache=True, nogil=True)
def adam_rows_update(weights, exp_avg, exp_avg_sq, rows, row_grads, lr_t, beta1, beta2, epsilon):  # pragma: no cover - numba
    """One Adam step of a (n_rows, dim) float32 table in place. ``rows``: the sorted distinct
    rows that have a gradient, ``row_grads[k]`` row ``rows[k]``'s; every other row's gradient
    is zero. Arithmetic in float32, as TensorFlow's kernel."""
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

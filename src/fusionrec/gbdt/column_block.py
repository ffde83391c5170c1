"""The column block of section 4.1: present entries only, each column sorted once by value.

Compressed sparse columns: column ``f`` holds ``values[indptr[f]:indptr[f+1]]`` in
ascending order with the row id of each value beside it in ``rows``. NaN and absent
sparse entries are not stored, so a scan costs the number of present entries (Algorithm 3
visits only those; the missing statistics are the node's totals minus what was seen).
The block is built once per training Dataset and reused by every split of every tree:
the exact finder scans it, the approximate finder reads weighted quantiles off it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numba import njit, prange


@njit(parallel=True, cache=True)
def _count_present(values, counts):
    n_rows, n_features = values.shape
    for f in prange(n_features):
        c = 0
        for i in range(n_rows):
            if not np.isnan(values[i, f]):
                c += 1
        counts[f] = c


@njit(parallel=True, cache=True)
def _sort_dense_columns(values, indptr, out_values, out_rows):
    n_rows, n_features = values.shape
    for f in prange(n_features):
        start = indptr[f]
        count = indptr[f + 1] - start
        column = np.empty(count, np.float32)
        ids = np.empty(count, np.int32)
        k = 0
        for i in range(n_rows):
            x = values[i, f]
            if not np.isnan(x):
                column[k] = x
                ids[k] = i
                k += 1
        order = np.argsort(column, kind="mergesort")  # stable: equal values keep row order
        for j in range(count):
            out_values[start + j] = column[order[j]]
            out_rows[start + j] = ids[order[j]]


@njit(parallel=True, cache=True)
def _sort_csc_columns(indptr, data, indices, out_values, out_rows):
    for f in prange(indptr.shape[0] - 1):
        start, stop = indptr[f], indptr[f + 1]
        order = np.argsort(data[start:stop], kind="mergesort")
        for j in range(stop - start):
            out_values[start + j] = data[start + order[j]]
            out_rows[start + j] = indices[start + order[j]]


@dataclass
class ColumnBlock:
    indptr: np.ndarray  # int64 (n_features + 1)
    values: np.ndarray  # float32 (n_present), ascending within each column
    rows: np.ndarray  # int32 (n_present), the row of each value
    n_rows: int

    @property
    def n_features(self) -> int:
        return self.indptr.shape[0] - 1

    @property
    def n_present(self) -> int:
        return int(self.indptr[-1])

    @property
    def has_missing(self) -> np.ndarray:
        """uint8 per feature: some row has no value (NaN or absent) in it."""
        return (np.diff(self.indptr) < self.n_rows).astype(np.uint8)

    @property
    def nbytes(self) -> int:
        return self.indptr.nbytes + self.values.nbytes + self.rows.nbytes

    @classmethod
    def from_values(cls, values: np.ndarray | sp.csr_matrix) -> "ColumnBlock":
        """Sort each column of a float32 matrix (dense, NaN = missing; or CSR, absent = missing)."""
        n_rows, n_features = values.shape
        if sp.issparse(values):
            csc = values.tocsc()
            keep = ~np.isnan(csc.data)
            if not keep.all():  # explicit NaN entries are missing values too
                csc = sp.csc_matrix((csc.data[keep], csc.indices[keep], np.concatenate([[0], np.cumsum(keep)])[csc.indptr]), shape=csc.shape)
            indptr = csc.indptr.astype(np.int64)
            out_values = np.empty(indptr[-1], np.float32)
            out_rows = np.empty(indptr[-1], np.int32)
            _sort_csc_columns(indptr, csc.data.astype(np.float32, copy=False), csc.indices.astype(np.int32, copy=False), out_values, out_rows)
        else:
            counts = np.empty(n_features, np.int64)
            _count_present(values, counts)
            indptr = np.zeros(n_features + 1, np.int64)
            np.cumsum(counts, out=indptr[1:])
            out_values = np.empty(indptr[-1], np.float32)
            out_rows = np.empty(indptr[-1], np.int32)
            _sort_dense_columns(values, indptr, out_values, out_rows)
        return cls(indptr, out_values, out_rows, int(n_rows))

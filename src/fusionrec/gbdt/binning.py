"""Stage 1 of the engine: bin each feature once into uint8 codes.

Cuts are weighted quantiles of the feature's values (the sample weights are the
quantile weights, as in the paper's weighted quantile sketch, section 3.3, with the
hessian replaced by the sample weight for the global, once-per-data-set proposal that
the histogram method uses). A feature with few distinct values gets a cut between every
pair of neighbours, so no split point is lost.

Code ``b`` holds the values ``x`` with ``cuts[b-1] < x <= cuts[b]``; the last code holds
everything above the last cut. ``MISSING_CODE`` (255) holds NaN and absent sparse
entries. A split "at bin b" therefore sends ``x <= cuts[b]`` left, which prediction on
raw values reproduces exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numba import njit, prange

MISSING_CODE = 255
N_CODES = 256  # histogram width: value codes 0..254 plus the missing code
MAX_VALUE_BINS = 255


def compute_cuts(
    values: np.ndarray | sp.csr_matrix,
    weight: np.ndarray | None,
    max_bin: int,
    sample_cnt: int,
    seed: int,
) -> list[np.ndarray]:
    """Bin edges (float64, ascending) per feature from at most ``sample_cnt`` rows.

    Rows with zero weight take no part, so a zero weight is the same as a removed row.
    The row sample (for data larger than ``sample_cnt``) is drawn once with ``seed`` and
    shared by all features, as LightGBM's ``bin_construct_sample_cnt`` does.
    """
    n_rows, n_features = values.shape
    max_value_bins = min(max_bin, MAX_VALUE_BINS)
    rows = np.arange(n_rows) if weight is None else np.flatnonzero(weight > 0)
    if rows.shape[0] > sample_cnt:
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(rows, size=sample_cnt, replace=False))
    row_w = np.ones(rows.shape[0]) if weight is None else weight[rows]
    table = np.empty((n_features, max(max_value_bins - 1, 1)))
    counts = np.zeros(n_features, np.int64)
    if sp.issparse(values):
        csc = (values[rows] if rows.shape[0] != n_rows else values).tocsc()
        _csc_cuts(csc.indptr.astype(np.int64), csc.indices, csc.data, row_w, max_value_bins, table, counts)
    else:
        _dense_cuts(values[rows] if rows.shape[0] != n_rows else values, row_w, max_value_bins, table, counts)
    return [table[j, : counts[j]].copy() for j in range(n_features)]


@njit(cache=True)
def _cuts_of_column(values, weights, max_value_bins, out):
    """Write one feature's cuts (present values, any order, with their weights) into out;
    return how many. Few distinct values: a cut between every neighbouring pair. Otherwise
    cuts at the weighted quantiles k / max_value_bins, between distinct values."""
    m = values.shape[0]
    if m == 0:
        return 0
    order = np.argsort(values, kind="mergesort")  # stable: equal values add their weights in row order
    unique = np.empty(m)
    unique_w = np.empty(m)
    n_unique = 0
    for i in range(m):
        v = values[order[i]]
        if n_unique == 0 or v != unique[n_unique - 1]:
            unique[n_unique] = v
            unique_w[n_unique] = weights[order[i]]
            n_unique += 1
        else:
            unique_w[n_unique - 1] += weights[order[i]]
    if n_unique <= max_value_bins:
        for i in range(n_unique - 1):
            out[i] = (unique[i] + unique[i + 1]) * 0.5
        return n_unique - 1
    cumulative = np.cumsum(unique_w[:n_unique])
    total = cumulative[n_unique - 1]
    n = 0
    last = -1
    for q in range(1, max_value_bins):
        # the first distinct value whose cumulative weight reaches the quantile
        p = np.searchsorted(cumulative, total * q / max_value_bins, side="left")
        if p > last and p < n_unique - 1:
            out[n] = (unique[p] + unique[p + 1]) * 0.5
            n += 1
            last = p
    return n


@njit(parallel=True, cache=True)
def _csc_cuts(indptr, indices, data, row_weight, max_value_bins, table, counts):
    """Every column's cuts of a CSC sample (absent and NaN entries take no part)."""
    for j in prange(indptr.shape[0] - 1):
        start, stop = indptr[j], indptr[j + 1]
        values = np.empty(stop - start)
        weights = np.empty(stop - start)
        m = 0
        for e in range(start, stop):
            if not np.isnan(data[e]):
                values[m] = data[e]
                weights[m] = row_weight[indices[e]]
                m += 1
        counts[j] = _cuts_of_column(values[:m], weights[:m], max_value_bins, table[j])


@njit(parallel=True, cache=True)
def _dense_cuts(sample, row_weight, max_value_bins, table, counts):
    """Every column's cuts of a dense sample (NaN takes no part)."""
    n_rows, n_features = sample.shape
    for j in prange(n_features):
        values = np.empty(n_rows)
        weights = np.empty(n_rows)
        m = 0
        for i in range(n_rows):
            if not np.isnan(sample[i, j]):
                values[m] = sample[i, j]
                weights[m] = row_weight[i]
                m += 1
        counts[j] = _cuts_of_column(values[:m], weights[:m], max_value_bins, table[j])


def pack_cuts(cuts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Padded (n_features, 254) cut table and the number of cuts per feature, for kernels."""
    n_features = len(cuts)
    table = np.full((n_features, MAX_VALUE_BINS - 1), np.inf, dtype=np.float64)
    n_cuts = np.zeros(n_features, dtype=np.int32)
    for j, c in enumerate(cuts):
        table[j, : c.shape[0]] = c
        n_cuts[j] = c.shape[0]
    return table, n_cuts


@njit(cache=True, inline="always")
def _code_of(x, cut_row, n_cut):
    # Number of cuts strictly below x (binary search): the bin with cuts[b-1] < x <= cuts[b].
    lo = 0
    hi = n_cut
    while lo < hi:
        mid = (lo + hi) >> 1
        if cut_row[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(parallel=True, cache=True)
def bin_dense(values, cut_table, n_cuts, out):
    """values (n, F) float32 -> out (n, F) uint8 codes; NaN -> MISSING_CODE."""
    n_rows, n_features = values.shape
    for i in prange(n_rows):
        for j in range(n_features):
            x = values[i, j]
            if np.isnan(x):
                out[i, j] = MISSING_CODE
            else:
                out[i, j] = _code_of(np.float64(x), cut_table[j], n_cuts[j])


@njit(parallel=True, cache=True)
def bin_csr_entries(indptr, indices, data, cut_table, n_cuts, out):
    """The code of every stored CSR entry (out aligned with ``data``); NaN -> MISSING_CODE."""
    n_rows = indptr.shape[0] - 1
    for i in prange(n_rows):
        for k in range(indptr[i], indptr[i + 1]):
            j = indices[k]
            x = data[k]
            out[k] = MISSING_CODE if np.isnan(x) else _code_of(np.float64(x), cut_table[j], n_cuts[j])


@dataclass
class SparseCodes:
    """Bin codes of a CSR matrix's stored entries only (absent entries are missing values).

    ``indptr`` and ``indices`` are the CSR matrix's own (shared, not copied); ``codes[e]``
    is the code of entry e. Memory is one byte per present entry: a one-hot matrix of 10,000
    columns costs what its present entries do, never n_rows x n_features.
    """

    indptr: np.ndarray
    indices: np.ndarray
    codes: np.ndarray
    shape: tuple[int, int]

    def by_feature(self) -> "SparseCodes":
        """The same codes column-major, shape (n_features, n_rows): ``indptr`` by feature, row
        ids ascending in ``indices``."""
        csc = sp.csr_matrix((self.codes, self.indices, self.indptr), shape=self.shape).tocsc()
        csc.sort_indices()
        return SparseCodes(csc.indptr.astype(np.int64), csc.indices.astype(np.int32), csc.data.astype(np.uint8), self.shape[::-1])

    def toarray(self) -> np.ndarray:
        """Dense (n_rows, n_features) codes, MISSING_CODE where absent (tests and small data)."""
        dense = np.full(self.shape, MISSING_CODE, dtype=np.uint8)
        rows = np.repeat(np.arange(self.shape[0]), np.diff(self.indptr))
        dense[rows, self.indices] = self.codes
        return dense


def apply_cuts(values: np.ndarray | sp.csr_matrix, cut_table: np.ndarray, n_cuts: np.ndarray) -> np.ndarray | SparseCodes:
    """Bin codes: (n_rows, n_features) uint8 in C order for dense values, SparseCodes for CSR."""
    n_rows, n_features = values.shape
    if sp.issparse(values):
        codes = np.empty(values.data.shape[0], dtype=np.uint8)
        bin_csr_entries(values.indptr, values.indices, values.data, cut_table, n_cuts, codes)
        return SparseCodes(values.indptr, values.indices, codes, (n_rows, n_features))
    codes = np.empty((n_rows, n_features), dtype=np.uint8)
    bin_dense(values, cut_table, n_cuts, codes)
    return codes

"""Stage 2: gradient histograms of a node.

A node's histogram is a plain float64 array ``(n_slots, 2)`` of per-bin gradient (column
``GRAD``) and hessian (``HESS``) sums. Each feature of the tree owns a run of slots starting
at ``offsets[k]``: its ``bins[k]`` value bins, and the slot ``missing[k]`` for its missing
values. Plain arrays add up across row pages and workers, which the out-of-core and
distributed trainers rely on. Two layouts (``histogram_layout``):

* fixed stride: every feature ``N_CODES`` slots (slot = k * 256 + code, so ``MISSING_CODE``
  is the missing slot): the inner loop needs no lookup (a per-feature offset and a min()
  cost 1.7x on 1M x 50). For dense codes whose features use most of their 256 codes;
* compact: each feature only its own bins plus one missing slot, so a one-hot column costs 2
  slots, not 256: sparse codes always (20,000 columns make a 0.6 MB histogram), dense codes
  when that at least halves the histogram (300 features of ~20 bins: 6,600 slots, not
  76,800; scoring and subtracting a node cost its slots). Sparse codes visit present entries
  only (Algorithm 3's point): each feature's missing slot is then the node's totals minus
  its value bins, in one pass over the slots.

Rows are split into blocks whose size depends only on the number of rows, each block
sums into its own buffer, and the buffers are added in block order: the result is
bit-identical for any number of threads. A sibling's histogram is the parent's minus the
other child's (the subtraction trick), so only the smaller child is built.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from fusionrec.gbdt._jit import parallel_and_serial
from fusionrec.gbdt._prefetch import prefetch
from fusionrec.gbdt.binning import MISSING_CODE, N_CODES

GRAD, HESS = 0, 1
ENTRIES_PER_BLOCK = 1 << 17  # codes summed per block of rows before another block pays off
MAX_BLOCKS = 4
PREFETCH_DISTANCE = 10  # rows ahead; hides memory latency on deep nodes' scattered rows
NOT_IN_TREE = -1


def n_blocks_for(n_rows: int, n_entries_per_row: int = 32) -> int:
    """Blocks of rows a histogram is summed in: from the data's size only, never the thread count."""
    return int(max(1, min(MAX_BLOCKS, -(-n_rows * max(n_entries_per_row, 1) // ENTRIES_PER_BLOCK))))


def use_compact_layout(n_bins: np.ndarray, sparse: bool) -> bool:
    """Compact for sparse codes, and for dense ones when it at least halves the histogram."""
    return sparse or 2 * int((n_bins.astype(np.int64) + 1).sum()) <= n_bins.shape[0] * N_CODES


class HistogramLayout(NamedTuple):
    """Where each of a tree's features sits in a histogram: feature k's value bins are slots
    ``offsets[k] .. offsets[k] + bins[k] - 1`` and its missing values' slot is ``missing[k]``."""

    offsets: np.ndarray  # (n_tree_features + 1,) int64; offsets[-1] is the number of slots
    bins: np.ndarray  # (n_tree_features,) int32: value bins
    missing: np.ndarray  # (n_tree_features,) int64: the missing slot


def histogram_layout(features: np.ndarray, n_bins: np.ndarray, compact: bool) -> HistogramLayout:
    """The layout of the tree features ``features``: ``compact`` packs them (sparse codes),
    else each takes N_CODES slots."""
    bins = n_bins[features].astype(np.int32)
    offsets = np.zeros(features.shape[0] + 1, np.int64)
    if compact:
        np.cumsum(bins.astype(np.int64) + 1, out=offsets[1:])
        return HistogramLayout(offsets, bins, offsets[:-1] + bins)
    offsets[:] = np.arange(features.shape[0] + 1, dtype=np.int64) * N_CODES
    return HistogramLayout(offsets, bins, offsets[:-1] + MISSING_CODE)


def new_histogram(n_slots: int) -> np.ndarray:
    return np.empty((n_slots, 2), dtype=np.float64)


@njit(cache=True, nogil=True, inline="always")
def _add_row(codes, r, g, h, features, all_features, offsets, bins, local):
    n_feat = features.shape[0]
    if offsets.shape[0] == 0:  # fixed stride: the code is the slot (MISSING_CODE the missing one)
        for k in range(n_feat):
            c = codes[r, k] if all_features else codes[r, features[k]]
            slot = k * N_CODES + np.int64(c)
            local[slot, GRAD] += g
            local[slot, HESS] += h
    else:  # compact: MISSING_CODE >= bins[k], so min() sends it to the feature's missing slot
        for k in range(n_feat):
            c = codes[r, k] if all_features else codes[r, features[k]]
            slot = offsets[k] + min(np.int64(c), np.int64(bins[k]))
            local[slot, GRAD] += g
            local[slot, HESS] += h


@njit(cache=True, nogil=True, inline="always")
def _accumulate(codes, rows, gh, features, all_features, offsets, bins, start, stop, local):
    # Sums rows[start:stop] into local. gh is in node order (gh[i] belongs to rows[i]), so
    # only the codes are gathered; their rows are prefetched PREFETCH_DISTANCE ahead (deep
    # nodes' rows are scattered, so each would otherwise wait on memory).
    ahead = stop - PREFETCH_DISTANCE
    for i in range(start, stop):
        if i < ahead:
            prefetch(codes, rows[i + PREFETCH_DISTANCE])
        _add_row(codes, rows[i], np.float64(gh[i, GRAD]), np.float64(gh[i, HESS]), features, all_features, offsets, bins, local)


def build_histogram(codes, rows, gh, features, offsets, bins, block_hists, hist):
    """hist[slot] = sums of (gradient, hessian) of ``rows`` per bin of each tree feature.

    codes: (n, F) uint8; rows: int32 row ids of the node; gh: (len(rows), 2) float32 gradient
    pairs in node order, gh[i] being row rows[i]'s (the grower permutes them with the rows, so
    this pass reads them sequentially instead of one cache line per row);
    features: int32 feature ids; offsets, bins: the compact layout, or empty arrays for the
    fixed stride; block_hists: scratch (n_blocks, n_slots, 2) with n_blocks =
    n_blocks_for(len(rows)); hist: output (n_slots, 2).
    """
    n = rows.shape[0]
    n_blocks = block_hists.shape[0]
    all_features = features.shape[0] == codes.shape[1]
    if n_blocks == 1:  # small node: one pass straight into the output
        hist[:] = 0.0
        _accumulate(codes, rows, gh, features, all_features, offsets, bins, 0, n, hist)
        return
    block_size = (n + n_blocks - 1) // n_blocks
    for b in prange(n_blocks):
        local = block_hists[b]
        local[:] = 0.0
        start = b * block_size
        _accumulate(codes, rows, gh, features, all_features, offsets, bins, start, min(n, start + block_size), local)
    _reduce_blocks(block_hists, hist)


def build_histogram_all_rows(codes, gh, features, offsets, bins, block_hists, hist):
    """build_histogram over every row 0..n-1 (the root without row sampling): no row gather."""
    n = codes.shape[0]
    n_blocks = block_hists.shape[0]
    all_features = features.shape[0] == codes.shape[1]
    block_size = (n + n_blocks - 1) // n_blocks
    for b in prange(n_blocks):
        local = block_hists[b]
        local[:] = 0.0
        start = b * block_size
        stop = min(n, start + block_size)
        for r in range(start, stop):
            _add_row(codes, r, np.float64(gh[r, GRAD]), np.float64(gh[r, HESS]), features, all_features, offsets, bins, local)
    _reduce_blocks(block_hists, hist)


@njit(cache=True, nogil=True, inline="always")
def _accumulate_sparse(indptr, indices, codes, rows, gh, position, offsets, start, stop, local):
    for i in range(start, stop):
        r = rows[i]
        g = np.float64(gh[i, GRAD])
        h = np.float64(gh[i, HESS])
        for e in range(indptr[r], indptr[r + 1]):
            k = position[indices[e]]
            if k != NOT_IN_TREE:
                slot = offsets[k] + np.int64(codes[e])  # stored entries are present: a value bin
                local[slot, GRAD] += g
                local[slot, HESS] += h


@njit(cache=True, nogil=True, inline="always")
def _accumulate_slots(indptr, slots, rows, gh, start, stop, local):
    for i in range(start, stop):
        r = rows[i]
        g = np.float64(gh[i, GRAD])
        h = np.float64(gh[i, HESS])
        for e in range(indptr[r], indptr[r + 1]):
            slot = slots[e]
            local[slot, GRAD] += g
            local[slot, HESS] += h


def build_histogram_sparse(indptr, indices, codes, slots, rows, gh, position, offsets, bins, sum_g, sum_h, block_hists, hist):
    """build_histogram for CSR codes: only present entries are visited; missing slots = node
    totals - present. When the tree uses every feature, ``slots[e]`` is entry e's slot,
    computed once per layout (``entry_slots``), so the inner loop is one sequential read and
    two adds per entry; otherwise (``slots`` empty) position[f] gives feature f's tree index
    (or NOT_IN_TREE)."""
    n = rows.shape[0]
    n_blocks = block_hists.shape[0]
    block_size = (n + n_blocks - 1) // n_blocks
    for b in prange(n_blocks):
        local = block_hists[b]
        local[:] = 0.0
        start = b * block_size
        stop = min(n, start + block_size)
        if slots.shape[0] > 0:
            _accumulate_slots(indptr, slots, rows, gh, start, stop, local)
        else:
            _accumulate_sparse(indptr, indices, codes, rows, gh, position, offsets, start, stop, local)
    _reduce_blocks(block_hists, hist)
    fill_missing_slots(hist, offsets, bins, sum_g, sum_h)


@njit(parallel=True, cache=True, nogil=True)
def entry_slots(indices, codes, offsets, out):
    """out[e] = offsets[feature of e] + code of e (every feature in the tree)."""
    for e in prange(indices.shape[0]):
        out[e] = offsets[indices[e]] + codes[e]


@njit(cache=True, nogil=True)
def fill_missing_slots(hist, offsets, bins, sum_g, sum_h):
    for k in range(bins.shape[0]):
        g = 0.0
        h = 0.0
        for slot in range(offsets[k], offsets[k] + bins[k]):
            g += hist[slot, GRAD]
            h += hist[slot, HESS]
        missing = offsets[k] + bins[k]
        hist[missing, GRAD] = sum_g - g
        hist[missing, HESS] = max(sum_h - h, 0.0)  # rounding must not invent negative hessian


REDUCE_THREADED_SLOTS = 1 << 16  # slots x blocks above which the block sums are added by all threads


def _add_blocks(block_hists, hist):
    # Blocks are added in block order, whatever thread built them: thread-count independent.
    n_blocks = block_hists.shape[0]
    n_slots = hist.shape[0]
    chunk = 1024
    for c in prange((n_slots + chunk - 1) // chunk):
        for slot in range(c * chunk, min(n_slots, (c + 1) * chunk)):
            sg = 0.0
            sh = 0.0
            for b in range(n_blocks):
                sg += block_hists[b, slot, GRAD]
                sh += block_hists[b, slot, HESS]
            hist[slot, GRAD] = sg
            hist[slot, HESS] = sh


_add_blocks_threaded, _add_blocks_serial = parallel_and_serial(_add_blocks)


@njit(cache=True, nogil=True)
def _reduce_blocks(block_hists, hist):
    # small histograms (small nodes' serial kernels) must not wake the thread pool
    if block_hists.shape[0] * hist.shape[0] >= REDUCE_THREADED_SLOTS:
        _add_blocks_threaded(block_hists, hist)
    else:
        _add_blocks_serial(block_hists, hist)


build_histogram, build_histogram_serial = parallel_and_serial(build_histogram)
build_histogram_all_rows, build_histogram_all_rows_serial = parallel_and_serial(build_histogram_all_rows)
build_histogram_sparse, build_histogram_sparse_serial = parallel_and_serial(build_histogram_sparse)


@njit(cache=True, nogil=True)
def subtract_histogram(parent, child, out):
    """out = parent - child: the sibling's histogram without a pass over its rows."""
    for slot in range(parent.shape[0]):
        out[slot, GRAD] = parent[slot, GRAD] - child[slot, GRAD]
        out[slot, HESS] = parent[slot, HESS] - child[slot, HESS]

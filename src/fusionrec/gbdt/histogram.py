"""Stage 2: gradient histograms of a node.

A node's histogram is a plain float64 array ``(n_features, 256, 2)`` of per-bin
gradient and hessian sums (bin 255: missing values). Plain arrays add up across row
pages and workers, which the out-of-core and distributed trainers rely on.

Rows are split into blocks whose size depends only on the number of rows, each block
sums into its own buffer, and the buffers are added in block order: the result is
bit-identical for any number of threads. A sibling's histogram is the parent's minus the
other child's (the subtraction trick), so only the smaller child is built.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from fusionrec.gbdt._prefetch import prefetch
from fusionrec.gbdt.binning import N_CODES

ROWS_PER_BLOCK = 4096
MAX_BLOCKS = 4


def n_blocks_for(n_rows: int) -> int:
    return int(max(1, min(MAX_BLOCKS, -(-n_rows // ROWS_PER_BLOCK))))


def new_histogram(n_features: int) -> np.ndarray:
    return np.empty((n_features, N_CODES, 2), dtype=np.float64)


PREFETCH_DISTANCE = 10  # rows ahead; hides memory latency on deep nodes' scattered rows


@njit(cache=True, nogil=True, inline="always")
def _add_row(codes, r, g, h, features, all_features, local):
    n_feat = features.shape[0]
    if all_features:  # no indirection through ``features`` when the tree uses them all
        for k in range(n_feat):
            c = codes[r, k]
            local[k, c, 0] += g
            local[k, c, 1] += h
    else:
        for k in range(n_feat):
            c = codes[r, features[k]]
            local[k, c, 0] += g
            local[k, c, 1] += h


@njit(cache=True, nogil=True, inline="always")
def _accumulate(codes, rows, gh, features, all_features, start, stop, local):
    # Sums rows[start:stop] into local. gh is in node order (gh[i] belongs to rows[i]), so
    # only the codes are gathered; their rows are prefetched PREFETCH_DISTANCE ahead (deep
    # nodes' rows are scattered, so each would otherwise wait on memory).
    ahead = stop - PREFETCH_DISTANCE
    for i in range(start, stop):
        if i < ahead:
            prefetch(codes, rows[i + PREFETCH_DISTANCE])
        _add_row(codes, rows[i], np.float64(gh[i, 0]), np.float64(gh[i, 1]), features, all_features, local)


@njit(parallel=True, cache=True, nogil=True)
def build_histogram(codes, rows, gh, features, block_hists, hist):
    """hist[k] = sums of (gradient, hessian) per bin of feature ``features[k]`` over ``rows``.

    codes: (n, F) uint8; rows: int32 row ids of the node; gh: (len(rows), 2) float32 gradient
    pairs in node order, gh[i] being row rows[i]'s (the grower permutes them with the rows, so
    this pass reads them sequentially instead of one cache line per row);
    features: int32 feature ids; block_hists: scratch (n_blocks, len(features), 256, 2) with
    n_blocks = n_blocks_for(len(rows)); hist: output (len(features), 256, 2).
    """
    n = rows.shape[0]
    n_blocks = block_hists.shape[0]
    all_features = features.shape[0] == codes.shape[1]
    if n_blocks == 1:  # small node: one pass straight into the output
        hist[:] = 0.0
        _accumulate(codes, rows, gh, features, all_features, 0, n, hist)
        return
    block_size = (n + n_blocks - 1) // n_blocks
    for b in prange(n_blocks):
        local = block_hists[b]
        local[:] = 0.0
        start = b * block_size
        _accumulate(codes, rows, gh, features, all_features, start, min(n, start + block_size), local)
    _reduce_parallel(block_hists, hist)


@njit(parallel=True, cache=True, nogil=True)
def build_histogram_all_rows(codes, gh, features, block_hists, hist):
    """build_histogram over every row 0..n-1 (the root without row sampling): no row gather."""
    n = codes.shape[0]
    n_blocks = block_hists.shape[0]
    n_feat = features.shape[0]
    all_features = n_feat == codes.shape[1]
    block_size = (n + n_blocks - 1) // n_blocks
    for b in prange(n_blocks):
        local = block_hists[b]
        local[:] = 0.0
        start = b * block_size
        stop = min(n, start + block_size)
        for r in range(start, stop):
            _add_row(codes, r, np.float64(gh[r, 0]), np.float64(gh[r, 1]), features, all_features, local)
    _reduce_parallel(block_hists, hist)


@njit(parallel=True, cache=True, nogil=True)
def _reduce_parallel(block_hists, hist):
    # Blocks are added in block order, whatever thread built them: thread-count independent.
    n_blocks = block_hists.shape[0]
    for k in prange(hist.shape[0]):
        for c in range(256):
            sg = 0.0
            sh = 0.0
            for b in range(n_blocks):
                sg += block_hists[b, k, c, 0]
                sh += block_hists[b, k, c, 1]
            hist[k, c, 0] = sg
            hist[k, c, 1] = sh


@njit(cache=True, nogil=True)
def subtract_histogram(parent, child, out):
    """out = parent - child: the sibling's histogram without a pass over its rows."""
    n_feat = parent.shape[0]
    for k in range(n_feat):
        for c in range(256):
            out[k, c, 0] = parent[k, c, 0] - child[k, c, 0]
            out[k, c, 1] = parent[k, c, 1] - child[k, c, 1]

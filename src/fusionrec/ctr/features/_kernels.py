"""numba twins of the string operations in ``fusionrec.ctr.features.ops``, for eager runs.

The transforms are written in TorchScript so that an export carries them; run eagerly (training,
evaluation, ``predict``) that code makes one tensor operation per byte position of the longest
string (FNV-1a) or a dozen batch-wide ones (splitting and padding lists), about half of the input
pipeline's time on the taobao logs. These kernels walk the bytes once. They give the same results
bit for bit (tests/ctr/test_feature_kernels.py compares them with the TorchScript versions).
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit
from torch import Tensor

_FNV_PRIME = 16777619
_MASK_32 = 0xFFFFFFFF


@njit(cache=True, nogil=True)
def _fnv1a(data, starts, lengths, state, out):  # pragma: no cover - numba
    for i in range(starts.shape[0]):
        h = state[i]
        start = starts[i]
        for p in range(lengths[i]):
            h = ((h ^ np.int64(data[start + p])) * _FNV_PRIME) & _MASK_32
        out[i] = h


@njit(cache=True, nogil=True)
def _count_tokens(data, offsets, separator):  # pragma: no cover - numba
    n_tokens = 0
    for row in range(offsets.shape[0] - 1):
        previous_is_separator = True
        for b in range(offsets[row], offsets[row + 1]):
            is_separator = data[b] == separator
            if not is_separator and previous_is_separator:
                n_tokens += 1
            previous_is_separator = is_separator
    return n_tokens


@njit(cache=True, nogil=True)
def _split_tokens(data, offsets, separator, starts, lengths, rows):  # pragma: no cover - numba
    token = -1
    for row in range(offsets.shape[0] - 1):
        previous_is_separator = True
        for b in range(offsets[row], offsets[row + 1]):
            is_separator = data[b] == separator
            if not is_separator:
                if previous_is_separator:
                    token += 1
                    starts[token] = b
                    lengths[token] = 0
                    rows[token] = row
                lengths[token] += 1
            previous_is_separator = is_separator


@njit(cache=True, nogil=True)
def _pad_tokens(ids, token_rows, counts, length, out, mask):  # pragma: no cover - numba
    first = np.cumsum(counts) - counts  # a row's tokens are consecutive (split_tokens' order)
    for i in range(token_rows.shape[0]):
        row = token_rows[i]
        column = (i - first[row]) - max(counts[row] - length, 0)  # the row's last `length` tokens
        if column >= 0:
            if column >= length:
                raise IndexError("pad_tokens: the tokens' rows are not in order")
            out[row, column] = ids[i]
            mask[row, column] = True


def _numpy(tensor: Tensor) -> np.ndarray:
    return tensor.contiguous().numpy()


def fnv1a(data: Tensor, starts: Tensor, lengths: Tensor, state: Tensor) -> Tensor:
    out = np.empty(starts.shape[0], dtype=np.int64)
    if starts.shape[0]:
        _fnv1a(_numpy(data), _numpy(starts.to(torch.int64)), _numpy(lengths.to(torch.int64)),
               _numpy(state.to(torch.int64)), out)  # fmt: skip
    return torch.from_numpy(out)


def split_tokens(data: Tensor, offsets: Tensor, separator: int) -> tuple[Tensor, Tensor, Tensor]:
    data_np, offsets_np = _numpy(data), _numpy(offsets.to(torch.int64))
    n_tokens = _count_tokens(data_np, offsets_np, separator) if data_np.shape[0] else 0
    starts, lengths, rows = (np.empty(n_tokens, dtype=np.int64) for _ in range(3))
    if n_tokens:
        _split_tokens(data_np, offsets_np, separator, starts, lengths, rows)
    return torch.from_numpy(starts), torch.from_numpy(lengths), torch.from_numpy(rows)


def pad_tokens(ids: Tensor, token_rows: Tensor, n_rows: int, max_len: int) -> tuple[Tensor, Tensor, Tensor]:
    rows_np = _numpy(token_rows.to(torch.int64))
    counts = np.bincount(rows_np, minlength=n_rows) if rows_np.shape[0] else np.zeros(n_rows, dtype=np.int64)
    length = int(counts.max()) if n_rows > 0 else 0
    if max_len > 0:
        length = min(length, max_len)
    length = max(length, 1)
    out = np.zeros((n_rows, length), dtype=np.int64)
    mask = np.zeros((n_rows, length), dtype=np.bool_)
    if rows_np.shape[0]:
        _pad_tokens(_numpy(ids.to(torch.int64)), rows_np, counts.astype(np.int64), length, out, mask)
    return torch.from_numpy(out), torch.from_numpy(mask), torch.from_numpy(counts.astype(np.int64))

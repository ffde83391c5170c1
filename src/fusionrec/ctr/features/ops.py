"""TorchScript-able string and number operations the feature transforms share.

Raw columns arrive as tensors: a STRING column as its UTF-8 bytes (``<name>.bytes``, uint8)
and ``n + 1`` offsets (``<name>.offsets``, int64), which is Arrow's string layout; integer
columns as int64 (ids above 2^24 stay exact: they never pass through a float); FLOAT and
DOUBLE as float64.

Strings hash with 32-bit FNV-1a over their UTF-8 bytes (stable across runs, machines and
processes; vectorized over rows, one step per byte position): offset basis 2166136261, prime
16777619, written as literals because TorchScript cannot read module globals (3735928559 is
the second variant's basis). ``hash_bucket_size`` takes it modulo. Vocabulary lookups compare
a 63-bit key made of two FNV-1a variants, so two distinct strings collide with probability
about 2^-63.

Per-batch counts the transforms add to their output as 0-d tensors, keyed
"<feature>.<kind>": ".out_of_vocabulary" (values not in vocab_list / vocab_file, mapped to
0), ".out_of_range" (num_buckets ids outside [0, num_buckets), mapped to 0), ".truncated"
(sequences longer than max_seq_len) and ".not_finite" (ExprFeature values that are inf or
nan, set to 0).
"""

from __future__ import annotations

import hashlib
from typing import Dict, List, Tuple

import torch
from torch import Tensor

from fusionrec.errors import FusionrecError


def feature_counts(features: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """The count entries of a transform's output (see COUNT_OOV, COUNT_TRUNCATED)."""
    counts: Dict[str, Tensor] = {}
    for key, value in features.items():
        if (key.endswith(".out_of_vocabulary") or key.endswith(".out_of_range") or key.endswith(".truncated")
                or key.endswith(".not_finite")):  # fmt: skip
            counts[key] = value
    return counts


@torch.jit.unused
def _eager_fnv1a(data: Tensor, starts: Tensor, lengths: Tensor, state: Tensor) -> Tensor:
    from fusionrec.ctr.features import _kernels

    return _kernels.fnv1a(data, starts, lengths, state)


@torch.jit.unused
def _eager_split_tokens(data: Tensor, offsets: Tensor, separator: int) -> Tuple[Tensor, Tensor, Tensor]:
    from fusionrec.ctr.features import _kernels

    return _kernels.split_tokens(data, offsets, separator)


@torch.jit.unused
def _eager_pad_tokens(ids: Tensor, token_row: Tensor, n_rows: int, max_len: int) -> Tuple[Tensor, Tensor, Tensor]:
    from fusionrec.ctr.features import _kernels

    return _kernels.pad_tokens(ids, token_row, n_rows, max_len)


def fnv1a(data: Tensor, starts: Tensor, lengths: Tensor, state: Tensor) -> Tensor:
    """FNV-1a of the byte segments data[starts[i] : starts[i] + lengths[i]], continuing ``state``.

    All arithmetic stays below 2^57, so int64 is exact. Run eagerly, its numba twin
    (``_kernels``) does the work; an export's TorchScript runs the code below.
    """
    if not torch.jit.is_scripting():
        return _eager_fnv1a(data, starts, lengths, state)
    h = state.clone()
    if data.numel() == 0 or lengths.numel() == 0:
        return h
    values = data.to(torch.int64)
    max_len = int(lengths.max().item())
    for p in range(max_len):
        active = lengths > p
        index = torch.where(active, starts + p, torch.zeros_like(starts))
        h = torch.where(active, ((h ^ values[index]) * 16777619) & 0xFFFFFFFF, h)
    return h


def hash_strings(data: Tensor, offsets: Tensor, basis: int = 2166136261) -> Tensor:
    starts = offsets[:-1]
    return fnv1a(data, starts, offsets[1:] - starts, torch.full_like(starts, basis))


def vocab_key(data: Tensor, starts: Tensor, lengths: Tensor) -> Tensor:
    h1 = fnv1a(data, starts, lengths, torch.full_like(starts, 2166136261))
    h2 = fnv1a(data, starts, lengths, torch.full_like(starts, 3735928559))
    return (h1 << 31) | (h2 & 0x7FFFFFFF)


def split_tokens(data: Tensor, offsets: Tensor, separator: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Tokens of each row split at ``separator`` (empty tokens dropped): (starts, lengths, row)."""
    if not torch.jit.is_scripting():
        return _eager_split_tokens(data, offsets, separator)
    n_bytes = data.shape[0]
    if n_bytes == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, empty, empty
    positions = torch.arange(n_bytes, dtype=torch.int64)
    row_of_byte = torch.searchsorted(offsets[1:], positions, right=True)
    is_sep = data == separator
    previous_is_sep = torch.ones(n_bytes, dtype=torch.bool)
    previous_is_sep[1:] = is_sep[:-1]
    row_start = positions == offsets[row_of_byte]
    starts_token = (~is_sep) & (previous_is_sep | row_start)
    token_of_byte = torch.cumsum(starts_token.to(torch.int64), 0) - 1
    token_starts = positions[starts_token]
    lengths = torch.zeros(token_starts.shape[0], dtype=torch.int64)
    keep = ~is_sep
    lengths.index_add_(0, token_of_byte[keep], torch.ones_like(token_of_byte[keep]))
    return token_starts, lengths, row_of_byte[starts_token]


def pad_tokens(ids: Tensor, token_row: Tensor, n_rows: int, max_len: int) -> Tuple[Tensor, Tensor, Tensor]:
    """(n_rows, L) ids and mask, keeping each row's last ``max_len`` tokens (the most recent),
    and each row's token count before truncation."""
    if not torch.jit.is_scripting():
        return _eager_pad_tokens(ids, token_row, n_rows, max_len)
    counts = torch.bincount(token_row, minlength=n_rows) if token_row.numel() > 0 else torch.zeros(n_rows, dtype=torch.int64)
    length = int(counts.max().item()) if n_rows > 0 else 0
    if max_len > 0:
        length = min(length, max_len)
    length = max(length, 1)
    first = torch.cumsum(counts, 0) - counts
    position = torch.arange(token_row.shape[0], dtype=torch.int64) - first[token_row]
    kept_from = torch.clamp(counts - length, min=0)
    column = position - kept_from[token_row]
    keep = column >= 0
    out = torch.zeros(n_rows, length, dtype=torch.int64)
    mask = torch.zeros(n_rows, length, dtype=torch.bool)
    out[token_row[keep], column[keep]] = ids[keep]
    mask[token_row[keep], column[keep]] = True
    return out, mask, counts


def run_expression(opcodes: Tensor, operands: Tensor, constants: Tensor, inputs: List[Tensor]) -> Tensor:
    """Evaluate an ExprFeature's postfix program (``fusionrec.ctr.expressions``) over float64 inputs."""
    stack: List[Tensor] = []
    for i in range(opcodes.shape[0]):
        op = int(opcodes[i])
        if op == 0:
            stack.append(inputs[int(operands[i])])
        elif op == 1:
            stack.append(torch.full_like(inputs[0], float(constants[int(operands[i])])))
        elif op == 2:
            stack.append(-stack.pop())
        elif op == 3:
            stack.append((stack.pop() == 0).to(torch.float64))
        else:
            b = stack.pop()
            a = stack.pop()
            if op == 10:
                r = a + b
            elif op == 11:
                r = a - b
            elif op == 12:
                r = a * b
            elif op == 13:
                r = a / b
            elif op == 14:
                r = ((a != 0) & (b != 0)).to(torch.float64)
            elif op == 15:
                r = ((a != 0) | (b != 0)).to(torch.float64)
            elif op == 20:
                r = (a < b).to(torch.float64)
            elif op == 21:
                r = (a <= b).to(torch.float64)
            elif op == 22:
                r = (a > b).to(torch.float64)
            elif op == 23:
                r = (a >= b).to(torch.float64)
            elif op == 24:
                r = (a == b).to(torch.float64)
            else:
                r = (a != b).to(torch.float64)
            stack.append(r)
    return stack[0]


def _row_lengths(offsets: Tensor) -> Tensor:
    return offsets[1:] - offsets[:-1]


def _first_separator(data: Tensor, starts: Tensor, lengths: Tensor, separator: int) -> Tensor:
    """The position of the first ``separator`` byte at or after each token's start (the reader
    has checked that every token holds exactly one: key<kv_separator>value)."""
    at = torch.nonzero(data == separator).squeeze(1)
    if at.shape[0] == 0:
        return starts + lengths
    return at[torch.searchsorted(at, starts).clamp(max=at.shape[0] - 1)]


def _weighted_keys(data: Tensor, starts: Tensor, lengths: Tensor, kv_separator: int) -> Tuple[Tensor, Tensor, Tensor]:
    """``key<kv>weight`` tokens -> (key starts, key lengths, weights); the reader has checked
    that each token has one separator and a decimal weight."""
    split = _first_separator(data, starts, lengths, kv_separator)
    return starts, split - starts, parse_decimals(data, split + 1, starts + lengths - split - 1)


def parse_decimals(data: Tensor, starts: Tensor, lengths: Tensor) -> Tensor:
    """The float64 value of each ``[+-]digits[.digits]`` substring (the reader checks the form)."""
    value = torch.zeros(starts.shape[0], dtype=torch.float64)
    fraction_scale = torch.ones_like(value)
    in_fraction = torch.zeros(starts.shape[0], dtype=torch.bool)
    negative = torch.zeros_like(in_fraction)
    longest = int(lengths.max().item()) if lengths.numel() > 0 else 0
    last = max(data.shape[0] - 1, 0)
    for j in range(longest):
        active = j < lengths
        byte = data[(starts + j).clamp(min=0, max=last)].to(torch.int64)
        digit = active & (byte >= 48) & (byte <= 57)
        value = torch.where(digit, value * 10.0 + (byte - 48).to(torch.float64), value)
        fraction_scale = torch.where(digit & in_fraction, fraction_scale * 10.0, fraction_scale)
        in_fraction = in_fraction | (active & (byte == 46))
        if j == 0:
            negative = active & (byte == 45)
    value = value / fraction_scale
    return torch.where(negative, -value, value)


def _batch_rows(columns: Dict[str, Tensor], name: str, is_text: bool) -> int:
    return columns[name + ".offsets"].shape[0] - 1 if is_text else columns[name].shape[0]


def _pairs(candidate_rows: Tensor, token_rows: Tensor, n_rows: int) -> Tuple[Tensor, Tensor]:
    """Every (candidate, token) pair of the same row, both given in row order: their indices."""
    per_row = torch.bincount(token_rows, minlength=n_rows)
    first_token = torch.cumsum(per_row, 0) - per_row
    per_candidate = per_row[candidate_rows]
    pair_of = torch.repeat_interleave(torch.arange(candidate_rows.shape[0], dtype=torch.int64), per_candidate)
    pair_starts = torch.cumsum(per_candidate, 0) - per_candidate
    within = torch.arange(pair_of.shape[0], dtype=torch.int64) - pair_starts[pair_of]
    return pair_of, first_token[candidate_rows[pair_of]] + within


def _lookup_values(key_data: Tensor, key_offsets: Tensor, map_data: Tensor, map_offsets: Tensor, separator: int,
                   kv_separator: int) -> Tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """EasyRec's LookupFeature: the (starts, lengths, row) of the values of every entry of each
    row's map (key<kv_separator>value entries) whose key equals that row's key field."""
    starts, lengths, row = split_tokens(map_data, map_offsets, separator)
    split = _first_separator(map_data, starts, lengths, kv_separator)
    key_lengths = split - starts
    row_keys = vocab_key(key_data, key_offsets[:-1], _row_lengths(key_offsets))
    selected = vocab_key(map_data, starts, key_lengths) == row_keys[row]
    value_starts = split + 1
    return value_starts[selected], (starts + lengths - value_starts)[selected], row[selected]


def _vocab_keys(vocab: List[str]) -> Tuple[Tensor, Tensor]:
    if not vocab:
        return torch.zeros(1, dtype=torch.int64), torch.zeros(1, dtype=torch.int64)
    encoded = [v.encode() for v in vocab]
    data = torch.tensor(list(b"".join(encoded)), dtype=torch.uint8)
    lengths = torch.tensor([len(b) for b in encoded], dtype=torch.int64)
    starts = torch.cumsum(lengths, 0) - lengths
    keys = vocab_key(data, starts, lengths)
    order = torch.argsort(keys)
    sorted_keys = keys[order]
    if bool((sorted_keys[1:] == sorted_keys[:-1]).any()):
        raise FusionrecError("vocabulary has duplicate entries")
    return sorted_keys, order


def tensor_digest(tensor: Tensor) -> str:
    """A short sha256 of a tensor's bytes (vocabularies and boundaries in layouts and exports)."""
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def read_vocab_file(path: str, base_dir: str, feature: str) -> List[str]:
    from pathlib import Path

    full = Path(path) if Path(path).is_absolute() else Path(base_dir) / path
    try:
        words = [line.strip() for line in full.read_text(encoding="utf-8").splitlines()]
    except OSError as error:
        raise FusionrecError(f"feature {feature!r}: vocab_file {str(full)!r}: cannot read ({error.strerror})") from None
    words = [w for w in words if w]
    if not words:
        raise FusionrecError(f"feature {feature!r}: vocab_file {str(full)!r} is empty")
    if len(set(words)) != len(words):
        raise FusionrecError(f"feature {feature!r}: vocab_file {str(full)!r} has duplicate words")
    return words

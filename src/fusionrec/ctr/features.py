"""Stage 2: raw column tensors -> feature ids, masks and values, in TorchScript-able torch ops.

The same modules run in training and inside the exported TorchScript model, so an export
needs no feature code of ours and cannot disagree with training.

Raw columns arrive as tensors: a STRING column as its UTF-8 bytes (``<name>.bytes``, uint8)
and ``n + 1`` offsets (``<name>.offsets``, int64), which is Arrow's string layout; integer
columns as int64 (ids above 2^24 stay exact: they never pass through a float); FLOAT and
DOUBLE as float64.

Strings hash with 32-bit FNV-1a over their UTF-8 bytes (stable across runs, machines and
processes; vectorized over rows, one step per byte position). ``hash_bucket_size`` takes it
modulo. Vocabulary lookups compare a 63-bit key made of two FNV-1a variants, so two distinct
strings collide with probability about 2^-63.
"""

from __future__ import annotations

import hashlib
from typing import Dict, List, Tuple

import torch
from torch import Tensor, nn

from fusionrec.ctr.config import FeatureConfig, PipelineConfig
from fusionrec.ctr.expressions import Program, compile_expression
from fusionrec.errors import FusionrecError

# Per-batch counts the transform adds to its output as 0-d tensors, keyed "<feature>.<kind>":
# ".out_of_vocabulary" (values not in vocab_list / vocab_file, mapped to 0), ".out_of_range"
# (num_buckets ids outside [0, num_buckets), mapped to 0), ".truncated" (sequences longer
# than max_seq_len) and ".not_finite" (ExprFeature values that are inf or nan, set to 0).
# Written as literals because TorchScript cannot read module globals.


def feature_counts(features: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """The count entries of a transform's output (see COUNT_OOV, COUNT_TRUNCATED)."""
    counts: Dict[str, Tensor] = {}
    for key, value in features.items():
        if (key.endswith(".out_of_vocabulary") or key.endswith(".out_of_range") or key.endswith(".truncated")
                or key.endswith(".not_finite")):  # fmt: skip
            counts[key] = value
    return counts


# FNV-1a 32-bit: offset basis 2166136261, prime 16777619 (written as literals below, because
# TorchScript cannot read module globals); 3735928559 is the second variant's basis.


def fnv1a(data: Tensor, starts: Tensor, lengths: Tensor, state: Tensor) -> Tensor:
    """FNV-1a of the byte segments data[starts[i] : starts[i] + lengths[i]], continuing ``state``.

    All arithmetic stays below 2^57, so int64 is exact.
    """
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


class _Feature(nn.Module):
    """Base: one configured feature. ``forward`` adds ``name`` (and ``name.mask``) to ``out``."""

    def __init__(self, config: FeatureConfig, input_types: Dict[str, str], vocab: List[str]):
        super().__init__()
        self.name = config.name
        self.inputs = list(config.input_names)
        self.input_type = input_types[config.input_names[0]]
        self.hash_bucket_size = int(config.hash_bucket_size)
        self.num_buckets = int(config.num_buckets)
        self.separator = ord(config.separator) if len(config.separator.encode()) == 1 else 0
        self.max_seq_len = int(config.max_seq_len or 0)
        self.multi = config.feature_type in ("TagFeature", "SequenceFeature") or any(config.combo_input_seps)
        self.is_lookup = config.feature_type == "LookupFeature"
        self.kv_separator = ord(config.kv_separator) if config.kv_separator else 0
        self.lookup_max = int(config.lookup_max_sel_elem_num)
        self.has_vocab = len(vocab) > 0
        keys, order = _vocab_keys(vocab)
        self.register_buffer("vocab_keys", keys, persistent=True)
        self.register_buffer("vocab_index", order, persistent=True)
        self.n_vocab = len(vocab)
        self.register_buffer("boundaries", torch.tensor(config.bucket_boundaries, dtype=torch.float64), persistent=True)
        self.min_val = float(config.min_val)
        self.max_val = float(config.max_val)
        self.is_raw = config.feature_type in ("RawFeature", "PassThroughFeature")  # PassThrough: never scaled
        self.is_raw_sequence = config.is_raw_sequence
        self.sequence_length = int(config.sequence_length)
        self.multi_sep = ord(config.seq_multi_sep) if config.seq_multi_sep else 0
        self.raw_input_dim = int(config.raw_input_dim)
        self.embedding_dim = int(config.embedding_dim)
        self.is_combo = config.feature_type == "ComboFeature"
        self.is_expr = config.feature_type == "ExprFeature"
        program = compile_expression(config.expression, list(config.input_names)) if self.is_expr else Program()
        self.register_buffer("expr_opcodes", torch.tensor(program.opcodes, dtype=torch.int64), persistent=False)
        self.register_buffer("expr_operands", torch.tensor(program.operands, dtype=torch.int64), persistent=False)
        self.register_buffer("expr_constants", torch.tensor(program.constants + [0.0], dtype=torch.float64), persistent=False)
        self.combo_is_text = [input_types[name] == "STRING" for name in config.input_names]
        self.combo_join_bytes = list((config.combo_join_sep or "_").encode())
        seps = list(config.combo_input_seps) or [""] * len(config.input_names)
        self.combo_splits = [ord(sep) if sep else 0 for sep in seps]
        self.n_ids = self.table_rows()

    def _combo(self, columns: Dict[str, Tensor], out: Dict[str, Tensor]) -> None:
        """The hashed cross of the inputs: FNV-1a over "a<sep>b<sep>c" (sep "_" or combo_join_sep),
        a STRING contributing its UTF-8 bytes, an integer its 8 little-endian bytes. An input
        with a combo_input_seps separator is split into its values, and every combination of
        a row's values is crossed (EasyRec's sparse cross): a multi-value feature."""
        n_rows = _batch_rows(columns, self.inputs[0], self.combo_is_text[0])
        rows = torch.arange(n_rows, dtype=torch.int64)
        h = torch.full_like(rows, 2166136261)
        for i, name in enumerate(self.inputs):
            if i > 0:  # FNV-1a streams on after the join separator's bytes
                for byte in self.combo_join_bytes:
                    h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
            if self.combo_is_text[i]:
                data, offsets = columns[name + ".bytes"], columns[name + ".offsets"]
                if self.combo_splits[i] > 0:
                    starts, lengths, token_rows = split_tokens(data, offsets, self.combo_splits[i])
                else:
                    starts, lengths, token_rows = offsets[:-1], _row_lengths(offsets), torch.arange(n_rows, dtype=torch.int64)
                pair_of, token_of = _pairs(rows, token_rows, n_rows)
                h = fnv1a(data, starts[token_of], lengths[token_of], h[pair_of])
                rows = rows[pair_of]
            else:  # an integer input: one value per row
                value = columns[name][rows]
                for k in range(8):
                    h = ((h ^ ((value >> (8 * k)) & 0xFF)) * 16777619) & 0xFFFFFFFF
        ids = torch.remainder(h, self.hash_bucket_size)
        if not self.multi:
            out[self.name] = ids
            return
        padded, mask, counts = pad_tokens(ids, rows, n_rows, self.max_seq_len)
        out[self.name] = padded
        out[self.name + ".mask"] = mask
        if self.max_seq_len > 0:
            out[self.name + ".truncated"] = (counts > self.max_seq_len).sum()

    def _multi_value_sequence(self, data: Tensor, offsets: Tensor, out: Dict[str, Tensor]) -> None:
        """A SequenceFeature whose positions hold several values joined by seq_multi_sep (EasyRec's
        3-D sparse sequence): ``name`` (B, L, K) ids, ``name.multi_mask`` (B, L, K) the values,
        ``name.mask`` (B, L) the positions; max_seq_len keeps the last positions."""
        n_rows = offsets.shape[0] - 1
        e_starts, _, e_row = split_tokens(data, offsets, self.separator)
        mapped = torch.where(data == self.separator, torch.full_like(data, self.multi_sep), data)
        t_starts, t_lengths, _ = split_tokens(mapped, offsets, self.multi_sep)
        numbers = parse_decimals(data, t_starts, t_lengths) if self.is_raw_sequence else torch.zeros(0, dtype=torch.float64)
        vectors = self.is_raw_sequence and len(self.boundaries) == 0  # raw_input_dim numbers per position
        if self.is_raw_sequence:
            ids = torch.bucketize(numbers, self.boundaries, right=True)
            n_oov = torch.zeros((), dtype=torch.int64)
        else:
            ids, n_oov = self._ids_from_strings(data, t_starts, t_lengths)
        n_elements = e_starts.shape[0]
        element = torch.searchsorted(e_starts, t_starts, right=True) - 1
        per_element = torch.bincount(element, minlength=n_elements) if element.numel() > 0 else torch.zeros(n_elements, dtype=torch.int64)
        width = max(int(per_element.max().item()) if n_elements > 0 else 1, 1)
        first = torch.cumsum(per_element, 0) - per_element
        rank = torch.arange(element.shape[0], dtype=torch.int64) - first[element] if element.numel() > 0 else element
        if vectors:  # the reader refused positions of more numbers; value k weighs table row k
            width = self.raw_input_dim
            ids = rank
        by_element = torch.zeros(n_elements + 1, width, dtype=torch.int64)  # row n_elements: an empty position
        present = torch.zeros(n_elements + 1, width, dtype=torch.bool)
        by_element[element, rank] = ids
        present[element, rank] = True
        index = torch.arange(n_elements, dtype=torch.int64)
        if vectors:
            self._raw_vector_sequence(by_element, present, numbers, element, rank, index, e_row, n_rows, out)
            return
        placed, mask, counts = pad_tokens(index, e_row, n_rows, self.max_seq_len)
        placed = torch.where(mask, placed, torch.full_like(placed, n_elements))
        out[self.name] = by_element[placed]
        out[self.name + ".multi_mask"] = present[placed] & mask.unsqueeze(2)
        out[self.name + ".mask"] = mask
        out[self.name + ".length"] = counts
        if self.max_seq_len > 0:
            out[self.name + ".truncated"] = (counts > self.max_seq_len).sum()
        if self.has_vocab:
            out[self.name + ".out_of_vocabulary"] = n_oov

    def _raw_vector_sequence(self, by_element: Tensor, present: Tensor, numbers: Tensor, element: Tensor, rank: Tensor,
                             index: Tensor, e_row: Tensor, n_rows: int, out: Dict[str, Tensor]) -> None:  # fmt: skip
        """An unbucketized RawFeature sequence of raw_input_dim numbers per position (EasyRec's
        3-D raw sequence, seq_multi_sep): as the 2-D one, densified to sequence_length
        positions, every position counted; ``name`` (B, L, K) the rows 0 .. K-1, ``.weight``
        (B, L, K) the numbers (zeros where a position holds fewer)."""
        values = torch.zeros(by_element.shape, dtype=torch.float64)
        values[element, rank] = numbers
        placed, mask, counts = pad_tokens(index, e_row, n_rows, self.sequence_length)
        placed = torch.where(mask, placed, torch.full_like(placed, by_element.shape[0] - 1))
        pad = self.sequence_length - placed.shape[1]
        if pad > 0:  # the empty position's row
            placed = torch.nn.functional.pad(placed, [0, pad], value=float(by_element.shape[0] - 1))
        out[self.name] = by_element[placed]
        out[self.name + ".multi_mask"] = present[placed]
        out[self.name + ".weight"] = values[placed].to(torch.float32)
        out[self.name + ".mask"] = torch.ones(n_rows, self.sequence_length, dtype=torch.bool)
        out[self.name + ".length"] = counts
        out[self.name + ".truncated"] = (counts > self.sequence_length).sum()

    def _raw_sequence(self, data: Tensor, offsets: Tensor, out: Dict[str, Tensor]) -> None:
        """A SequenceFeature of numbers, as EasyRec reads it: bucketized by the boundaries (or
        num_buckets' even edges) into ids; without them, sequence_length positions each of
        whose number weighs the table's one row (``.weight``), zeros after the numbers, every
        position counted (EasyRec densifies the sequence to sequence_length)."""
        starts, lengths, row = split_tokens(data, offsets, self.separator)
        values = parse_decimals(data, starts, lengths)
        n_rows = offsets.shape[0] - 1
        if len(self.boundaries) > 0:
            ids = torch.bucketize(values, self.boundaries, right=True)
            padded, mask, counts = pad_tokens(ids, row, n_rows, self.max_seq_len)
            out[self.name] = padded
            out[self.name + ".mask"] = mask
            out[self.name + ".length"] = counts
            if self.max_seq_len > 0:
                out[self.name + ".truncated"] = (counts > self.max_seq_len).sum()
            return
        index = torch.arange(values.shape[0], dtype=torch.int64)
        placed, placed_mask, counts = pad_tokens(index, row, n_rows, self.sequence_length)
        weights = torch.where(placed_mask, values[placed] if values.shape[0] > 0 else torch.zeros(placed.shape, dtype=torch.float64),
                              torch.zeros(placed.shape, dtype=torch.float64))  # fmt: skip
        pad = self.sequence_length - weights.shape[1]
        if pad > 0:
            weights = torch.nn.functional.pad(weights, [0, pad])
        out[self.name] = torch.zeros(n_rows, self.sequence_length, dtype=torch.int64)
        out[self.name + ".mask"] = torch.ones(n_rows, self.sequence_length, dtype=torch.bool)
        out[self.name + ".weight"] = weights.to(torch.float32)
        out[self.name + ".length"] = counts
        out[self.name + ".truncated"] = (counts > self.sequence_length).sum()

    def _lookup(self, columns: Dict[str, Tensor], out: Dict[str, Tensor]) -> None:
        key, table = self.inputs[0], self.inputs[1]
        map_data = columns[table + ".bytes"]
        starts, lengths, row = _lookup_values(columns[key + ".bytes"], columns[key + ".offsets"], map_data,
                                              columns[table + ".offsets"], self.separator, self.kv_separator)  # fmt: skip
        ids = torch.remainder(fnv1a(map_data, starts, lengths, torch.full_like(starts, 2166136261)), self.hash_bucket_size)
        padded, mask, counts = pad_tokens(ids, row, columns[key + ".offsets"].shape[0] - 1, self.lookup_max)
        out[self.name] = padded
        out[self.name + ".mask"] = mask
        out[self.name + ".truncated"] = (counts > self.lookup_max).sum()

    def table_rows(self) -> int:
        if self.is_raw_sequence:  # bucket ids, or one row each number weighs (row k: a position's k-th number)
            return len(self.boundaries) + 1 if len(self.boundaries) > 0 else self.raw_input_dim
        if self.is_raw:  # bucket ids, or with embedding_dim one table row per value
            if len(self.boundaries) > 0:
                return len(self.boundaries) + 1
            return self.raw_input_dim if self.embedding_dim > 0 else 0
        if self.hash_bucket_size > 0:
            return self.hash_bucket_size
        if self.num_buckets > 0:
            return self.num_buckets
        return self.n_vocab  # out-of-vocabulary values share row 0 with the first word, as in EasyRec

    def _ids_from_strings(self, data: Tensor, starts: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """(ids, how many were out of the vocabulary); EasyRec's default_value=0 for the latter."""
        if self.has_vocab:
            key = vocab_key(data, starts, lengths)
            where = torch.searchsorted(self.vocab_keys, key).clamp(max=self.n_vocab - 1)
            found = self.vocab_keys[where] == key
            return torch.where(found, self.vocab_index[where], torch.zeros_like(key)), (~found).sum()
        h = fnv1a(data, starts, lengths, torch.full_like(starts, 2166136261))
        return torch.remainder(h, self.hash_bucket_size), torch.zeros((), dtype=torch.int64)

    def forward(self, columns: Dict[str, Tensor], out: Dict[str, Tensor]) -> None:
        first = self.inputs[0]
        if self.is_raw:
            value = columns[first].to(torch.float64)
            if self.max_val > self.min_val:
                value = (value - self.min_val) / (self.max_val - self.min_val)
            if len(self.boundaries) > 0:
                out[self.name] = torch.bucketize(value, self.boundaries, right=True)
            else:  # B x raw_input_dim (a one-number input arrives as B)
                out[self.name] = (value.unsqueeze(1) if value.dim() == 1 else value).to(torch.float32)
            return
        if self.is_expr:
            inputs: List[Tensor] = []
            for name in self.inputs:
                inputs.append(columns[name].to(torch.float64))
            value = run_expression(self.expr_opcodes, self.expr_operands, self.expr_constants, inputs)
            finite = torch.isfinite(value)
            out[self.name] = torch.where(finite, value, torch.zeros_like(value)).to(torch.float32).unsqueeze(1)
            out[self.name + ".not_finite"] = (~finite).sum()
            return
        if self.is_combo:
            self._combo(columns, out)
            return
        if self.is_lookup:
            self._lookup(columns, out)
            return
        if self.input_type == "STRING" and self.multi_sep > 0:
            self._multi_value_sequence(columns[first + ".bytes"], columns[first + ".offsets"], out)
            return
        if self.input_type == "STRING" and self.is_raw_sequence:
            self._raw_sequence(columns[first + ".bytes"], columns[first + ".offsets"], out)
            return
        if self.input_type == "STRING":
            data, offsets = columns[first + ".bytes"], columns[first + ".offsets"]
            if self.multi:
                starts, lengths, row = split_tokens(data, offsets, self.separator)
                if self.kv_separator > 0:  # key<kv>weight tokens: the keys are the values, weighted
                    starts, lengths, weights = _weighted_keys(data, starts, lengths, self.kv_separator)
                    index = torch.arange(weights.shape[0], dtype=torch.int64)  # each token's weight, placed as its id is
                    placed, placed_mask, _ = pad_tokens(index, row, offsets.shape[0] - 1, self.max_seq_len)
                    padded_weights = weights[placed] if weights.shape[0] > 0 else torch.zeros(placed.shape, dtype=torch.float64)
                    out[self.name + ".weight"] = (padded_weights * placed_mask.to(torch.float64)).to(torch.float32)
                ids, n_oov = self._ids_from_strings(data, starts, lengths)
                padded, mask, lengths = pad_tokens(ids, row, offsets.shape[0] - 1, self.max_seq_len)
                out[self.name] = padded
                out[self.name + ".mask"] = mask
                out[self.name + ".length"] = lengths  # before truncation: parallel lists are checked on it
                if self.max_seq_len > 0:
                    out[self.name + ".truncated"] = (lengths > self.max_seq_len).sum()
            else:
                starts = offsets[:-1]
                ids, n_oov = self._ids_from_strings(data, starts, offsets[1:] - starts)
                out[self.name] = ids
            if self.has_vocab:
                out[self.name + ".out_of_vocabulary"] = n_oov
            return
        value = columns[first].to(torch.int64)
        if self.num_buckets > 0:
            # EasyRec's categorical_column_with_identity(default_value=0): ids outside
            # [0, num_buckets), negative ones included, go to bucket 0, and are counted
            outside = (value < 0) | (value >= self.num_buckets)
            out[self.name] = torch.where(outside, torch.zeros_like(value), value)
            out[self.name + ".out_of_range"] = outside.sum()
        else:  # integer input with hash_bucket_size: hashed by value
            out[self.name] = torch.remainder(value, self.hash_bucket_size)


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


class FeatureTransform(nn.Module):
    """All configured features: raw column tensors -> {feature name: ids or values, name.mask}."""

    def __init__(self, config: PipelineConfig, base_dir: str = "."):
        super().__init__()
        input_types = {f.input_name: f.input_type for f in config.data_config.input_fields}
        modules = {}
        for feature in config.features:
            vocab = list(feature.vocab_list)
            if feature.vocab_file:
                vocab = read_vocab_file(feature.vocab_file, base_dir, feature.name)
            modules[feature.name] = _Feature(feature, input_types, vocab)
        self.features = nn.ModuleDict(modules)

    def forward(self, columns: Dict[str, Tensor]) -> Dict[str, Tensor]:
        out: Dict[str, Tensor] = {}
        for feature in self.features.values():
            feature(columns, out)
        return out

    @torch.jit.unused
    def layout(self) -> Dict[str, Dict[str, str]]:
        """What each feature's ids mean: its inputs, kind, id space and a hash of its vocabulary
        or boundaries. Stored in checkpoints and exports; two models with equal layouts read
        the same columns into the same embedding rows."""
        out: Dict[str, Dict[str, str]] = {}
        for name, f in self.features.items():
            out[name] = {
                "inputs": ",".join(f.inputs), "input_type": f.input_type, "ids": str(f.n_ids),
                "kind": "raw" if f.is_raw else ("combo" if f.is_combo else ("expr" if f.is_expr else ("sequence" if f.multi else "id"))),
                "id_space": "vocab" if f.has_vocab else ("hash" if f.hash_bucket_size > 0 else "buckets"),
                "vocab_sha256": tensor_digest(f.vocab_keys) if f.has_vocab else "",
                "boundaries_sha256": tensor_digest(f.boundaries) if len(f.boundaries) > 0 else "",
                "max_seq_len": str(f.max_seq_len),
            }  # fmt: skip
        return out


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

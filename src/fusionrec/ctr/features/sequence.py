"""EasyRec's SequenceFeature: a behaviour sequence of ids (``sub_feature_type: IdFeature``)
or numbers (``RawFeature``: bucketized, or weighing one table row each), a position of several
values joined by ``seq_multi_sep`` (EasyRec's 3-D sequences); ``max_seq_len`` keeps the last."""

from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor

from fusionrec.ctr.features.base import FeatureModule
from fusionrec.ctr.features.ops import pad_tokens, parse_decimals, split_tokens


class SequenceFeature(FeatureModule):
    def table_rows(self) -> int:
        if self.is_raw_sequence:  # bucket ids, or one row each number weighs (row k: a position's k-th number)
            return len(self.boundaries) + 1 if len(self.boundaries) > 0 else self.raw_input_dim
        return super().table_rows()

    def forward(self, columns: Dict[str, Tensor], out: Dict[str, Tensor]) -> None:
        first = self.inputs[0]
        data, offsets = columns[first + ".bytes"], columns[first + ".offsets"]
        if self.multi_sep > 0:
            self._multi_value_sequence(data, offsets, out)
        elif self.is_raw_sequence:
            self._raw_sequence(data, offsets, out)
        else:
            self._token_ids(data, offsets, out)

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


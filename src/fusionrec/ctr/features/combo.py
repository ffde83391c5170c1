"""EasyRec's ComboFeature: the hashed cross of several input fields."""

from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor

from fusionrec.ctr.features.base import FeatureModule
from fusionrec.ctr.features.ops import _batch_rows, _pairs, _row_lengths, fnv1a, pad_tokens, split_tokens


class ComboFeature(FeatureModule):
    def forward(self, columns: Dict[str, Tensor], out: Dict[str, Tensor]) -> None:
        self._combo(columns, out)

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


"""EasyRec's IdFeature: one id per row, from a STRING value (hashed or looked up in the
vocabulary) or an integer (``num_buckets`` as it is, or hashed by value)."""

from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor

from fusionrec.ctr.features.base import FeatureModule


class IdFeature(FeatureModule):
    def forward(self, columns: Dict[str, Tensor], out: Dict[str, Tensor]) -> None:
        first = self.inputs[0]
        if self.input_type == "STRING":
            data, offsets = columns[first + ".bytes"], columns[first + ".offsets"]
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

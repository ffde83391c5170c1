"""EasyRec's LookupFeature: the values of each row's map (key<kv_separator>value entries of
the second input) whose key equals the row's first input, hashed."""

from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor

from fusionrec.ctr.features.base import FeatureModule
from fusionrec.ctr.features.ops import _lookup_values, fnv1a, pad_tokens


class LookupFeature(FeatureModule):
    def forward(self, columns: Dict[str, Tensor], out: Dict[str, Tensor]) -> None:
        self._lookup(columns, out)

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


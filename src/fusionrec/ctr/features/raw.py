"""EasyRec's RawFeature (a number, or raw_input_dim numbers, scaled by min_val / max_val and
bucketized by ``boundaries`` / ``num_buckets`` when given) and PassThroughFeature (the value as
it is)."""

from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor

from fusionrec.ctr.features.base import FeatureModule


class RawFeature(FeatureModule):
    def table_rows(self) -> int:
        # bucket ids, or with embedding_dim one table row per value
        if len(self.boundaries) > 0:
            return len(self.boundaries) + 1
        return self.raw_input_dim if self.embedding_dim > 0 else 0

    def forward(self, columns: Dict[str, Tensor], out: Dict[str, Tensor]) -> None:
        value = columns[self.inputs[0]].to(torch.float64)
        if self.max_val > self.min_val:
            value = (value - self.min_val) / (self.max_val - self.min_val)
        if len(self.boundaries) > 0:
            out[self.name] = torch.bucketize(value, self.boundaries, right=True)
        else:  # B x raw_input_dim (a one-number input arrives as B)
            out[self.name] = (value.unsqueeze(1) if value.dim() == 1 else value).to(torch.float32)


class PassThroughFeature(RawFeature):
    """The value as it is: the config refuses scaling and buckets on it."""

"""EasyRec's TagFeature: the values of a STRING field joined by ``separator``, as (B, L) ids
and a mask; with ``kv_separator`` each value is key<kv>weight (a weighted bag of the keys)."""

from __future__ import annotations

from typing import Dict

from torch import Tensor

from fusionrec.ctr.features.base import FeatureModule


class TagFeature(FeatureModule):
    def forward(self, columns: Dict[str, Tensor], out: Dict[str, Tensor]) -> None:
        first = self.inputs[0]
        self._token_ids(columns[first + ".bytes"], columns[first + ".offsets"], out)

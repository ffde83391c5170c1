"""EasyRec's ExprFeature: a number computed per row from numeric input fields by an
expression (``fusionrec.ctr.expressions`` compiles it; ``run_expression`` evaluates it)."""

from __future__ import annotations

from typing import Dict, List

import torch
from torch import Tensor

from fusionrec.ctr.features.base import FeatureModule
from fusionrec.ctr.features.ops import run_expression


class ExprFeature(FeatureModule):
    def table_rows(self) -> int:
        return 0  # a dense value

    def forward(self, columns: Dict[str, Tensor], out: Dict[str, Tensor]) -> None:
        inputs: List[Tensor] = []
        for name in self.inputs:
            inputs.append(columns[name].to(torch.float64))
        value = run_expression(self.expr_opcodes, self.expr_operands, self.expr_constants, inputs)
        finite = torch.isfinite(value)
        out[self.name] = torch.where(finite, value, torch.zeros_like(value)).to(torch.float32).unsqueeze(1)
        out[self.name + ".not_finite"] = (~finite).sum()

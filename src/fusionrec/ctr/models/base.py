"""What every model shares: the output width, feature groups by name, the final layers, the
weights l2_regularization penalizes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from fusionrec.ctr.config import (
    DNN,
    FeatureConfig,
    FeatureGroupConfig,
    PipelineConfig,
    SeqAttGroupConfig,
    TaskTowerConfig,
    VariationalDropoutConfig,
)
from fusionrec.ctr.embedding import EmbeddingTables, GroupInput
from fusionrec.ctr.features import FeatureTransform
from fusionrec.ctr.modules.mlp import MLP
from fusionrec.ctr.tasks import Task
from fusionrec.errors import FusionrecError


def _mlp(in_dim: int, dnn: DNN | None) -> MLP:
    if dnn is None:
        return MLP(in_dim, [])
    return MLP(in_dim, list(dnn.hidden_units), dnn.activation, dnn.use_bn, list(dnn.dropout_ratio))


@dataclass(frozen=True)
class ModelInputs:
    """What a model reads besides its own ``model_config`` block, taken from the config once
    (``of``): the features and their transform (the id spaces), the feature groups and
    sequence attention groups, variational dropout, the task of the served output and a
    multi-task model's towers. ``tables()`` gives fresh embedding tables; ``groups`` the
    groups' inputs on them."""

    features: List[FeatureConfig]
    transform: FeatureTransform
    feature_groups: List[FeatureGroupConfig]
    seq_att_groups: List[SeqAttGroupConfig]
    variational_dropout: Optional[VariationalDropoutConfig]
    task: Task
    towers: List[TaskTowerConfig]
    model_class: str

    @classmethod
    def of(cls, config: PipelineConfig, transform: FeatureTransform) -> "ModelInputs":
        model = config.model_config_
        return cls(list(config.features), transform, list(model.feature_groups), list(model.seq_att_groups),
                   model.variational_dropout, model.task, list(model.towers), model.model_class)  # fmt: skip

    def tables(self) -> EmbeddingTables:
        return EmbeddingTables(self.features, self.transform, self.variational_dropout)

    def groups(self, wide_dim: Optional[int]) -> Tuple[Dict[str, GroupInput], EmbeddingTables]:
        """Each feature group's input on fresh tables (WIDE ones ``wide_dim`` wide), and the tables."""
        tables = self.tables()
        return {g.group_name: tables.group(g, wide_dim) for g in self.feature_groups}, tables


class _Base(nn.Module):
    """Shared bookkeeping: the groups by name, the output width, and the weights that take
    l2_regularization."""

    def _set_outputs(self, inputs: ModelInputs) -> None:
        self.n_outputs = inputs.task.n_outputs

    def _logits(self, outputs: Tensor) -> Tensor:
        """(B, 1) -> (B,) for one output; (B, num_class) as it is."""
        return outputs.squeeze(1) if self.n_outputs == 1 else outputs

    @torch.jit.export
    def forward_heads(self, features: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Logits by head suffix (``ModelConfig.head_suffixes``); one head, "", for most models."""
        return {"": self.forward(features)}

    @torch.jit.export
    def derived_outputs(self, outputs: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Outputs computed from the named head outputs (ESMM's probs_ctcvr); none for most models."""
        return {}

    def _group(self, groups: dict[str, GroupInput], name: str, where: str) -> GroupInput:
        if name not in groups:
            raise FusionrecError(f"{where}: input {name!r} is not a feature group; groups are {sorted(groups)}")
        return groups[name]

    def _wide_and_deep_groups(self, inputs: ModelInputs, wide_dim: int, model: str) -> None:
        """self.wide_groups (summed, width ``wide_dim``) and self.deep_groups (at least one)."""
        groups, _ = inputs.groups(wide_dim)
        self.wide_groups = nn.ModuleList(g for g in groups.values() if g.wide)
        self.deep_groups = nn.ModuleList(g for g in groups.values() if not g.wide)
        if len(self.deep_groups) == 0:
            raise FusionrecError(f"{model}: needs at least one DEEP feature group")

    def _output_layers(self, final_in_dim: int, final_dnn: DNN | None) -> None:
        """With ``final_dnn``: self.final over the concatenated parts, then self.head; without:
        self.head over the DNN output alone (self.final is an unused identity)."""
        self.has_final = final_dnn is not None
        if self.has_final:
            self.final = _mlp(final_in_dim, final_dnn)
            self.head = nn.Linear(self.final.out_dim, self.n_outputs)
        else:
            self.final = MLP(1, [])
            self.head = nn.Linear(self.dnn.out_dim, self.n_outputs)

    def dense_weights(self) -> List[Tensor]:
        """Weights of linear layers (not embeddings, not biases): what l2_regularization penalizes."""
        return [m.weight for m in self.modules() if isinstance(m, nn.Linear)]

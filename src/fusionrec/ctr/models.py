"""Stage 4: models. Each is a pure ``nn.Module`` whose ``forward(features)`` returns logits:
(B,) for one output, (B, num_class) for a multi-class model (``fusionrec.ctr.tasks``).

Loss, optimizer, schedule and checkpoints live in the trainer. ``features`` is the output of
``FeatureTransform`` (ids, masks and dense values by feature name).
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fusionrec.ctr.config import DNN, PipelineConfig
from fusionrec.ctr.embedding import EmbeddingTables, GroupInput
from fusionrec.ctr.features import FeatureTransform, feature_counts
from fusionrec.ctr.tasks import Task, output_name, sum_by_nonzero_weights, task_outputs, task_score
from fusionrec.ctr.layers import MLP, CrossNet, FactorizationMachine, InteractingLayer
from fusionrec.errors import FusionrecError


def _mlp(in_dim: int, dnn: DNN | None) -> MLP:
    if dnn is None:
        return MLP(in_dim, [])
    return MLP(in_dim, list(dnn.hidden_units), dnn.activation, dnn.use_bn, list(dnn.dropout_ratio))


class _Base(nn.Module):
    """Shared bookkeeping: the groups by name, the output width, and the weights that take
    l2_regularization."""

    def _set_outputs(self, config: PipelineConfig) -> None:
        self.n_outputs = config.model_config_.task.n_outputs

    def _logits(self, outputs: Tensor) -> Tensor:
        """(B, 1) -> (B,) for one output; (B, num_class) as it is."""
        return outputs.squeeze(1) if self.n_outputs == 1 else outputs

    @torch.jit.export
    def forward_heads(self, features: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Logits by head suffix (``ModelConfig.head_suffixes``); one head, "", for most models."""
        return {"": self.forward(features)}

    def _groups(self, config: PipelineConfig, transform: FeatureTransform, wide_dim: int | None):
        tables = EmbeddingTables(config, transform)
        groups = {g.group_name: tables.group(g, wide_dim) for g in config.model_config_.feature_groups}
        return groups, tables

    def _group(self, groups: dict[str, GroupInput], name: str, where: str) -> GroupInput:
        if name not in groups:
            raise FusionrecError(f"{where}: input {name!r} is not a feature group; groups are {sorted(groups)}")
        return groups[name]

    def _wide_and_deep_groups(self, config: PipelineConfig, transform: FeatureTransform, wide_dim: int, model: str) -> None:
        """self.wide_groups (summed, width ``wide_dim``) and self.deep_groups (at least one)."""
        groups, _ = self._groups(config, transform, wide_dim)
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


class WideAndDeep(_Base):
    """Wide & Deep (Cheng et al. 2016) as EasyRec builds it.

    wide = sum of the WIDE groups' per-feature embeddings of width ``wide_output_dim``;
    deep = ``dnn`` over the concatenated DEEP groups. With ``final_dnn``: logits =
    linear(final_dnn([wide, deep])); without: logits = wide + linear(deep), the wide part one
    weight per output (EasyRec sets wide_output_dim to num_class when there is no final_dnn).
    """

    def __init__(self, config: PipelineConfig, transform: FeatureTransform):
        super().__init__()
        self._set_outputs(config)
        params = config.model_config_.wide_and_deep
        wide_dim = params.wide_output_dim if params.final_dnn is not None else self.n_outputs
        self._wide_and_deep_groups(config, transform, wide_dim, "WideAndDeep")
        self.wide_dim = wide_dim
        self.dnn = _mlp(sum(g.out_dim for g in self.deep_groups), params.dnn)
        self._output_layers(self.wide_dim + self.dnn.out_dim, params.final_dnn)

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        deep_parts: List[Tensor] = []
        for group in self.deep_groups:
            deep_parts.append(group(features))
        deep = self.dnn(torch.cat(deep_parts, dim=1))
        wide = torch.zeros(deep.shape[0], self.wide_dim, dtype=deep.dtype)
        for group in self.wide_groups:
            wide = wide + group(features)
        if self.has_final:
            return self._logits(self.head(self.final(torch.cat([wide, deep], dim=1))))
        return self._logits(wide + self.head(deep))


class DeepFM(_Base):
    """DeepFM (Guo et al., IJCAI 2017) as EasyRec builds it: wide = the sum of every WIDE
    feature's ``wide_output_dim`` embedding (one value per row); fm = the FM interactions per
    embedding dimension over the fields of the group named ``fm`` if there is one, else of the
    DEEP groups; deep = ``dnn`` over the DEEP groups. With ``final_dnn``: logits =
    linear(final_dnn([wide, fm, deep])); without: wide + fm (summed, or a linear layer per
    class) + linear(deep), and wide_output_dim must equal num_class, as EasyRec asserts."""

    def __init__(self, config: PipelineConfig, transform: FeatureTransform):
        super().__init__()
        self._set_outputs(config)
        params = config.model_config_.deepfm
        groups, _ = self._groups(config, transform, params.wide_output_dim)
        self.wide_groups = nn.ModuleList(g for name, g in groups.items() if g.wide)
        self.deep_groups = nn.ModuleList(g for name, g in groups.items() if not g.wide and name != "fm")
        if len(self.deep_groups) == 0:
            raise FusionrecError("DeepFM: needs at least one DEEP feature group")
        fm_groups = [groups["fm"]] if "fm" in groups and not groups["fm"].wide else list(self.deep_groups)
        self.fm_groups = nn.ModuleList(fm_groups)
        dims = {d for g in fm_groups for d in g.field_dims}
        if len(dims) != 1:
            raise FusionrecError(f"DeepFM: the FM needs every field it crosses to have one embedding_dim, found {sorted(dims)}")
        fm_dim = dims.pop()
        if params.final_dnn is None and params.wide_output_dim != self.n_outputs:
            raise FusionrecError(
                f"deepfm: without final_dnn, wide_output_dim ({params.wide_output_dim}) must equal num_class "
                f"({self.n_outputs}), as in EasyRec"
            )
        self.fm = FactorizationMachine(keep_dim=True)
        self.dnn = _mlp(sum(g.out_dim for g in self.deep_groups), params.dnn)
        # without final_dnn and with several classes, the FM interactions get a linear layer per class
        self.fm_head = nn.Linear(fm_dim, self.n_outputs) if params.final_dnn is None and self.n_outputs > 1 else nn.Identity()
        self._output_layers(1 + fm_dim + self.dnn.out_dim, params.final_dnn)

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        deep_parts: List[Tensor] = []
        for group in self.deep_groups:
            deep_parts.append(group(features))
        deep = self.dnn(torch.cat(deep_parts, dim=1))
        fields: List[Tensor] = []
        for group in self.fm_groups:
            fields.extend(group.fields(features))
        fm = self.fm(torch.stack(fields, dim=1))
        wide = torch.zeros(deep.shape[0], 1, dtype=deep.dtype)
        for group in self.wide_groups:
            wide = wide + group(features).sum(dim=1, keepdim=True)
        if self.has_final:
            return self._logits(self.head(self.final(torch.cat([wide, fm, deep], dim=1))))
        if self.n_outputs > 1:
            return self._logits(wide + self.fm_head(fm) + self.head(deep))
        return self._logits(wide + fm.sum(dim=1, keepdim=True) + self.head(deep))


class FM(_Base):
    """Factorization machine (Rendle 2010) as EasyRec's FM: the WIDE groups' first-order terms
    plus the second-order interactions of the DEEP groups' fields (eq. 4), plus a bias."""

    def __init__(self, config: PipelineConfig, transform: FeatureTransform):
        super().__init__()
        self._set_outputs(config)
        if self.n_outputs != 1:
            raise FusionrecError(f"FM: predicts one value per row; num_class {self.n_outputs} is not supported (as in EasyRec)")
        self._wide_and_deep_groups(config, transform, 1, "FM")
        dims = {d for g in self.deep_groups for d in g.field_dims}
        if len(dims) != 1:
            raise FusionrecError(f"FM: every DEEP field needs one embedding_dim, found {sorted(dims)}")
        self.fm = FactorizationMachine()
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        fields: List[Tensor] = []
        for group in self.deep_groups:
            fields.extend(group.fields(features))
        logits = self.fm(torch.stack(fields, dim=1)).squeeze(1) + self.bias
        for group in self.wide_groups:
            logits = logits + group(features).sum(dim=1)
        return logits


class AutoInt(_Base):
    """AutoInt (Song et al., CIKM 2019) as EasyRec's: the first feature group's fields (a DIN
    output counts as one field per key) through ``interacting_layer_num`` interacting layers,
    flattened, then one linear layer."""

    def __init__(self, config: PipelineConfig, transform: FeatureTransform):
        super().__init__()
        self._set_outputs(config)
        params = config.model_config_.autoint
        groups, _ = self._groups(config, transform, None)
        self.input = next(iter(groups.values()))
        dims = {d for d in self.input.field_dims}
        dim = min(dims) if dims else 0
        if not dims or any(d % dim for d in dims):
            raise FusionrecError(f"AutoInt: every field of group {self.input.group_name!r} needs one embedding_dim, found {sorted(dims)}")
        self.dim = dim
        n_fields = self.input.out_dim // dim
        layers = []
        width = dim
        for _ in range(params.interacting_layer_num):
            layers.append(InteractingLayer(width, params.multi_head_num, params.multi_head_size))
            width = layers[-1].out_dim
        self.layers = nn.ModuleList(layers)
        self.head = nn.Linear(n_fields * width, self.n_outputs)

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        x = self.input(features)
        fields = x.view(x.shape[0], -1, self.dim)
        for layer in self.layers:
            fields = layer(fields)
        return self._logits(self.head(fields.flatten(1)))


class DCN(_Base):
    """Deep & Cross Network (Wang et al., ADKDD 2017) as EasyRec's DCN: cross tower (eq. 3, a
    weight vector per layer) || deep tower, then ``final_dnn`` and one output unit."""

    def __init__(self, config: PipelineConfig, transform: FeatureTransform):
        super().__init__()
        self._set_outputs(config)
        params = config.model_config_.dcn
        groups, _ = self._groups(config, transform, None)
        self.cross_input = self._group(groups, params.cross_tower.input, "dcn.cross_tower")
        self.deep_input = self._group(groups, params.deep_tower.input, "dcn.deep_tower")
        self.cross = CrossNet(self.cross_input.out_dim, params.cross_tower.cross_num)
        self.dnn = _mlp(self.deep_input.out_dim, params.deep_tower.dnn)
        width = self.cross.out_dim + self.dnn.out_dim
        self.final = _mlp(width, params.final_dnn)
        self.head = nn.Linear(self.final.out_dim, self.n_outputs)

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        crossed = self.cross(self.cross_input(features))
        deep = self.dnn(self.deep_input(features))
        return self._logits(self.head(self.final(torch.cat([crossed, deep], dim=1))))


class DLRM(_Base):
    """DLRM (Naumov et al. 2019) as EasyRec's DLRM: the group ``dense`` through ``bot_dnn``
    (the paper's bottom MLP) and the group ``sparse``'s embeddings
    interact by ``arch_interaction_op``: ``cat`` concatenates them; ``dot`` takes the dot
    product of every pair (each with itself too under ``arch_interaction_itself``), then
    appends the sparse embeddings (and the dense vector under ``arch_with_dense_feature``).
    ``top_dnn`` and one linear layer give the logits."""

    def __init__(self, config: PipelineConfig, transform: FeatureTransform):
        super().__init__()
        self._set_outputs(config)
        params = config.model_config_.dlrm
        groups, _ = self._groups(config, transform, None)
        self.dense_input = self._group(groups, "dense", "dlrm (EasyRec's DLRM needs a feature group named 'dense')")
        self.sparse_input = self._group(groups, "sparse", "dlrm (EasyRec's DLRM needs a feature group named 'sparse')")
        self.bottom = _mlp(self.dense_input.out_dim, params.bot_dnn)
        self.dot = params.arch_interaction_op == "dot"
        self.with_dense = params.arch_with_dense_feature
        n_fields = 1 + len(self.sparse_input.field_dims)
        if self.dot:
            dims = set(self.sparse_input.field_dims) | {self.bottom.out_dim}
            if len(dims) != 1:
                raise FusionrecError(
                    f"dlrm: arch_interaction_op 'dot' needs bot_dnn's last layer ({self.bottom.out_dim}) and every "
                    f"embedding of group 'sparse' ({sorted(set(self.sparse_input.field_dims))}) to have one width"
                )
            offset = 0 if params.arch_interaction_itself else 1
            rows, cols = torch.triu_indices(n_fields, n_fields, offset)
            self.register_buffer("pair_rows", rows, persistent=False)
            self.register_buffer("pair_cols", cols, persistent=False)
            width = rows.numel() + self.sparse_input.out_dim + (self.bottom.out_dim if self.with_dense else 0)
        else:
            self.register_buffer("pair_rows", torch.zeros(0, dtype=torch.long), persistent=False)
            self.register_buffer("pair_cols", torch.zeros(0, dtype=torch.long), persistent=False)
            width = self.bottom.out_dim + self.sparse_input.out_dim
        self.top = _mlp(width, params.top_dnn)
        self.head = nn.Linear(self.top.out_dim, self.n_outputs)

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        dense = self.bottom(self.dense_input(features))
        sparse = self.sparse_input.fields(features)
        if not self.dot:
            return self._logits(self.head(self.top(torch.cat([dense] + sparse, dim=1))))
        stacked = torch.stack([dense] + sparse, dim=1)  # B x n_fields x D
        interactions = torch.bmm(stacked, stacked.transpose(1, 2))[:, self.pair_rows, self.pair_cols]
        parts = [interactions] + sparse
        if self.with_dense:
            parts.append(dense)
        return self._logits(self.head(self.top(torch.cat(parts, dim=1))))


class RocketLaunching(_Base):
    """Rocket Launching (Zhou et al., AAAI 2018) as EasyRec's RocketLaunching: over the group
    ``all`` (through ``share_dnn`` if set), a large booster net and a light net are trained
    together; the light net sees the shared input with its gradient stopped and learns the
    labels plus the booster's logits (the hint loss, eq. 3, squared error); with
    ``feature_based_distillation``, each light hidden layer is also pulled towards the first
    booster hidden layer of the same width. ``forward`` is the light net: what is served."""

    def __init__(self, config: PipelineConfig, transform: FeatureTransform):
        super().__init__()
        self._set_outputs(config)
        params = config.model_config_.rocket_launching
        groups, _ = self._groups(config, transform, None)
        self.input = self._group(groups, "all", "rocket_launching (EasyRec's RocketLaunching needs a feature group named 'all')")
        self.share = _mlp(self.input.out_dim, params.share_dnn)
        self.booster = _mlp(self.share.out_dim, params.booster_dnn)
        self.light = _mlp(self.share.out_dim, params.light_dnn)
        self.booster_head = nn.Linear(self.booster.out_dim, self.n_outputs)
        self.light_head = nn.Linear(self.light.out_dim, self.n_outputs)
        self.feature_based = params.feature_based_distillation
        self.similarity = params.feature_distillation_function
        booster_units = list(params.booster_dnn.hidden_units)
        # (light layer, booster layer) pairs: each light layer with the first booster layer of its width
        self.distilled_pairs = [(i, booster_units.index(u)) for i, u in enumerate(params.light_dnn.hidden_units)
                                if u in booster_units]  # fmt: skip

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        shared = self.share(self.input(features))
        return self._logits(self.light_head(self.light(shared)))

    @torch.jit.export
    def forward_heads(self, features: Dict[str, Tensor]) -> Dict[str, Tensor]:
        shared = self.share(self.input(features))
        return {"_light": self._logits(self.light_head(self.light(shared))),
                "_booster": self._logits(self.booster_head(self.booster(shared)))}  # fmt: skip

    @torch.jit.ignore
    def training_heads(self, features: Dict[str, Tensor], weights: Tensor | None) -> tuple[Dict[str, Tensor], Tensor]:
        """Logits of both nets and the distillation loss: the hint loss (light logits against
        the booster's, gradient stopped) and, with feature_based_distillation, -0.1 x the mean
        cosine (or inner product) of each paired hidden layer, or +0.1 x their Euclidean
        distance (EasyRec subtracts the distance too, which pushes the nets apart)."""
        shared = self.share(self.input(features))
        light_hidden = self.light.hidden_outputs(shared.detach())
        booster_hidden = self.booster.hidden_outputs(shared)
        light_input = light_hidden[-1] if light_hidden else shared.detach()
        booster_input = booster_hidden[-1] if booster_hidden else shared
        heads = {"_light": self._logits(self.light_head(light_input)), "_booster": self._logits(self.booster_head(booster_input))}
        hint = (heads["_light"] - heads["_booster"].detach()).pow(2)
        if hint.dim() > 1:
            hint = hint.mean(dim=1)
        loss = sum_by_nonzero_weights(hint, weights)
        if self.feature_based:
            for i, j in self.distilled_pairs:
                light, booster = light_hidden[i], booster_hidden[j].detach()
                if self.similarity == "EUCLID":
                    loss = loss + 0.1 * (booster - light).pow(2).sum().sqrt()
                    continue
                if self.similarity == "COSINE":
                    light, booster = F.normalize(light, dim=1), F.normalize(booster, dim=1)
                loss = loss - 0.1 * (light * booster).sum(dim=1).mean()
        return heads, loss


class MultiTower(_Base):
    """EasyRec's MultiTower / MultiTowerDIN: one DNN tower per group (or per ``seq_att_groups``
    entry, whose DIN outputs feed a ``din_towers`` tower), concatenated into ``final_dnn``."""

    def __init__(self, config: PipelineConfig, transform: FeatureTransform):
        super().__init__()
        self._set_outputs(config)
        params = config.model_config_.multi_tower
        groups, tables = self._groups(config, transform, None)
        din_groups = {}
        for seq_group in config.model_config_.seq_att_groups:
            name = seq_group.group_name or "seq_att"
            din_groups[name] = GroupInput(name, tables.din(seq_group, f"seq_att_groups {name!r}"), False)
        towers, inputs = [], []
        for tower in params.towers:
            group = self._group(groups, tower.input, "multi_tower.towers")
            inputs.append(group)
            towers.append(_mlp(group.out_dim, tower.dnn))
        # EasyRec's MultiTower reads `towers` only; `din_towers` belong to MultiTowerDIN / DIN
        din_towers = params.din_towers if config.model_config_.model_class != "MultiTower" else []
        for tower in din_towers:
            if tower.input not in din_groups:
                raise FusionrecError(
                    f"multi_tower.din_towers: input {tower.input!r} is not a seq_att_groups group_name; "
                    f"those are {sorted(din_groups)}"
                )
            inputs.append(din_groups[tower.input])
            towers.append(_mlp(din_groups[tower.input].out_dim, tower.dnn))
        if not towers:
            raise FusionrecError("multi_tower: needs at least one tower")
        self.inputs = nn.ModuleList(inputs)
        self.towers = nn.ModuleList(towers)
        self.final = _mlp(sum(t.out_dim for t in towers), params.final_dnn)
        self.head = nn.Linear(self.final.out_dim, self.n_outputs)

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        outputs: List[Tensor] = []
        for group in self.inputs:
            outputs.append(group(features))
        j = 0
        tower_outputs: List[Tensor] = []
        for tower in self.towers:
            tower_outputs.append(tower(outputs[j]))
            j += 1
        return self._logits(self.head(self.final(torch.cat(tower_outputs, dim=1))))


MODELS = {"WideAndDeep": WideAndDeep, "DeepFM": DeepFM, "DCN": DCN, "MultiTower": MultiTower, "DIN": MultiTower,
          "MultiTowerDIN": MultiTower, "FM": FM, "AutoInt": AutoInt, "DLRM": DLRM,
          "RocketLaunching": RocketLaunching}  # fmt: skip


def build_model(config: PipelineConfig, transform: FeatureTransform) -> nn.Module:
    return MODELS[config.model_config_.model_class](config, transform)


class ScoringModel(nn.Module):
    """What export writes: raw column tensors -> the task's score (probabilities, or y for a
    regression) and every output EasyRec's exported model has. Needs no fusionrec code to run."""

    def __init__(self, transform: FeatureTransform, model: nn.Module, task: Task):
        super().__init__()
        self.transform = transform
        self.model = model
        self.kind = task.kind
        self.squash = task.squash

    def forward(self, columns: Dict[str, Tensor]) -> Tensor:
        return task_score(self.model(self.transform(columns)), self.kind, self.squash)

    @torch.jit.export
    def forward_with_counts(self, columns: Dict[str, Tensor]) -> Tuple[Tensor, Dict[str, Tensor]]:
        """The score and the batch's per-feature counts (out of vocabulary, truncated)."""
        features = self.transform(columns)
        return task_score(self.model(features), self.kind, self.squash), feature_counts(features)

    @torch.jit.export
    def outputs_with_counts(self, columns: Dict[str, Tensor]) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        """Every output by name (``Task.output_names``) and the batch's per-feature counts."""
        features = self.transform(columns)
        outputs: Dict[str, Tensor] = {}
        for suffix, logits in self.model.forward_heads(features).items():
            for name, value in task_outputs(logits, self.kind, self.squash).items():
                outputs[output_name(name, suffix)] = value
        return outputs, feature_counts(features)

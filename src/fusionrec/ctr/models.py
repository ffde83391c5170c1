"""Stage 4: models. Each is a pure ``nn.Module`` whose ``forward(features)`` returns logits:
(B,) for one output, (B, num_class) for a multi-class model (``fusionrec.ctr.tasks``).

Loss, optimizer, schedule and checkpoints live in the trainer. ``features`` is the output of
``FeatureTransform`` (ids, masks and dense values by feature name).
"""

from __future__ import annotations

import importlib
import math
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fusionrec.ctr.config import DNN, BSTTower, PipelineConfig
from fusionrec.ctr.embedding import EmbeddingTables, GroupInput
from fusionrec.ctr.features import FeatureTransform, feature_counts
from fusionrec.ctr.transformer import CrossAttentionTower, EmbeddingPostprocessor, TransformerEncoder, dense, masked_mean
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

    @torch.jit.export
    def derived_outputs(self, outputs: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Outputs computed from the named head outputs (ESMM's probs_ctcvr); none for most models."""
        return {}

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
        self.fm_is_deep = not ("fm" in groups and not groups["fm"].wide)
        fm_groups = list(self.deep_groups) if self.fm_is_deep else [groups["fm"]]
        self.fm_groups = nn.ModuleList([] if self.fm_is_deep else fm_groups)
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
        deep_fields: List[Tensor] = []
        for group in self.deep_groups:
            deep_fields.extend(group.fields(features))
        deep = self.dnn(torch.cat(deep_fields, dim=1))
        fields: List[Tensor] = deep_fields  # the FM crosses the DEEP fields, looked up once, unless a group `fm` is set
        if not self.fm_is_deep:
            fields = []
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
    output, [attended, candidate], counts as two fields per key width) through ``interacting_layer_num`` interacting layers,
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


class _MultiModalInputs(_Base):
    """The feature groups of EasyRec's multi-modal models, by name: ``image`` (RawFeatures of
    raw_input_dim numbers, one width), ``general`` (features of one embedding_dim), ``text``
    (SequenceFeatures of one embedding_dim, kept as sequences), ``other`` (as is, or through
    ``other_feature_dnn``)."""

    def _inputs(self, config: PipelineConfig, transform: FeatureTransform, model: str, max_positions: int,
                use_positions: bool, other_dnn: DNN | None) -> None:  # fmt: skip
        tables = EmbeddingTables(config, transform)
        by_name = {g.group_name: g for g in config.model_config_.feature_groups}
        known = {"image", "general", "text", "other"}
        if not known & set(by_name):
            raise FusionrecError(f"{model}: needs one of the feature groups {sorted(known)}; found {sorted(by_name)}")
        features = {f.name: f for f in config.features}
        self.has_image, self.has_general = "image" in by_name, "general" in by_name
        self.has_text, self.has_other = "text" in by_name, "other" in by_name
        self.image = tables.group(by_name["image"], None) if self.has_image else GroupInput("image", [], False)
        self.general = tables.group(by_name["general"], None) if self.has_general else GroupInput("general", [], False)
        self.text = nn.ModuleList(
            tables.sequence(name, f"{model} group 'text'") for name in (by_name["text"].feature_names if self.has_text else [])
        )
        self.other = tables.group(by_name["other"], None) if self.has_other else GroupInput("other", [], False)
        self.n_image, self.n_general, self.n_text = len(self.image.field_dims), len(self.general.field_dims), len(self.text)
        for group, dims in (("image", self.image.field_dims), ("general", self.general.field_dims),
                            ("text", [t.out_dim for t in self.text])):  # fmt: skip
            if len(set(dims)) > 1:
                raise FusionrecError(f"{model}: every feature of group {group!r} needs one width, found {sorted(set(dims))}")
        self.image_dim = self.image.field_dims[0] if self.n_image else 0
        self.general_dim = self.general.field_dims[0] if self.n_general else 0
        self.text_dim = self.text[0].out_dim if self.n_text else 0
        if use_positions and self.n_text:
            lengths = [features[name].max_seq_len for name in by_name["text"].feature_names]
            if any(n is None or n > max_positions for n in lengths):
                raise FusionrecError(
                    f"{model}: max_position_embeddings ({max_positions}) must be at least every text feature's max_seq_len "
                    f"(set it on each): {dict(zip(by_name['text'].feature_names, lengths))}"
                )
        self.other_dnn = _mlp(self.other.out_dim, other_dnn if self.has_other else None)
        self.other_dim = self.other_dnn.out_dim if self.has_other else 0

    def _text_sequences(self, features: Dict[str, Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        embedded: List[Tensor] = []
        masks: List[Tensor] = []
        for slot in self.text:
            x, mask = slot(features)
            embedded.append(x)
            masks.append(mask)
        return embedded, masks

    def _other_output(self, features: Dict[str, Tensor]) -> Tensor:
        return self.other_dnn(self.other(features))


class CMBF(_MultiModalInputs):
    """CMBF (Chen et al., "CMBF: Cross-Modal-Based Fusion Recommendation Algorithm", Sensors
    2021) as EasyRec's: an image tower (projection, or image_feature_dim single-value tokens,
    then self-attention layers), a text tower (the general features as tokens and each text
    sequence with token-type and position embeddings, through self-attention layers),
    cross-modal layers between the two, then the image tokens averaged, the general tokens
    kept, each text sequence averaged over its valid positions; ``final_dnn`` and the output."""

    def __init__(self, config: PipelineConfig, transform: FeatureTransform, tower=None):
        """``tower``: a CMBFTower to build the fused features only (DBMTL's ``bottom_cmbf``):
        ``fused`` then gives them, width ``out_dim``, and there is no final_dnn or output."""
        super().__init__()
        self._set_outputs(config)
        p = tower if tower is not None else config.model_config_.cmbf.config
        self._inputs(config, transform, "CMBF", p.max_position_embeddings, p.use_position_embeddings, p.other_feature_dnn)
        heads = p.multi_head_num
        # image tower
        self.image_layers = p.image_self_attention_layer_num
        self.image_tokens = max(self.n_image, 1)
        self.image_map_tokens = False
        image_hidden = heads * p.image_cross_head_size if self.image_layers <= 0 else p.image_head_size * p.image_multi_head_num
        token_dim = self.image_dim
        if self.has_image and self.image_layers > 0 and self.n_image == 1 and p.image_feature_patch_num > 1:
            if self.image_dim % p.image_feature_patch_num:
                raise FusionrecError(f"CMBF: image width {self.image_dim} is not a multiple of image_feature_patch_num {p.image_feature_patch_num}")
            self.image_tokens, token_dim = p.image_feature_patch_num, self.image_dim // p.image_feature_patch_num
        elif self.has_image and self.image_layers > 0 and self.n_image == 1:
            if p.image_feature_dim <= 0:
                raise FusionrecError("CMBF: image_feature_dim must be > 0 for one image feature with image self-attention layers")
            self.image_map_tokens, self.image_tokens = True, p.image_feature_dim
        if self.image_map_tokens:  # each of image_feature_dim values becomes a token: value x a learned vector
            self.image_projection = dense(self.image_dim, p.image_feature_dim) if p.image_feature_dim != self.image_dim else nn.Identity()
            self.image_map = nn.Parameter(torch.randn(1, p.image_feature_dim, image_hidden) * 0.02)
        else:
            self.image_projection = dense(token_dim, image_hidden) if token_dim != image_hidden and self.has_image else nn.Identity()
            self.image_map = nn.Parameter(torch.zeros(0))
        self.token_dim = token_dim
        if self.has_image and self.image_layers > 0 and image_hidden % heads:
            raise FusionrecError(f"CMBF: image hidden size {image_hidden} is not a multiple of multi_head_num {heads}")
        self.image_encoder = TransformerEncoder(image_hidden, max(self.image_layers, 0), heads, 4 * image_hidden, "gelu",
                                                p.hidden_dropout_prob, p.attention_probs_dropout_prob)  # fmt: skip
        # text tower
        text_hidden = p.text_head_size * p.text_multi_head_num
        has_text_tower = self.has_general or self.n_text > 0
        if has_text_tower and text_hidden % heads:
            raise FusionrecError(f"CMBF: text hidden size {text_hidden} is not a multiple of multi_head_num {heads}")
        self.general_projection = dense(self.general_dim, text_hidden) if self.general_dim not in (0, text_hidden) else nn.Identity()
        self.text_projections = nn.ModuleList(
            dense(self.text_dim, text_hidden) if self.text_dim != text_hidden else nn.Identity() for _ in range(self.n_text))
        self.text_postprocess = nn.ModuleList(
            EmbeddingPostprocessor(text_hidden, p.max_position_embeddings if p.use_position_embeddings else 0,
                                   p.text_seq_emb_dropout_prob) for _ in range(self.n_text))  # fmt: skip
        self.use_token_type = p.use_token_type
        self.token_types = nn.Parameter(torch.randn(max(self.n_text, 1), text_hidden) * 0.02)
        self.text_encoder = TransformerEncoder(text_hidden, p.text_self_attention_layer_num, heads, 4 * text_hidden, "gelu",
                                               p.hidden_dropout_prob, p.attention_probs_dropout_prob)  # fmt: skip
        # cross-modal layers
        self.cross_modal = self.has_image and has_text_tower
        self.cross = CrossAttentionTower(image_hidden, text_hidden, p.cross_modal_layer_num if self.cross_modal else 0, heads,
                                         p.image_cross_head_size, p.text_cross_head_size, p.hidden_dropout_prob,
                                         p.attention_probs_dropout_prob)  # fmt: skip
        image_width = self.cross.left_dim if self.cross_modal else image_hidden
        text_width = self.cross.right_dim if self.cross_modal else text_hidden
        width = (image_width if self.has_image else 0) + (self.n_general + self.n_text) * text_width * int(has_text_tower)
        self.out_dim = width + self.other_dim
        self.final = _mlp(self.out_dim, config.model_config_.cmbf.final_dnn if tower is None else None)
        self.head = nn.Linear(self.final.out_dim, self.n_outputs) if tower is None else nn.Identity()

    def _image_tower(self, features: Dict[str, Tensor]) -> Tensor:
        x = self.image(features)
        batch = x.shape[0]
        if self.image_map_tokens:
            x = self.image_projection(x).unsqueeze(2) * self.image_map
        else:
            x = self.image_projection(x.view(batch, self.image_tokens, self.token_dim))
        return self.image_encoder(x, None)

    def _text_tower(self, features: Dict[str, Tensor]) -> Tuple[Tensor, Optional[Tensor], List[Tensor]]:
        parts: List[Tensor] = []
        masks: List[Tensor] = []
        if self.has_general:
            general = torch.stack(self.general.fields(features), dim=1)
            parts.append(self.general_projection(general))
            masks.append(torch.ones(general.shape[0], general.shape[1], dtype=torch.bool))
        embedded, seq_masks = self._text_sequences(features)
        i = 0
        for projection, post in zip(self.text_projections, self.text_postprocess):
            token_type: Optional[Tensor] = self.token_types[i] if self.use_token_type else None
            parts.append(post(projection(embedded[i]), token_type))
            masks.append(seq_masks[i])
            i += 1
        x = torch.cat(parts, dim=1)
        mask: Optional[Tensor] = torch.cat(masks, dim=1) if self.n_text > 0 else None
        return self.text_encoder(x, mask), mask, masks

    def _merge_text(self, x: Tensor, masks: List[Tensor]) -> Tensor:
        """The general tokens kept, each text sequence averaged over its valid positions, flattened."""
        pieces: List[Tensor] = []
        begin = 0
        if self.has_general:
            pieces.append(x[:, : self.n_general].flatten(1))
            begin = self.n_general
        for j in range(int(self.has_general), len(masks)):
            size = masks[j].shape[1]
            pieces.append(masked_mean(x[:, begin : begin + size], masks[j]))
            begin += size
        return torch.cat(pieces, dim=1)

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        return self._logits(self.head(self.final(self.fused(features))))

    def fused(self, features: Dict[str, Tensor]) -> Tensor:
        """The fused image, text and other features, before final_dnn."""
        outputs: List[Tensor] = []
        if self.cross_modal:
            image = self._image_tower(features)
            text, mask, masks = self._text_tower(features)
            image, text = self.cross(image, text, mask)
            outputs.append(image.mean(dim=1))
            outputs.append(self._merge_text(text, masks))
        elif self.has_image:
            outputs.append(self._image_tower(features).mean(dim=1))
        elif self.has_general or self.n_text > 0:
            text, _, masks = self._text_tower(features)
            outputs.append(self._merge_text(text, masks))
        if self.has_other:
            outputs.append(self._other_output(features))
        return torch.cat(outputs, dim=1)


class Uniter(_MultiModalInputs):
    """UNITER (Chen et al., ECCV 2020) as EasyRec's Uniter: the image features, the general
    features and each text sequence become tokens of ``hidden_size`` with token-type (when more
    than one kind of token is present) and position embeddings; a [CLS] token is prepended;
    one transformer encoder over all of them; the [CLS] output (with ``other`` appended) goes
    through ``final_dnn`` and the output."""

    def __init__(self, config: PipelineConfig, transform: FeatureTransform, tower=None):
        """``tower``: a UniterTower to build the encoded features only (DBMTL's ``bottom_uniter``)."""
        super().__init__()
        self._set_outputs(config)
        p = tower if tower is not None else config.model_config_.uniter.config
        self._inputs(config, transform, "Uniter", p.max_position_embeddings, p.use_position_embeddings, p.other_feature_dnn)
        hidden = p.hidden_size
        n_towers = int(self.has_image) + int(self.has_general) + int(self.has_text)
        self.use_token_type = n_towers > 1 or self.n_text > 1 or self.n_image > 1
        n_token_types = self.n_text + int(self.has_image) + int(self.has_general)
        self.token_types = nn.Parameter(torch.randn(max(n_token_types, 1), hidden) * p.initializer_range)
        positions = p.max_position_embeddings if p.use_position_embeddings else 0
        if self.has_image and p.use_position_embeddings and self.n_image > p.max_position_embeddings:
            raise FusionrecError(f"Uniter: max_position_embeddings ({p.max_position_embeddings}) is below the {self.n_image} image features")
        self.image_projection = dense(self.image_dim, hidden) if self.image_dim not in (0, hidden) else nn.Identity()
        self.image_post = EmbeddingPostprocessor(hidden, positions, p.hidden_dropout_prob, p.initializer_range)
        self.general_projection = dense(self.general_dim, hidden) if self.general_dim not in (0, hidden) else nn.Identity()
        self.general_post = EmbeddingPostprocessor(hidden, 0, p.hidden_dropout_prob, p.initializer_range)
        self.text_projections = nn.ModuleList(
            dense(self.text_dim, hidden) if self.text_dim != hidden else nn.Identity() for _ in range(self.n_text))
        self.text_post = nn.ModuleList(
            EmbeddingPostprocessor(hidden, positions, p.hidden_dropout_prob, p.initializer_range) for _ in range(self.n_text))
        self.has_tokens = n_towers > 0
        self.cls = nn.Parameter(torch.empty(1, 1, hidden).uniform_(-math.sqrt(6.0 / (1 + hidden)), math.sqrt(6.0 / (1 + hidden))))
        self.encoder = TransformerEncoder(hidden, p.num_hidden_layers, p.num_attention_heads, p.intermediate_size, p.hidden_act,
                                          p.hidden_dropout_prob, p.attention_probs_dropout_prob, p.initializer_range)  # fmt: skip
        self.out_dim = (hidden if self.has_tokens else 0) + self.other_dim
        self.final = _mlp(self.out_dim, config.model_config_.uniter.final_dnn if tower is None else None)
        self.head = nn.Linear(self.final.out_dim, self.n_outputs) if tower is None else nn.Identity()

    def _token_type(self, i: int) -> Optional[Tensor]:
        return self.token_types[i] if self.use_token_type else None

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        return self._logits(self.head(self.final(self.fused(features))))

    def fused(self, features: Dict[str, Tensor]) -> Tensor:
        """[CLS] after the encoder (and the other features), before final_dnn."""
        outputs: List[Tensor] = []
        if self.has_tokens:
            tokens: List[Tensor] = []
            masks: List[Tensor] = []
            type_id = 0
            if self.has_image:  # token type 0
                x = self.image(features)
                x = self.image_projection(x.view(x.shape[0], self.n_image, self.image_dim))
                tokens.append(self.image_post(x, self._token_type(0)))
                masks.append(torch.ones(x.shape[0], x.shape[1], dtype=torch.bool))
                type_id = 1
            if self.has_general:
                x = self.general_projection(torch.stack(self.general.fields(features), dim=1))
                tokens.append(self.general_post(x, self._token_type(type_id)))
                masks.append(torch.ones(x.shape[0], x.shape[1], dtype=torch.bool))
                type_id += 1
            embedded, seq_masks = self._text_sequences(features)
            i = 0
            for projection, post in zip(self.text_projections, self.text_post):
                tokens.append(post(projection(embedded[i]), self._token_type(type_id + i)))
                masks.append(seq_masks[i])
                i += 1
            batch = tokens[0].shape[0]
            tokens.insert(0, self.cls.expand(batch, -1, -1))
            masks.insert(0, torch.ones(batch, 1, dtype=torch.bool))
            encoded = self.encoder(torch.cat(tokens, dim=1), torch.cat(masks, dim=1))
            outputs.append(encoded[:, 0])
        if self.has_other:
            outputs.append(self._other_output(features))
        return torch.cat(outputs, dim=1)


class MultiTower(_Base):
    """EasyRec's MultiTower, MultiTowerDIN and MultiTowerBST: each of ``towers`` is a batch
    norm over its group, then its DNN; each of ``din_towers`` is DIN target attention over a
    seq_att_group, scored by the tower's dnn (its last unit, 1, linear), giving [attended
    history, candidate]; each of ``bst_towers`` is BST over a seq_att_group. The tower outputs,
    concatenated, go through ``final_dnn`` and the output layer."""

    def __init__(self, config: PipelineConfig, transform: FeatureTransform):
        super().__init__()
        self._set_outputs(config)
        model_config = config.model_config_
        params = model_config.multi_tower
        groups, tables = self._groups(config, transform, None)
        seq_groups = {seq_group.group_name or "seq_att": seq_group for seq_group in model_config.seq_att_groups}
        inputs: List[nn.Module] = []
        towers: List[nn.Module] = []
        for tower in params.towers:
            group = self._group(groups, tower.input, "multi_tower.towers")
            inputs.append(group)
            towers.append(nn.Sequential(nn.BatchNorm1d(group.out_dim), _mlp(group.out_dim, tower.dnn)))
        # EasyRec's MultiTower reads `towers` only; din_towers and bst_towers belong to MultiTowerDIN / MultiTowerBST
        kind = model_config.model_class
        din_towers = params.din_towers if kind in ("MultiTowerDIN", "DIN") else []
        bst_towers = params.bst_towers if kind == "MultiTowerBST" else []
        for tower in list(din_towers) + list(bst_towers):
            if tower.input not in seq_groups:
                raise FusionrecError(
                    f"multi_tower: tower input {tower.input!r} is not a seq_att_groups group_name; those are {sorted(seq_groups)}"
                )
            where = f"seq_att_groups {tower.input!r}"
            if isinstance(tower, BSTTower):
                slot = tables.bst(seq_groups[tower.input], where, tower.seq_len, tower.multi_head_size)
            else:
                slot = tables.din(seq_groups[tower.input], where, attention_dnn=tower.dnn)
            inputs.append(slot)
            towers.append(nn.Identity())
        if not towers:
            raise FusionrecError(f"multi_tower: {kind} needs at least one tower")
        self.inputs = nn.ModuleList(inputs)
        self.towers = nn.ModuleList(towers)
        width = sum(t[1].out_dim if isinstance(t, nn.Sequential) else i.out_dim for t, i in zip(towers, inputs))
        self.final = _mlp(width, params.final_dnn)
        self.head = nn.Linear(self.final.out_dim, self.n_outputs)

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        outputs: List[Tensor] = []
        for group in self.inputs:
            outputs.append(group(features))
        tower_outputs: List[Tensor] = []
        j = 0
        for tower in self.towers:
            tower_outputs.append(tower(outputs[j]))
            j += 1
        return self._logits(self.head(self.final(torch.cat(tower_outputs, dim=1))))


def build_model(config: PipelineConfig, transform: FeatureTransform) -> nn.Module:
    """The model of ``model_config.model_class``, as its ``MODEL_SPECS`` entry names it."""
    module_name, attribute = config.model_config_.spec.module.split(":")
    return getattr(importlib.import_module(module_name), attribute)(config, transform)


class ScoringModel(nn.Module):
    """What export writes: raw column tensors -> the served score (probabilities, or y for a
    regression; a multi-task model's first tower's) and every output EasyRec's exported model
    has. Needs no fusionrec code to run; runs eagerly as well (a pipeline scores its folds so)."""

    # typed here, not by value (TorchScript cannot type an empty list from its value); as
    # objects, not the strings ``from __future__ import annotations`` would make of them
    __annotations__ = {"head_params": List[float], "heads_params": Dict[str, List[float]]}

    def __init__(self, transform: FeatureTransform, model: nn.Module, head_tasks: Dict[str, Task]):
        super().__init__()
        self.transform = transform
        self.model = model
        served = next(iter(head_tasks.values()))
        self.head = served.head
        self.squash = served.squash
        self.head_params = list(served.head_params)
        self.heads: Dict[str, str] = {suffix: task.head for suffix, task in head_tasks.items()}
        self.head_squash: Dict[str, bool] = {suffix: task.squash for suffix, task in head_tasks.items()}
        self.heads_params = {suffix: list(task.head_params) for suffix, task in head_tasks.items()}

    def forward(self, columns: Dict[str, Tensor]) -> Tensor:
        return task_score(self.model(self.transform(columns)), self.head, self.squash, self.head_params)

    @torch.jit.export
    def forward_with_counts(self, columns: Dict[str, Tensor]) -> Tuple[Tensor, Dict[str, Tensor]]:
        """The score and the batch's per-feature counts (out of vocabulary, truncated)."""
        features = self.transform(columns)
        return task_score(self.model(features), self.head, self.squash, self.head_params), feature_counts(features)

    @torch.jit.export
    def outputs_with_counts(self, columns: Dict[str, Tensor]) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        """Every output by name (``Task.output_names`` per head, and a model's
        ``derived_outputs``) and the batch's per-feature counts."""
        features = self.transform(columns)
        outputs: Dict[str, Tensor] = {}
        for suffix, logits in self.model.forward_heads(features).items():
            head_outputs = task_outputs(logits, self.heads[suffix], self.head_squash[suffix], self.heads_params[suffix])
            for name, value in head_outputs.items():
                outputs[output_name(name, suffix)] = value
        for name, value in self.model.derived_outputs(outputs).items():
            outputs[name] = value
        return outputs, feature_counts(features)

"""Stage 3: feature ids -> embeddings, assembled per feature group (EasyRec's input layer).

A DEEP group concatenates its features' embeddings (a dense RawFeature contributes its
value) and, for each ``sequence_features`` entry, the DIN attention output of its
``seq_att_map``. A WIDE group gives each feature a table of width ``wide_output_dim`` and
sums them. Features with the same ``embedding_name`` share one table.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from fusionrec.ctr.config import DNN, FeatureConfig, FeatureGroupConfig, SeqAttGroupConfig
from fusionrec.ctr.features import FeatureTransform
from fusionrec.ctr.modules.din import DINAttention
from fusionrec.ctr.modules.dropout import VariationalDropout
from fusionrec.ctr.modules.sequence import BehaviorSequenceTransformer, TextCNN
from fusionrec.ctr.modules.tf_defaults import embedding_init_
from fusionrec.errors import FusionrecError


def lookup(weight: Tensor, sparse: bool, ids: Tensor) -> Tensor:
    """Embedding rows of ``ids``, looking each distinct id up once: the table's sparse gradient then has one
    row per distinct id, so the optimizer does not coalesce duplicates (most of a batch's ids
    repeat: popular items, and the same history lists in many rows)."""
    if not (torch.is_grad_enabled() and weight.requires_grad):  # scoring: no gradient to keep small
        return torch.nn.functional.embedding(ids, weight)
    unique, inverse = torch.unique(ids, return_inverse=True)
    rows = torch.nn.functional.embedding(unique, weight, sparse=sparse)
    # index_select's backward is one index_add_ (advanced indexing's is a slower index_put_)
    return rows.index_select(0, inverse.reshape(-1)).view(inverse.shape + (rows.shape[1],))


class IdSlot(nn.Module):
    def __init__(self, name: str, table: nn.Embedding):
        super().__init__()
        self.name = name
        self.table = table
        self.out_dim = table.embedding_dim

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        return lookup(self.table.weight, self.table.sparse, features[self.name])


class BagSlot(nn.Module):
    """Multi-value feature pooled over its valid positions (``combiner`` sum or mean). A
    weighted TagFeature (``kv_separator``) pools as TensorFlow's weighted embedding: sum of
    weight x embedding; under ``mean`` non-positive weights are dropped (safe_embedding_lookup_sparse)
    and the sum is divided by the remaining weights' sum."""

    def __init__(self, name: str, table: nn.Embedding, mean: bool, weighted: bool = False, scaled: bool = False,
                 multi_value: bool = False):  # fmt: skip
        super().__init__()
        self.name = name
        self.table = table
        self.mean = mean
        self.weighted = weighted
        self.scaled = scaled  # a RawFeature sequence: each position's number scales its embedding
        self.multi_value = multi_value  # seq_multi_sep: each position's values combined first
        self.out_dim = table.embedding_dim

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        mask = features[self.name + ".mask"].to(torch.float32).unsqueeze(2)
        if self.multi_value:
            values = lookup(self.table.weight, self.table.sparse, features[self.name])
            if self.scaled:  # a 3-D raw sequence: sum_k number_k x row k per position
                values = values * features[self.name + ".weight"].unsqueeze(3)
            positions = combine_positions(values, features[self.name + ".multi_mask"], self.mean and not self.scaled)
            pooled = (positions * mask).sum(dim=1)
            return pooled / mask.sum(dim=1).clamp(min=1.0) if self.mean else pooled
        if self.scaled:
            embedded = lookup(self.table.weight, self.table.sparse, features[self.name]) * features[self.name + ".weight"].unsqueeze(2)
            pooled = (embedded * mask).sum(dim=1)
            return pooled / mask.sum(dim=1).clamp(min=1.0) if self.mean else pooled
        if self.weighted:
            weights = features[self.name + ".weight"].unsqueeze(2)
            mask = mask * (weights.clamp(min=0.0) if self.mean else weights)
        pooled = (lookup(self.table.weight, self.table.sparse, features[self.name]) * mask).sum(dim=1)
        if self.mean:
            pooled = pooled / mask.sum(dim=1).clamp(min=1.0 if not self.weighted else 1e-30)
        return pooled


class SequenceSlot(nn.Module):
    """A SequenceFeature's embedded positions, not pooled: (B x L x D, zeros where padded; the
    B x L mask). The text input of CMBF and Uniter."""

    def __init__(self, name: str, table: nn.Embedding):
        super().__init__()
        self.name = name
        self.table = table
        self.out_dim = table.embedding_dim

    def forward(self, features: Dict[str, Tensor]) -> Tuple[Tensor, Tensor]:
        mask = features[self.name + ".mask"]
        embedded = lookup(self.table.weight, self.table.sparse, features[self.name])
        return embedded * mask.unsqueeze(2).to(embedded.dtype), mask


class AttentionPoolSlot(nn.Module):
    """A SequenceFeature with EasyRec's ``sequence_combiner { attention {} }``: a linear score
    per position (no bias), softmax over the valid positions, the weighted sum of the
    embeddings (zeros for an empty sequence)."""

    def __init__(self, name: str, table: nn.Embedding):
        super().__init__()
        self.name = name
        self.table = table
        self.score = nn.Linear(table.embedding_dim, 1, bias=False)
        self.out_dim = table.embedding_dim

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        mask = features[self.name + ".mask"]
        embedded = lookup(self.table.weight, self.table.sparse, features[self.name])
        scores = self.score(embedded).squeeze(2).masked_fill(~mask, -1e9)
        weights = torch.softmax(scores, dim=1) * mask.to(embedded.dtype)
        return torch.bmm(weights.unsqueeze(1), embedded).squeeze(1)


class TextCNNSlot(nn.Module):
    """A SequenceFeature with EasyRec's ``sequence_combiner { text_cnn {...} }``: the embedded
    sequence (padded positions zero) through ``fusionrec.ctr.modules.sequence.TextCNN``."""

    def __init__(self, name: str, table: nn.Embedding, filter_sizes: List[int], num_filters: List[int],
                 pad_sequence_length: int, activation: str):  # fmt: skip
        super().__init__()
        self.name = name
        self.table = table
        self.cnn = TextCNN(table.embedding_dim, filter_sizes, num_filters, pad_sequence_length, activation)
        self.out_dim = self.cnn.out_dim

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        mask = features[self.name + ".mask"]
        embedded = lookup(self.table.weight, self.table.sparse, features[self.name]) * mask.unsqueeze(2).to(torch.float32)
        return self.cnn(embedded)


class DenseSlot(nn.Module):
    """A RawFeature without embedding_dim in a DEEP group: its raw_input_dim values as they are."""

    def __init__(self, name: str, raw_input_dim: int = 1):
        super().__init__()
        self.name = name
        self.out_dim = raw_input_dim

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        return features[self.name]


def combine_positions(embedded: Tensor, multi_mask: Tensor, mean: bool) -> Tensor:
    """(B, L, K, D) embeddings of a seq_multi_sep sequence -> (B, L, D): each position's values
    summed, or averaged (``combiner`` mean), as TensorFlow's embedding column combines a 3-D
    sparse sequence per position; an empty position is zeros."""
    weights = multi_mask.to(embedded.dtype).unsqueeze(3)
    total = (embedded * weights).sum(dim=2)
    return total / weights.sum(dim=2).clamp(min=1.0) if mean else total


class RawProjectionSlot(nn.Module):
    """A RawFeature with embedding_dim in a DEEP group, as EasyRec embeds it: value i weighs row
    i of a raw_input_dim x embedding_dim matrix (TensorFlow's weighted categorical column). The
    combiner ``sum`` adds the weighted rows; ``mean`` first drops non-positive values (as
    safe_embedding_lookup_sparse prunes them) and divides by the sum of the rest (a row
    with none gives zeros)."""

    def __init__(self, name: str, raw_input_dim: int, embedding_dim: int, mean: bool):
        super().__init__()
        self.name = name
        # a dense parameter, not an nn.Embedding: every row takes a gradient in every batch
        self.weight = nn.Parameter(torch.empty(raw_input_dim, embedding_dim))
        embedding_init_(self.weight)  # an embedding column's, as EasyRec's weighted categorical column
        self.mean = mean
        self.out_dim = embedding_dim

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        values = features[self.name]
        if self.mean:
            values = values.clamp(min=0.0)
        weighted = values @ self.weight
        if self.mean:
            weighted = weighted / values.sum(dim=1, keepdim=True).clamp(min=1e-30)
        return weighted


class WideDenseSlot(nn.Module):
    """A dense RawFeature in a WIDE group: EasyRec's wide embedding with combiner sum, i.e. a
    linear map of its raw_input_dim values to ``wide_output_dim``."""

    def __init__(self, name: str, dim: int, raw_input_dim: int = 1):
        super().__init__()
        self.name = name
        self.linear = nn.Linear(raw_input_dim, dim, bias=False)
        self.out_dim = dim

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        return self.linear(features[self.name])


class SequenceGroupSlot(nn.Module):
    """A seq_att_group, as EasyRec's SeqInputLayer reads it: candidate = every seq_att_map's
    key embeddings concatenated (B x D); history = every hist_seq's embeddings concatenated
    (B x L x D; the lists are parallel: equal lengths in each row); the first list's mask.
    Subclasses say what is made of them (DIN attention, BST)."""

    def __init__(self, keys: List[str], hists: List[str], key_tables: List[nn.Embedding], hist_tables: List[nn.Embedding],
                 scaled: Optional[List[bool]] = None):  # fmt: skip
        super().__init__()
        self.keys = keys
        self.hists = hists
        # per hist_seq: a RawFeature sequence whose numbers scale its embeddings
        self.scaled: List[bool] = list(scaled) if scaled is not None else [False] * len(hists)
        # per hist_seq: seq_multi_sep positions of several ids, and whether they average (combiner mean)
        self.multi_value: List[bool] = [False] * len(hists)
        self.multi_mean: List[bool] = [True] * len(hists)
        self.key_tables = nn.ModuleList(key_tables)
        self.hist_tables = nn.ModuleList(hist_tables)
        self.dim = sum(t.embedding_dim for t in key_tables)

    def gather(self, features: Dict[str, Tensor], with_query: bool = True) -> Tuple[Tensor, Tensor, Tensor]:
        query: List[Tensor] = []
        i = 0
        for table in self.key_tables:
            query.append(lookup(table.weight, table.sparse, features[self.keys[i]]))
            i += 1
        history: List[Tensor] = []
        mask = features[self.hists[0] + ".mask"]
        length = mask.shape[1]
        for name in self.hists:
            length = max(length, features[name].shape[1])
        masks: List[Tensor] = []
        j = 0
        for table in self.hist_tables:
            ids = features[self.hists[j]]
            m = features[self.hists[j] + ".mask"]
            pad = length - ids.shape[1]
            if self.multi_value[j]:  # (B, L, K) ids: combined per position, then padded like the others
                values = lookup(table.weight, table.sparse, ids)
                if self.scaled[j]:  # a 3-D raw sequence: sum_k number_k x row k
                    values = values * features[self.hists[j] + ".weight"].unsqueeze(3)
                embedded = combine_positions(values, features[self.hists[j] + ".multi_mask"],
                                             self.multi_mean[j] and not self.scaled[j])  # fmt: skip
                if pad > 0:
                    embedded = torch.nn.functional.pad(embedded, [0, 0, 0, pad])
                    m = torch.nn.functional.pad(m, [0, pad])
            else:
                if pad > 0:  # lists of another max_seq_len: pad to the longest
                    ids = torch.nn.functional.pad(ids, [0, pad])
                    m = torch.nn.functional.pad(m, [0, pad])
                embedded = lookup(table.weight, table.sparse, ids)
                if self.scaled[j]:
                    weight = features[self.hists[j] + ".weight"]
                    if pad > 0:
                        weight = torch.nn.functional.pad(weight, [0, pad])
                    embedded = embedded * weight.unsqueeze(2)
            history.append(embedded)
            masks.append(m)
            j += 1
        mask = masks[0]
        # parallel lists are compared on their lengths before max_seq_len truncated them
        lengths = features[self.hists[0] + ".length"]
        k = 0
        for name in self.hists:
            other = features[name + ".length"]
            if not bool(torch.equal(other, lengths)):
                row = int(torch.nonzero(other != lengths)[0, 0].item())
                raise ValueError(
                    "seq_att_map: hist_seq " + self.hists[0] + " and " + self.hists[k] + " must be parallel lists; batch row "
                    + str(row) + " has " + str(int(lengths[row].item())) + " and " + str(int(other[row].item())) + " values"
                )
            k += 1
        return (torch.cat(query, dim=1) if with_query else mask), torch.cat(history, dim=2), mask


class SequenceInputSlot(SequenceGroupSlot):
    """[history (B, L, D), position mask (B, L), target (B, Dt)] of a feature group: EasyRec's
    ``output_seq_and_normal_feature`` input layer, as the backbone's DIN and TextCNN read it
    (the target absent when the group has only sequences)."""

    def __init__(self, keys: List[str], hists: List[str], key_tables: List[nn.Embedding], hist_tables: List[nn.Embedding],
                 scaled: List[bool]):  # fmt: skip
        super().__init__(keys, hists, key_tables, hist_tables, scaled)
        self.has_target = len(keys) > 0
        self.history_dim = sum(t.embedding_dim for t in hist_tables)

    def forward(self, features: Dict[str, Tensor]) -> List[Tensor]:
        if self.has_target:
            target, history, mask = self.gather(features)
            return [history, mask, target]
        _, history, mask = self.gather(features, False)
        return [history, mask]


class DINSlot(SequenceGroupSlot):
    """DIN target attention over a seq_att_group, as EasyRec's target attention returns it:
    [attended hist_seq, attended aux_hist_seq (with hist_seq's weights), candidate] (the
    candidate left out without ``need_key_feature``). With ``allow_key_transform`` keys of
    another width than the history pass a linear map to it first (and are output so)."""

    def __init__(self, keys: List[str], hists: List[str], key_tables: List[nn.Embedding],
                 hist_tables: List[nn.Embedding], attention: DINAttention, scaled: Optional[List[bool]] = None,
                 history_dim: int = 0, key_transform: Optional[nn.Module] = None, need_key: bool = True):  # fmt: skip
        super().__init__(keys, hists, key_tables, hist_tables, scaled)
        self.attention = attention
        total = sum(t.embedding_dim for t in hist_tables)
        self.history_dim = history_dim or total  # the hist_seq part; the rest is aux_hist_seq
        self.has_aux = self.history_dim < total
        self.has_transform = key_transform is not None
        self.key_transform = key_transform if key_transform is not None else nn.Identity()
        self.need_key = need_key
        self.out_dim = total + (self.history_dim if need_key else 0)

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        candidate, history, mask = self.gather(features)
        if self.has_transform:
            candidate = self.key_transform(candidate)
        if self.has_aux:
            attended = self.attention(candidate, history[:, :, : self.history_dim], mask, history)
        else:
            attended = self.attention(candidate, history, mask)
        if self.need_key:
            return torch.cat([attended, candidate], dim=1)
        return attended


class BSTSlot(SequenceGroupSlot):
    """A seq_att_group through EasyRec's behaviour sequence transformer (MultiTowerBST's bst_towers)."""

    def __init__(self, keys: List[str], hists: List[str], key_tables: List[nn.Embedding],
                 hist_tables: List[nn.Embedding], transformer: BehaviorSequenceTransformer,
                 scaled: Optional[List[bool]] = None):  # fmt: skip
        super().__init__(keys, hists, key_tables, hist_tables, scaled)
        self.transformer = transformer
        self.out_dim = transformer.out_dim

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        candidate, history, mask = self.gather(features)
        return self.transformer(candidate, history, mask)


# EasyRec's seq_dnn when a sequence_features group sets none (easy_rec/python/layers/input_layer.py)
EASYREC_SEQ_DNN_UNITS = (128, 64, 32, 1)


def din_attention(dim: int, dnn: DNN, score_activation: bool, where: str) -> DINAttention:
    """DIN attention from an EasyRec DNN whose hidden_units end with the score unit (1)."""
    units = list(dnn.hidden_units)
    if not units or units[-1] != 1:
        raise FusionrecError(f"{where}: hidden_units {units} must end with 1, the attention score of each history item")
    ratios = list(dnn.dropout_ratio)[:-1] if dnn.dropout_ratio else []
    return DINAttention(dim, units[:-1], dnn.activation, dnn.use_bn, ratios, score_activation)


class GroupInput(nn.Module):
    """One feature group: its slots' outputs, concatenated (DEEP) or summed (WIDE)."""

    __jit_ignored_attributes__ = ["field_dims"]  # possibly empty: TorchScript cannot type it

    def __init__(self, name: str, slots: List[nn.Module], wide: bool, dropout: VariationalDropout | None = None):
        super().__init__()
        self.group_name = name
        self.slots = nn.ModuleList(slots)
        self.wide = wide
        dims = [s.out_dim for s in slots]
        self.field_dims = dims
        self.split_sizes = dims if dims else [0]
        self.out_dim = (dims[0] if dims else 0) if wide else sum(dims)
        # EasyRec's variational_dropout acts on the group's concatenated output, before any sum
        self.has_dropout = dropout is not None
        self.dropout = dropout if dropout is not None else nn.Identity()

    def fields(self, features: Dict[str, Tensor]) -> List[Tensor]:
        out: List[Tensor] = []
        for slot in self.slots:
            out.append(slot(features))
        if self.has_dropout:
            noisy = self.dropout(torch.cat(out, dim=1))
            out = list(noisy.split(self.split_sizes, dim=1))
        return out

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        parts = self.fields(features)
        if self.wide:
            total = parts[0]
            for p in parts[1:]:
                total = total + p
            return total
        return torch.cat(parts, dim=1)


def _scaled(feature) -> bool:
    """A RawFeature sequence of unbucketized numbers: each number scales its embedding."""
    return feature.is_raw_sequence and not feature.bucket_boundaries


class EmbeddingTables:
    """Builds (and shares) the embedding tables while the groups are assembled."""

    def __init__(self, features: list[FeatureConfig], transform: FeatureTransform, variational_dropout=None):
        self.features: dict[str, FeatureConfig] = {f.name: f for f in features}
        self.transform = transform
        self.variational_dropout = variational_dropout
        self.tables: dict[str, nn.Embedding] = {}
        self._shape: dict[str, tuple[int, int, str]] = {}

    def table(self, name: str, wide_dim: int | None = None) -> nn.Embedding:
        feature = self.features[name]
        rows = self.transform.features[name].n_ids
        dim = wide_dim if wide_dim is not None else feature.embedding_dim
        key = (feature.embedding_name or name) + ("__wide" if wide_dim is not None else "")
        if key in self._shape:
            old_rows, old_dim, old_feature = self._shape[key]
            if (old_rows, old_dim) != (rows, dim):
                raise FusionrecError(
                    f"embedding_name {feature.embedding_name!r}: features {old_feature!r} ({old_rows} ids x {old_dim}) "
                    f"and {name!r} ({rows} ids x {dim}) share a table but differ in size"
                )
            return self.tables[key]
        table = nn.Embedding(rows, dim)
        # EasyRec's embedding_column initializer, the wide part's (an embedding column of
        # wide_output_dim) included
        embedding_init_(table.weight)
        self.tables[key] = table
        self._shape[key] = (rows, dim, name)
        return table

    def slot(self, name: str, wide_dim: int | None) -> nn.Module:
        feature = self.features[name]
        output = feature.rules.output(feature)
        if output == "value":  # a computed number, as EasyRec's numeric column
            return WideDenseSlot(name, wide_dim) if wide_dim is not None else DenseSlot(name)
        if output == "dense":
            if wide_dim is not None:
                return WideDenseSlot(name, wide_dim, feature.raw_input_dim)
            if feature.embedding_dim == 0:
                return DenseSlot(name, feature.raw_input_dim)
            return RawProjectionSlot(name, feature.raw_input_dim, feature.embedding_dim, feature.combiner == "mean")
        table = self.table(name, wide_dim)
        combiner = feature.sequence_combiner
        if combiner is not None and _scaled(feature):
            raise FusionrecError(f"feature {name!r}: a sequence_combiner over a RawFeature sequence of unbucketized numbers "
                                 "is not implemented yet by fusionrec")  # fmt: skip
        if combiner is not None and combiner.attention is not None:
            return AttentionPoolSlot(name, table)
        if combiner is not None and combiner.text_cnn is not None:
            cnn = combiner.text_cnn
            return TextCNNSlot(name, table, cnn.filter_sizes, cnn.num_filters, cnn.pad_sequence_length, cnn.activation)
        if output == "bag":
            return BagSlot(name, table, feature.combiner == "mean", weighted=feature.rules.weighted(feature),
                           scaled=_scaled(feature), multi_value=feature.seq_multi_sep is not None)  # fmt: skip
        return IdSlot(name, table)

    def sequence(self, name: str, where: str) -> SequenceSlot:
        feature = self.features[name]
        if not feature.rules.sequence:
            raise FusionrecError(f"{where}: feature {name!r} is a {feature.feature_type}; the text group takes SequenceFeature / TagFeature")
        if _scaled(feature) or feature.seq_multi_sep is not None:
            raise FusionrecError(f"{where}: feature {name!r}: a RawFeature sequence of unbucketized numbers or a "
                                 "seq_multi_sep sequence is not implemented yet by fusionrec here")  # fmt: skip
        return SequenceSlot(name, self.table(name))

    def _sequence_group(self, seq_group: SeqAttGroupConfig, where: str):
        """(keys, hist_seq, their tables) of every seq_att_map of ``seq_group``, checked."""
        keys = [name for att in seq_group.seq_att_map for name in att.key]
        # the aux_hist_seq come last: DINSlot attends them with hist_seq's weights
        hists = [name for att in seq_group.seq_att_map for name in att.hist_seq] + [
            name for att in seq_group.seq_att_map for name in att.aux_hist_seq]
        for name in keys:
            if not self.features[name].rules.can_be_key(self.features[name]):
                raise FusionrecError(f"{where}: seq_att_map key {name!r} must be an IdFeature (or a bucketized RawFeature)")
        for name in hists:
            if not self.features[name].rules.sequence:
                raise FusionrecError(f"{where}: seq_att_map hist_seq {name!r} must be a SequenceFeature")
        key_tables = [self.table(n) for n in keys]
        hist_tables = [self.table(n) for n in hists]
        key_dim = sum(t.embedding_dim for t in key_tables)
        n_main = sum(len(att.hist_seq) for att in seq_group.seq_att_map)
        hist_dim = sum(t.embedding_dim for t in hist_tables[:n_main])
        aux_dims = [t.embedding_dim for t in hist_tables[n_main:]]
        if key_dim != hist_dim and not seq_group.allow_key_transform:
            raise FusionrecError(
                f"{where}: seq_att_map keys {keys} have embedding width {key_dim} but hist_seq {hists[:n_main]} have "
                f"{hist_dim}; they must match (or set allow_key_transform)"
            )
        if aux_dims and sum(aux_dims) != hist_dim:
            raise FusionrecError(f"{where}: aux_hist_seq {hists[n_main:]} have width {sum(aux_dims)}; EasyRec reads them at "
                                 f"the hist_seq width {hist_dim}")  # fmt: skip
        return keys, hists, key_tables, hist_tables, key_dim, [_scaled(self.features[n]) for n in hists]

    def din(self, seq_group: SeqAttGroupConfig, where: str, attention_dnn: DNN | None = None) -> DINSlot:
        """DIN over a seq_att_group. The attention DNN is the group's seq_dnn (EasyRec's default
        [128, 64, 32, 1] when unset) or, for a MultiTowerDIN din tower, its dnn."""
        if attention_dnn is not None and seq_group.has_options:
            raise FusionrecError(f"{where}: need_key_feature, allow_key_transform and aux_hist_seq are a feature group's "
                                 "sequence_features options; in a din tower they are not supported")  # fmt: skip
        keys, hists, key_tables, hist_tables, key_dim, scaled = self._sequence_group(seq_group, where)
        n_main = sum(len(att.hist_seq) for att in seq_group.seq_att_map)
        history_dim = sum(t.embedding_dim for t in hist_tables[:n_main])
        transform = nn.Linear(key_dim, history_dim) if key_dim != history_dim else None  # allow_key_transform
        if attention_dnn is None:  # a feature group's sequence_features: seq_dnn, every layer with its activation
            dnn = seq_group.seq_dnn if seq_group.seq_dnn is not None else DNN(hidden_units=list(EASYREC_SEQ_DNN_UNITS))
            attention = din_attention(history_dim, dnn, True, f"{where} seq_dnn")
        else:  # MultiTowerDIN's din tower: its dnn, the score unit linear
            attention = din_attention(key_dim, attention_dnn, False, f"{where} din_towers dnn")
        slot = DINSlot(keys, hists, key_tables, hist_tables, attention, scaled, history_dim, transform, seq_group.need_key_feature)
        return self._multi_values(slot)

    def bst(self, seq_group: SeqAttGroupConfig, where: str, seq_len: int, multi_head_size: int) -> BSTSlot:
        if seq_group.has_options:
            raise FusionrecError(f"{where}: need_key_feature, allow_key_transform and aux_hist_seq are a feature group's "
                                 "sequence_features options; with BST they are not supported")  # fmt: skip
        keys, hists, key_tables, hist_tables, key_dim, scaled = self._sequence_group(seq_group, where)
        return self._multi_values(BSTSlot(keys, hists, key_tables, hist_tables,
                                          BehaviorSequenceTransformer(key_dim, seq_len, multi_head_size), scaled))  # fmt: skip

    def sequence_input(self, group: FeatureGroupConfig, where: str) -> "SequenceInputSlot":
        """A feature group read as EasyRec's ``output_seq_and_normal_feature`` input layer: its
        sequences (SequenceFeature / TagFeature, parallel lists) concatenated per position, and
        its other features (the target) concatenated."""
        sequences = [n for n in group.feature_names if self.features[n].rules.sequence]
        targets = [n for n in group.feature_names if n not in sequences]
        if not sequences:
            raise FusionrecError(f"{where}: feature group {group.group_name!r} has no SequenceFeature for its sequence input")
        for name in targets:
            feature = self.features[name]
            if not feature.rules.can_be_key(feature):
                raise FusionrecError(f"{where}: target feature {name!r} must be an IdFeature (or a bucketized RawFeature)")
        slot = SequenceInputSlot(targets, sequences, [self.table(n) for n in targets], [self.table(n) for n in sequences],
                                 [_scaled(self.features[n]) for n in sequences])  # fmt: skip
        return self._multi_values(slot)

    def _multi_values(self, slot: SequenceGroupSlot) -> SequenceGroupSlot:
        """Mark the seq_multi_sep hist_seq lists of a sequence group slot."""
        slot.multi_value = [self.features[n].seq_multi_sep is not None for n in slot.hists]
        slot.multi_mean = [self.features[n].combiner == "mean" for n in slot.hists]
        return slot

    def group(self, group: FeatureGroupConfig, wide_dim: int | None) -> GroupInput:
        wide = group.wide_deep == "WIDE"
        if wide and wide_dim is None:
            raise FusionrecError(f"feature_groups {group.group_name!r}: WIDE groups need a model with wide_output_dim")
        slots = [self.slot(name, wide_dim if wide else None) for name in group.feature_names]
        for seq_group in group.sequence_features:
            if wide:
                raise FusionrecError(f"feature_groups {group.group_name!r}: sequence_features belong in a DEEP group")
            slots.append(self.din(seq_group, f"feature_groups {group.group_name!r}"))
        if not slots:
            raise FusionrecError(f"feature_groups {group.group_name!r}: has no features")
        dropout = None
        if self.variational_dropout is not None:
            vd = self.variational_dropout
            dropout = VariationalDropout([s.out_dim for s in slots], vd.regularization_lambda,
                                         vd.embedding_wise_variational_dropout)  # fmt: skip
        return GroupInput(group.group_name, slots, wide, dropout)

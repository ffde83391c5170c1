"""Pipeline configs: EasyRec `.config` (protobuf text format) or YAML, into one typed config.

Both front ends use EasyRec's field names. A `.config` is read as EasyRec reads it
(``text_format.Merge`` semantics, see ``fusionrec.ctr.textformat``) into plain data, and
validated by the same pydantic models as a YAML file, so the two cannot drift apart. Every
field of EasyRec's messages is known (``EASYREC_MESSAGES``): implemented, accepted with no
effect, or refused by name. Errors name the file, the line (text format) and the field's path
(``model_config.wide_and_deep.dnn.hidden_units``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from fusionrec.ctr.expressions import compile_expression
from fusionrec.ctr.tasks import BINARY, LOSS_TYPE_TASKS, MULTICLASS, REGRESSION, SHAPING_LOSS_CLASSES, ZILN, Task
from fusionrec.ctr.textformat import field_model, parse, shape, yaml_with_lines
from fusionrec.errors import FusionrecError

def _only_implemented(field: str, value, implemented, meaning: str):
    """``value`` when it is the one EasyRec value fusionrec implements; otherwise refused by name."""
    if value != implemented:
        raise ValueError(f"{field} {value!r} is not implemented yet by fusionrec ({implemented!r}: {meaning})")
    return value


@dataclass(frozen=True)
class EasyRecMessage:
    """How fusionrec treats one EasyRec message (easy_rec/python/protos). Each of its fields is
    a field of the pydantic model (implemented, or accepted with no effect: docs/ctr.md lists
    those), or in ``no_effect`` (accepted and dropped: it tunes TensorFlow, PAI or a cluster),
    or in ``not_implemented`` (refused by name). tests/ctr/test_easyrec_schema.py walks
    EasyRec's protos and checks that no field is left out."""

    name: str
    no_effect: frozenset[str] = frozenset()
    not_implemented: frozenset[str] = frozenset()


def _message(name: str, no_effect: str = "", not_implemented: str = "") -> EasyRecMessage:
    return EasyRecMessage(name, frozenset(no_effect.split()), frozenset(not_implemented.split()))


def _known_activation(value: str) -> str:
    from fusionrec.ctr.layers import ACTIVATIONS

    if value not in ACTIVATIONS:
        raise ValueError(f"activation {value!r} is not one of {sorted(ACTIVATIONS)}")
    return value


# an activation name EasyRec writes (tf.nn.relu, relu, dice, linear, ...), checked against fusionrec.ctr.layers.ACTIVATIONS
Activation = Annotated[str, AfterValidator(_known_activation)]


class _Strict(BaseModel):
    # inf and nan are refused in every float field (a learning_rate of inf trains to a NaN loss)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


FieldType = Literal["INT32", "INT64", "STRING", "FLOAT", "DOUBLE", "BOOL"]


_RANGE_NAME = re.compile(r"([a-zA-Z_]+)\[([0-9]+)-([0-9]+)\]")


def expand_range_name(name: str) -> list[str]:
    """EasyRec's name ranges: ``field[1-3]`` stands for field1, field2, field3 (in a feature
    group's feature_names, and in input_fields under auto_expand_input_fields)."""
    match = _RANGE_NAME.fullmatch(name)
    if not match:
        return [name]
    prefix, first, last = match.group(1), int(match.group(2)), int(match.group(3))
    return [f"{prefix}{i}" for i in range(first, last + 1)]


class AttentionCombinerConfig(_Strict):
    """EasyRec's AttentionCombiner has no fields (``attention {}``)."""


class InputField(_Strict):
    input_name: str
    input_type: FieldType = "STRING"
    default_val: str | None = None


# EasyRec's input types that fusionrec reads: the V2 variants read the same files (their
# differences are TensorFlow's readers).
INPUT_TYPES = frozenset({"CSVInput", "CSVInputV2", "ParquetInput", "ParquetInputV2"})


class DataConfig(_Strict):
    batch_size: int = Field(32, ge=1)
    input_fields: list[InputField] = Field(min_length=1)
    label_fields: list[str] = Field(min_length=1)
    shuffle: bool = True
    shuffle_buffer_size: int = Field(32, ge=1)
    num_epochs: int = Field(0, ge=0)
    prefetch_size: int = Field(32, ge=1)
    input_type: str = "CSVInput"
    separator: str = ","
    num_parallel_calls: int = 8
    ignore_error: bool = False
    with_header: bool = False
    sample_weight: str | None = None
    shard: bool = False
    chief_redundant: bool = False
    pai_worker_queue: bool = False
    auto_expand_input_fields: bool = False

    @model_validator(mode="after")
    def _names(self):
        if self.auto_expand_input_fields:
            expanded = [f.model_copy(update={"input_name": n}) for f in self.input_fields for n in expand_range_name(f.input_name)]
            if len(expanded) != len(self.input_fields):
                object.__setattr__(self, "input_fields", expanded)
        names = [f.input_name for f in self.input_fields]
        seen = set()
        for name in names:
            if name in seen:
                raise ValueError(f"input_fields: input_name {name!r} appears twice; names must be unique")
            seen.add(name)
        for label in self.label_fields:
            if label not in seen:
                raise ValueError(f"label_fields: {label!r} is not one of the input_fields {names}")
        if self.sample_weight and self.sample_weight not in seen:
            raise ValueError(f"sample_weight: {self.sample_weight!r} is not one of the input_fields")
        if len(self.separator) != 1:
            raise ValueError(f"separator: {self.separator!r} must be one character")
        if self.input_type not in INPUT_TYPES:
            raise ValueError(
                f"input_type {self.input_type!r} is not implemented yet by fusionrec; it reads {sorted(INPUT_TYPES)}"
            )
        return self

    @property
    def is_parquet(self) -> bool:
        return self.input_type in ("ParquetInput", "ParquetInputV2")


FEATURE_TYPES = ("IdFeature", "RawFeature", "TagFeature", "ComboFeature", "SequenceFeature", "ExprFeature", "LookupFeature",
                 "PassThroughFeature")  # fmt: skip
# EasyRec's other feature types: refused by name
EASYREC_FEATURE_TYPES_NOT_IMPLEMENTED: tuple[str, ...] = ()
# dense features: a number (or raw_input_dim numbers) per row
DENSE_FEATURE_TYPES = ("RawFeature", "PassThroughFeature")


class TextCNNConfig(_Strict):
    filter_sizes: list[int] = Field(min_length=1)
    num_filters: list[int] = Field(min_length=1)
    pad_sequence_length: int = Field(0, ge=0)
    activation: str = "relu"

    @model_validator(mode="after")
    def _pairs(self):
        if len(self.filter_sizes) != len(self.num_filters):
            raise ValueError(f"text_cnn: {len(self.filter_sizes)} filter_sizes but {len(self.num_filters)} num_filters")
        if any(v < 1 for v in self.filter_sizes + self.num_filters):
            raise ValueError("text_cnn: filter_sizes and num_filters must be positive")
        from fusionrec.ctr.layers import ACTIVATIONS

        if self.activation not in ACTIVATIONS:
            raise ValueError(f"text_cnn: activation {self.activation!r} is not one of {sorted(ACTIVATIONS)}")
        return self


class SequenceCombinerConfig(_Strict):
    attention: AttentionCombinerConfig | None = None
    text_cnn: TextCNNConfig | None = None

    @model_validator(mode="after")
    def _one(self):
        if (self.attention is None) == (self.text_cnn is None):
            raise ValueError("sequence_combiner: set exactly one of attention, text_cnn")
        return self


class FeatureConfig(_Strict):
    feature_name: str | None = None
    input_names: list[str] = Field(min_length=1)
    feature_type: str = "IdFeature"
    embedding_name: str = ""
    embedding_dim: int = Field(0, ge=0)
    hash_bucket_size: int = Field(0, ge=0, le=2**31 - 1)
    num_buckets: int = Field(0, ge=0, le=2**31 - 1)
    boundaries: list[float] = []
    separator: str = "|"
    max_seq_len: int | None = Field(None, ge=1)
    vocab_file: str | None = None
    vocab_list: list[str] = []
    combiner: Literal["mean", "sum"] = "mean"
    min_val: float = 0.0
    max_val: float = 0.0
    normalizer_fn: str | None = None
    raw_input_dim: int = Field(1, ge=1)
    # a SequenceFeature's elements: ids (IdFeature) or numbers (RawFeature: bucketized by
    # boundaries / num_buckets, else each number weighs one embedding row over sequence_length positions)
    sub_feature_type: Literal["IdFeature", "RawFeature"] = "IdFeature"
    sequence_length: int = Field(1, ge=1)
    seq_multi_sep: str | None = None  # a SequenceFeature position of several values, joined by it
    sequence_combiner: SequenceCombinerConfig | None = None
    combo_join_sep: str = ""
    combo_input_seps: list[str] = []
    expression: str | None = None
    shared_names: list[str] = []
    kv_separator: str | None = None
    lookup_max_sel_elem_num: int = Field(10, ge=1)
    max_partitions: int = 1
    use_embedding_variable: bool = False

    @property
    def name(self) -> str:
        return self.feature_name or self.input_names[0]

    def with_shared_names(self) -> list["FeatureConfig"]:
        """This feature and, for each of EasyRec's ``shared_names``, a feature of the same
        config that reads that input field instead (and is named after it)."""
        copies = [self]
        for shared in self.shared_names:
            update = {"input_names": [shared, *self.input_names[1:]], "shared_names": [],
                      "feature_name": shared if self.feature_name else None}  # fmt: skip
            copies.append(self.model_copy(update=update))
        return copies

    @property
    def is_raw_sequence(self) -> bool:
        """A SequenceFeature of numbers (``sub_feature_type: RawFeature``)."""
        return self.feature_type == "SequenceFeature" and self.sub_feature_type == "RawFeature"

    @property
    def bucket_boundaries(self) -> list[float]:
        """A RawFeature's bucket edges: ``boundaries``, or with ``num_buckets`` > 1 and a
        min_val / max_val range EasyRec's even edges i / num_buckets of the scaled value (of a
        raw sequence's value as it is: EasyRec takes those as already scaled)."""
        if self.boundaries or not (self.feature_type == "RawFeature" or self.is_raw_sequence):
            return list(self.boundaries)
        if self.num_buckets > 1 and self.max_val > self.min_val:
            return [i / self.num_buckets for i in range(self.num_buckets)]
        return []

    @field_validator("boundaries")
    @classmethod
    def _sorted(cls, value):
        if any(b >= a for b, a in zip(value, value[1:])):
            raise ValueError(f"boundaries must be strictly increasing, got {value}")
        return value

    @model_validator(mode="after")
    def _kind(self):
        if self.feature_type not in FEATURE_TYPES:
            known = self.feature_type in EASYREC_FEATURE_TYPES_NOT_IMPLEMENTED
            raise ValueError(
                f"feature {self.name!r}: feature_type {self.feature_type!r} is "
                + ("not implemented yet by fusionrec" if known else "not an EasyRec feature type")
                + f"; fusionrec has {list(FEATURE_TYPES)}"
            )
        kinds = [bool(self.hash_bucket_size), bool(self.num_buckets), bool(self.vocab_list or self.vocab_file)]
        if self.seq_multi_sep is not None:
            if self.feature_type != "SequenceFeature" or len(self.seq_multi_sep.encode()) != 1 or self.seq_multi_sep == self.separator:
                raise ValueError(f"feature {self.name!r}: seq_multi_sep is a SequenceFeature's, one byte other than its separator; "
                                 f"got {self.seq_multi_sep!r} on a {self.feature_type} with separator {self.separator!r}")  # fmt: skip
            if self.is_raw_sequence and not self.bucket_boundaries and self.raw_input_dim < 2:
                raise ValueError(f"feature {self.name!r}: seq_multi_sep on an unbucketized RawFeature sequence holds "
                                 "raw_input_dim numbers per position; set raw_input_dim >= 2 (as EasyRec's 3-D raw sequence)")  # fmt: skip
            if self.sequence_combiner is not None:
                raise ValueError(f"feature {self.name!r}: a sequence_combiner over a seq_multi_sep sequence is not implemented "
                                 "yet by fusionrec")  # fmt: skip
        if self.sub_feature_type != "IdFeature" and self.feature_type != "SequenceFeature":
            raise ValueError(f"feature {self.name!r}: sub_feature_type is a SequenceFeature's, not a {self.feature_type}'s")
        if self.is_raw_sequence:
            if self.hash_bucket_size or self.vocab_list or self.vocab_file:
                raise ValueError(f"feature {self.name!r}: a sub_feature_type RawFeature sequence holds numbers; "
                                 "hash_bucket_size and vocabularies need sub_feature_type IdFeature (as EasyRec asserts)")  # fmt: skip
            if self.embedding_dim == 0:
                raise ValueError(f"feature {self.name!r}: a RawFeature sequence without embedding_dim is not implemented yet "
                                 "by fusionrec")  # fmt: skip
            if self.raw_input_dim != 1 and (self.seq_multi_sep is None or self.bucket_boundaries):
                raise ValueError(f"feature {self.name!r}: a RawFeature sequence of raw_input_dim {self.raw_input_dim} holds "
                                 "that many unbucketized numbers per position, joined by seq_multi_sep; set seq_multi_sep "
                                 "and no boundaries / num_buckets")  # fmt: skip
        elif self.feature_type in ("IdFeature", "TagFeature", "SequenceFeature", "ComboFeature", "LookupFeature"):
            if sum(kinds) != 1:
                raise ValueError(
                    f"feature {self.name!r} ({self.feature_type}): set exactly one of hash_bucket_size, num_buckets, "
                    "vocab_list / vocab_file"
                )
            if self.feature_type == "ComboFeature" and not self.hash_bucket_size:
                raise ValueError(f"feature {self.name!r} (ComboFeature): needs hash_bucket_size")
            if self.embedding_dim == 0:
                raise ValueError(f"feature {self.name!r}: embedding_dim must be > 0")
        if self.feature_type == "ComboFeature" and len(self.input_names) < 2:
            raise ValueError(f"feature {self.name!r} (ComboFeature): needs at least two input_names")
        if self.feature_type == "LookupFeature":
            if len(self.input_names) != 2 or not self.hash_bucket_size or not self.feature_name:
                raise ValueError(
                    f"feature {self.name!r} (LookupFeature): needs a feature_name, hash_bucket_size and two input_names "
                    "(the key field, then the key<kv_separator>value map field)"
                )
            if self.kv_separator is None or len(self.kv_separator.encode()) != 1 or len(self.separator.encode()) != 1:
                raise ValueError(f"feature {self.name!r} (LookupFeature): separator and kv_separator must be single bytes")
        elif self.kv_separator is not None and (self.feature_type != "TagFeature" or len(self.kv_separator.encode()) != 1):
            raise ValueError(
                f"feature {self.name!r}: kv_separator is for TagFeature (key<kv>weight values) and LookupFeature, "
                f"a single byte; got {self.kv_separator!r} on a {self.feature_type}"
            )
        if (self.feature_type == "ExprFeature") != (self.expression is not None):
            raise ValueError(f"feature {self.name!r}: expression is what an ExprFeature computes, and only an ExprFeature's")
        if self.feature_type == "ExprFeature":
            if not self.feature_name:
                raise ValueError(f"feature {self.name!r} (ExprFeature): needs a feature_name")
            compile_expression(self.expression, list(self.input_names))
        elif self.feature_type not in ("ComboFeature", "LookupFeature") and len(self.input_names) != 1:
            raise ValueError(f"feature {self.name!r} ({self.feature_type}): takes exactly one input_names entry")
        if self.feature_type in ("TagFeature", "SequenceFeature") and len(self.separator.encode()) != 1:
            raise ValueError(f"feature {self.name!r}: separator {self.separator!r} must be a single byte")
        if self.min_val > self.max_val:
            raise ValueError(f"feature {self.name!r}: min_val {self.min_val} is greater than max_val {self.max_val}")
        if self.bucket_boundaries and self.embedding_dim == 0:
            raise ValueError(f"feature {self.name!r}: boundaries (or num_buckets) need embedding_dim > 0")
        if self.feature_type == "PassThroughFeature" and (self.boundaries or self.num_buckets or self.embedding_dim
                                                          or self.max_val > self.min_val):  # fmt: skip
            raise ValueError(
                f"feature {self.name!r} (PassThroughFeature): passes its value as it is; boundaries, num_buckets, "
                "embedding_dim and min_val / max_val are RawFeature's"
            )
        if self.raw_input_dim > 1 and self.feature_type not in DENSE_FEATURE_TYPES and not self.is_raw_sequence:
            raise ValueError(f"feature {self.name!r}: raw_input_dim is for RawFeature, not {self.feature_type}")
        if self.raw_input_dim > 1 and self.bucket_boundaries:
            raise ValueError(
                f"feature {self.name!r}: bucketizing a RawFeature of raw_input_dim {self.raw_input_dim} is not "
                "implemented yet by fusionrec"
            )
        if (self.combo_join_sep or self.combo_input_seps) and self.feature_type != "ComboFeature":
            raise ValueError(f"feature {self.name!r}: combo_join_sep / combo_input_seps are for ComboFeature")
        if self.combo_input_seps and (len(self.combo_input_seps) != len(self.input_names)
                                      or any(len(sep.encode()) > 1 for sep in self.combo_input_seps)):  # fmt: skip
            raise ValueError(
                f"feature {self.name!r}: combo_input_seps {self.combo_input_seps} needs one entry per input_names entry "
                f"({len(self.input_names)}), each empty (one value) or a single byte"
            )
        if self.sequence_combiner is not None and self.feature_type != "SequenceFeature":
            raise ValueError(f"feature {self.name!r}: sequence_combiner is for SequenceFeature, not {self.feature_type}")
        if self.raw_input_dim > 1 and len(self.separator.encode()) != 1:
            raise ValueError(f"feature {self.name!r}: separator {self.separator!r} must be a single byte")
        if self.normalizer_fn is not None:
            raise ValueError(
                f"feature {self.name!r}: normalizer_fn (a TensorFlow function) is not supported; "
                "use min_val / max_val to scale to [0, 1]"
            )
        return self


class FeatureConfigV2(_Strict):
    features: list[FeatureConfig] = []


class SeqAttMap(_Strict):
    key: list[str] = Field(min_length=1)
    hist_seq: list[str] = Field(min_length=1)
    # sequences parallel to hist_seq that matching no key: attended with hist_seq's weights
    aux_hist_seq: list[str] = []

    # keys and hist_seq are concatenated, each side; their widths must match (or allow_key_transform):
    # fusionrec.ctr.embedding.EmbeddingTables checks that when the model is built


class AUCMetric(_Strict):
    num_thresholds: int = 200


class GAUCMetric(_Strict):
    uid_field: str
    reduction: Literal["mean", "mean_by_sample_num", "mean_by_positive_num"] = "mean"


class SessionAUCMetric(_Strict):
    session_id_field: str
    reduction: Literal["mean", "mean_by_sample_num", "mean_by_positive_num"] = "mean"


class AccuracyMetric(_Strict):
    threshold: float = 0.5


class _Empty(_Strict):
    pass


class TopKMetric(_Strict):
    topk: int = Field(5, ge=1)


# the metrics each task computes (logloss for the classifiers and mean_squared_error for
# regression are always reported)
TASK_METRICS = {
    BINARY: ("auc", "gauc", "session_auc", "accuracy", "max_f1", "mean_squared_error", "root_mean_squared_error",
             "mean_absolute_error", "recall", "precision"),
    MULTICLASS: ("accuracy", "recall_at_topk", "precision_at_topk"),
    REGRESSION: ("mean_squared_error", "root_mean_squared_error", "mean_absolute_error"),
    # EasyRec's ZILN_LOSS model: AUCs on p(value > 0), errors on the predicted value
    ZILN: ("auc", "gauc", "session_auc", "mean_squared_error", "root_mean_squared_error", "mean_absolute_error"),
}


class EvalMetrics(_Strict):
    auc: AUCMetric | None = None
    gauc: GAUCMetric | None = None
    session_auc: SessionAUCMetric | None = None
    accuracy: AccuracyMetric | None = None
    max_f1: _Empty | None = None
    mean_squared_error: _Empty | None = None
    root_mean_squared_error: _Empty | None = None
    mean_absolute_error: _Empty | None = None
    recall: _Empty | None = None
    precision: _Empty | None = None
    recall_at_topk: TopKMetric | None = None
    precision_at_topk: TopKMetric | None = None

    @property
    def name(self) -> str:
        (name,) = [k for k, v in self if v is not None]
        return name

    @model_validator(mode="after")
    def _one(self):
        chosen = [k for k, v in self if v is not None]
        if len(chosen) != 1:
            raise ValueError(f"metrics_set entry: set exactly one metric, found {chosen or 'none'}")
        return self


class DNN(_Strict):
    hidden_units: list[int] = []
    dropout_ratio: list[float] = []
    activation: str = "tf.nn.relu"
    use_bn: bool = True

    @model_validator(mode="after")
    def _check(self):
        if any(u <= 0 for u in self.hidden_units):
            raise ValueError(f"hidden_units must be positive, got {self.hidden_units}")
        if self.dropout_ratio and len(self.dropout_ratio) != len(self.hidden_units):
            raise ValueError(
                f"dropout_ratio has {len(self.dropout_ratio)} entries for {len(self.hidden_units)} hidden_units"
            )
        if any(not 0.0 <= r < 1.0 for r in self.dropout_ratio):
            raise ValueError(f"dropout_ratio entries must be in [0, 1), got {self.dropout_ratio}")
        from fusionrec.ctr.layers import ACTIVATIONS

        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} is not one of {sorted(ACTIVATIONS)}")
        return self


class SeqAttGroupConfig(_Strict):
    group_name: str | None = None
    seq_att_map: list[SeqAttMap] = Field(min_length=1)
    tf_summary: bool = False
    seq_dnn: DNN | None = None
    allow_key_search: bool = False
    need_key_feature: bool = True  # the output ends with the keys (the candidate)
    allow_key_transform: bool = False  # keys of another width than hist_seq: a linear map to it
    transform_dnn: bool = False  # EasyRec's sequence feature layer does not read it (see docs/ctr.md)

    @property
    def has_options(self) -> bool:
        """Options only a feature group's sequence_features honour (EasyRec's SequenceFeatureLayer)."""
        return (not self.need_key_feature) or self.allow_key_transform or any(att.aux_hist_seq for att in self.seq_att_map)


class FeatureGroupConfig(_Strict):
    group_name: str
    feature_names: list[str] = []
    wide_deep: Literal["DEEP", "WIDE", "WIDE_AND_DEEP"] = "DEEP"
    sequence_features: list[SeqAttGroupConfig] = []

    @field_validator("feature_names")
    @classmethod
    def _expand(cls, value):
        return [name for entry in value for name in expand_range_name(entry)]


class WideAndDeepConfig(_Strict):
    wide_output_dim: int = Field(1, ge=1)
    dnn: DNN
    final_dnn: DNN | None = None
    l2_regularization: float = Field(1e-4, ge=0)


class DeepFMConfig(_Strict):
    dnn: DNN
    final_dnn: DNN | None = None
    wide_output_dim: int = Field(1, ge=1)
    l2_regularization: float = Field(1e-4, ge=0)


class Tower(_Strict):
    input: str
    dnn: DNN


class CrossTower(_Strict):
    input: str
    cross_num: int = Field(3, ge=1)


class DCNConfig(_Strict):
    deep_tower: Tower
    cross_tower: CrossTower
    final_dnn: DNN | None = None
    l2_regularization: float = Field(1e-4, ge=0)


class BSTTower(_Strict):
    input: str
    seq_len: int = Field(5, ge=2)
    multi_head_size: int = Field(4, ge=1)


class MultiTowerConfig(_Strict):
    towers: list[Tower] = []
    din_towers: list[Tower] = []
    bst_towers: list[BSTTower] = []
    final_dnn: DNN | None = None
    l2_regularization: float = Field(1e-4, ge=0)


class FMConfig(_Strict):
    use_variant: bool = False
    l2_regularization: float = Field(1e-4, ge=0)

    @field_validator("use_variant")
    @classmethod
    def _plain(cls, value):
        return _only_implemented("use_variant", value, False, "the plain FM")


class AutoIntConfig(_Strict):
    multi_head_num: int = Field(1, ge=1)
    multi_head_size: int = Field(ge=1)
    interacting_layer_num: int = Field(1, ge=1)
    l2_regularization: float = Field(1e-4, ge=0)


class DLRMConfig(_Strict):
    # as in the paper: bot_dnn over the dense group, top_dnn over the interactions
    top_dnn: DNN
    bot_dnn: DNN
    arch_interaction_op: Literal["dot", "cat"] = "dot"
    arch_interaction_itself: bool = False
    arch_with_dense_feature: bool = False
    l2_regularization: float = Field(1e-5, ge=0)


class CMBFTower(_Strict):
    multi_head_num: int = Field(1, ge=1)
    image_multi_head_num: int = Field(1, ge=1)
    text_multi_head_num: int = Field(1, ge=1)
    text_head_size: int = Field(ge=1)
    image_head_size: int = Field(64, ge=1)
    image_feature_patch_num: int = Field(1, ge=1)
    image_feature_dim: int = Field(0, ge=0)
    image_self_attention_layer_num: int = Field(0, ge=0)
    text_self_attention_layer_num: int = Field(1, ge=0)
    cross_modal_layer_num: int = Field(1, ge=0)
    image_cross_head_size: int = Field(ge=1)
    text_cross_head_size: int = Field(ge=1)
    hidden_dropout_prob: float = Field(0.0, ge=0, lt=1)
    attention_probs_dropout_prob: float = Field(0.0, ge=0, lt=1)
    use_token_type: bool = False
    use_position_embeddings: bool = True
    max_position_embeddings: int = Field(0, ge=0)
    text_seq_emb_dropout_prob: float = Field(0.1, ge=0, lt=1)
    other_feature_dnn: DNN | None = None


class CMBFConfig(_Strict):
    config: CMBFTower
    final_dnn: DNN


class _TransformerParams(_Strict):
    """The BERT encoder fields EasyRec's UNITER tower and BST layer share."""

    hidden_size: int = Field(ge=1)
    num_hidden_layers: int = Field(ge=0)
    num_attention_heads: int = Field(ge=1)
    intermediate_size: int = Field(ge=1)
    hidden_act: Literal["gelu", "relu", "tanh", "swish"] = "gelu"
    hidden_dropout_prob: float = Field(0.1, ge=0, lt=1)
    attention_probs_dropout_prob: float = Field(0.1, ge=0, lt=1)
    use_position_embeddings: bool = True
    initializer_range: float = Field(0.02, gt=0)

    @model_validator(mode="after")
    def _heads(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}")
        return self


class UniterTower(_TransformerParams):
    max_position_embeddings: int = Field(512, ge=0)
    other_feature_dnn: DNN | None = None


class UniterConfig(_Strict):
    config: UniterTower
    final_dnn: DNN


class RocketLaunchingConfig(_Strict):
    share_dnn: DNN | None = None
    booster_dnn: DNN
    light_dnn: DNN
    l2_regularization: float = Field(1e-4, ge=0)
    feature_based_distillation: bool = False
    feature_distillation_function: Literal["COSINE", "INNER_PRODUCT", "EUCLID"] = "COSINE"


class VariationalDropoutConfig(_Strict):
    regularization_lambda: float = Field(0.01, ge=0)
    embedding_wise_variational_dropout: bool = False


class F1ReweightedLoss(_Strict):
    f1_beta_square: float = Field(1.0, gt=0)
    label_smoothing: float = Field(0.0, ge=0, le=1)


class BinaryFocalLoss(_Strict):
    gamma: float = Field(2.0, ge=0)
    alpha: float | None = Field(None, ge=0, le=1)
    ohem_ratio: float = Field(1.0, gt=0, le=1)
    label_smoothing: float = Field(0.0, ge=0, le=1)


class PairwiseLoss(_Strict):
    margin: float = 0.0
    temperature: float = Field(1.0, gt=0)
    session_name: str | None = None

    @field_validator("session_name")
    @classmethod
    def _no_sessions(cls, value):
        return _only_implemented("session_name", value, None, "pairs are formed over the whole batch")


class PairwiseLogisticLoss(_Strict):
    temperature: float = Field(1.0, gt=0)
    session_name: str | None = None
    ohem_ratio: float = 1.0
    use_label_margin: bool = False

    @model_validator(mode="after")
    def _plain(self):
        _only_implemented("session_name", self.session_name, None, "pairs are formed over the whole batch")
        _only_implemented("ohem_ratio", self.ohem_ratio, 1.0, "every pair counts")
        _only_implemented("use_label_margin", self.use_label_margin, False, "no label margin")
        return self


class JRCLoss(_Strict):
    """EasyRec's JRCLoss: ``session_name`` is the input field whose equal values form a session."""

    session_name: str = Field(min_length=1)
    alpha: float = Field(0.5, ge=0, le=1)
    same_label_loss: bool = True
    loss_weight_strategy: Literal["fixed", "random_uniform", "random_normal", "random_bernoulli", "uncertainty"] = "fixed"

    @field_validator("loss_weight_strategy")
    @classmethod
    def _strategy(cls, value):
        if value == "uncertainty":
            raise ValueError("jrc_loss.loss_weight_strategy 'uncertainty' (learned weights) is not implemented yet by fusionrec; "
                             "it has fixed, random_uniform, random_normal, random_bernoulli")  # fmt: skip
        return value


class ZILNLoss(_Strict):
    mu_regularization: float = Field(0.01, ge=0)
    sigma_regularization: float = Field(0.01, ge=0)
    max_log_clip_value: float = 20.0
    max_sigma: float = Field(5.0, gt=0)
    return_log_pred_value: bool = False
    classification_weight: float = Field(1.0, ge=0)
    regression_weight: float = Field(1.0, ge=0)


# loss_type -> the parameter block it reads (None: it has none)
LOSS_TYPES = {"CLASSIFICATION": None, "F1_REWEIGHTED_LOSS": "f1_reweighted_loss", "PAIR_WISE_LOSS": "pairwise_loss",
              "PAIRWISE_LOGISTIC_LOSS": "pairwise_logistic_loss", "BINARY_FOCAL_LOSS": "binary_focal_loss",
              "ORDER_CALIBRATE_LOSS": None, "JRC_LOSS": "jrc_loss", "ZILN_LOSS": "ziln_loss"}  # fmt: skip


class LossConfig(_Strict):
    loss_type: str
    weight: float = Field(1.0, ge=0)
    loss_name: str = ""
    learn_loss_weight: bool = False
    f1_reweighted_loss: F1ReweightedLoss | None = None
    pairwise_loss: PairwiseLoss | None = None
    pairwise_logistic_loss: PairwiseLogisticLoss | None = None
    binary_focal_loss: BinaryFocalLoss | None = None
    jrc_loss: JRCLoss | None = None
    ziln_loss: ZILNLoss | None = None

    @model_validator(mode="after")
    def _known(self):
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"losses: loss_type {self.loss_type!r} is not implemented yet by fusionrec; it has {list(LOSS_TYPES)}")
        _only_implemented("learn_loss_weight", self.learn_loss_weight, False, "the configured weight")
        if self.loss_type == "JRC_LOSS" and self.jrc_loss is None:
            raise ValueError("losses: JRC_LOSS needs its jrc_loss { session_name: ... } (EasyRec's JRCLoss requires session_name)")
        if self.loss_type == "ZILN_LOSS" and self.ziln_loss is None:  # EasyRec's defaults, for the loss and the prediction
            self.ziln_loss = ZILNLoss()
        return self


def check_losses(losses: list[LossConfig], loss_type: str, num_class: int, where: str) -> None:
    """EasyRec's rules for ``losses``: JRC_LOSS (num_class 2) and ZILN_LOSS (num_class 3) give
    the outputs their meaning, so each is its tower's only loss; the others are binary (num_class 1)."""
    shaping = [entry.loss_type for entry in losses if entry.loss_type in SHAPING_LOSS_CLASSES]
    if shaping:
        if len(losses) > 1:
            raise ValueError(f"{where}: losses: {shaping[0]} shapes the outputs ({SHAPING_LOSS_CLASSES[shaping[0]]} logits); "
                             f"it cannot be combined with {[e.loss_type for e in losses if e.loss_type != shaping[0]]}")  # fmt: skip
        if loss_type != "CLASSIFICATION" or num_class != SHAPING_LOSS_CLASSES[shaping[0]]:
            raise ValueError(f"{where}: losses: {shaping[0]} needs num_class {SHAPING_LOSS_CLASSES[shaping[0]]} and "
                             f"loss_type CLASSIFICATION, got num_class {num_class}, loss_type {loss_type}")  # fmt: skip
    elif losses and Task.of(loss_type, num_class).kind != BINARY:
        raise ValueError(f"{where}: losses: the losses of `losses` are binary ranking losses; this is a "
                         f"{Task.of(loss_type, num_class).kind} task (loss_type {loss_type}, num_class {num_class})")  # fmt: skip


class TaskTowerConfig(_Strict):
    """EasyRec's TaskTower: one task of a multi-task model. Its outputs, losses and metrics are
    named with ``_<tower_name>`` (``probs_ctr``, ``auc_ctr``); without ``label_name`` it reads
    the label_fields entry at its position, as EasyRec's MultiTaskModel does."""

    tower_name: str = Field(min_length=1)
    label_name: str | None = None
    metrics_set: list[EvalMetrics] = []
    loss_type: str = "CLASSIFICATION"
    num_class: int = Field(1, ge=1)
    dnn: DNN | None = None
    weight: float = Field(1.0, ge=0)
    task_space_indicator_label: str | None = None
    in_task_space_weight: float = Field(1.0, ge=0)
    out_task_space_weight: float = Field(1.0, ge=0)
    losses: list[LossConfig] = []
    use_sample_weight: bool = True

    @field_validator("tower_name")
    @classmethod
    def _name(cls, value):
        if not re.fullmatch(r"[A-Za-z0-9_]+", value):
            raise ValueError(f"tower_name {value!r}: letters, digits and _ only (it names outputs such as probs_{value})")
        return value

    @field_validator("loss_type")
    @classmethod
    def _loss_type(cls, value):
        if value not in LOSS_TYPE_TASKS:
            raise ValueError(f"loss_type {value!r} is not implemented yet by fusionrec for a task tower; it has {list(LOSS_TYPE_TASKS)}")
        return value

    @property
    def task(self) -> Task:
        return Task.of(self.loss_type, self.num_class, self.losses)

    @model_validator(mode="after")
    def _check(self):
        where = f"task tower {self.tower_name!r}"
        if self.loss_type == "SOFTMAX_CROSS_ENTROPY" and self.num_class < 2:
            raise ValueError(f"{where}: loss_type SOFTMAX_CROSS_ENTROPY needs num_class >= 2")
        if self.loss_type in ("L2_LOSS", "SIGMOID_L2_LOSS") and self.num_class != 1:
            raise ValueError(f"{where}: loss_type {self.loss_type} predicts one value: num_class must be 1, got {self.num_class}")
        check_losses(self.losses, self.loss_type, self.num_class, where)
        for metric in self.metrics_set:
            task = self.task
            two_class = ("auc", "gauc", "session_auc") if task.kind == MULTICLASS and task.n_classes == 2 else ()
            if metric.name not in TASK_METRICS[task.kind] + two_class:
                raise ValueError(f"{where}: metrics_set {metric.name} is not a metric of a {task.kind} task; "
                                 f"it has {list(TASK_METRICS[task.kind])}")  # fmt: skip
        return self


class BayesTaskTowerConfig(TaskTowerConfig):
    """EasyRec's BayesTaskTower (DBMTL): a TaskTower whose ``relation_dnn`` also reads the
    relation outputs of ``relation_tower_names`` (towers declared before it)."""

    relation_tower_names: list[str] = []
    relation_dnn: DNN | None = None


def _unique_towers(towers: list[TaskTowerConfig], model: str) -> list[TaskTowerConfig]:
    names = [t.tower_name for t in towers]
    if not towers:
        raise ValueError(f"{model}: needs at least one task_towers entry")
    if len(set(names)) != len(names):
        raise ValueError(f"{model}: tower_name must be unique, got {names}")
    return towers


class ESMMConfig(_Strict):
    groups: list[Tower] = []
    ctr_tower: TaskTowerConfig
    cvr_tower: TaskTowerConfig
    l2_regularization: float = Field(1e-4, ge=0)

    def ordered_task_towers(self) -> list[TaskTowerConfig]:
        """EasyRec's order: the cvr (main) tower, then the ctr (auxiliary) tower."""
        return [self.cvr_tower, self.ctr_tower]

    @model_validator(mode="after")
    def _check(self):
        _unique_towers(self.ordered_task_towers(), "ESMM")
        if self.ctr_tower.loss_type != "CLASSIFICATION" or self.ctr_tower.num_class != 1:
            raise ValueError("ESMM: ctr_tower must be binary (loss_type CLASSIFICATION, num_class 1), as in EasyRec")
        if self.cvr_tower.loss_type not in ("CLASSIFICATION", "L2_LOSS") or self.cvr_tower.num_class != 1:
            raise ValueError(f"ESMM: cvr_tower loss_type {self.cvr_tower.loss_type} num_class {self.cvr_tower.num_class} is "
                             "not supported; EasyRec's ESMM takes CLASSIFICATION or L2_LOSS with num_class 1")  # fmt: skip
        for tower in self.ordered_task_towers():
            if tower.losses or tower.task_space_indicator_label:
                raise ValueError(f"ESMM: task tower {tower.tower_name!r}: losses and task_space_indicator_label are not "
                                 "supported; ESMM's losses are its CTR and CTCVR losses, over every impression")  # fmt: skip
        return self


class ExpertTower(_Strict):
    expert_name: str
    dnn: DNN


class _TaskTowers(_Strict):
    """A multi-task model block of ``task_towers`` (EasyRec's MMoE, PLE, DBMTL, SimpleMultiTask)."""

    task_towers: list[TaskTowerConfig] = []
    l2_regularization: float = Field(1e-4, ge=0)

    def ordered_task_towers(self) -> list[TaskTowerConfig]:
        return list(self.task_towers)

    @model_validator(mode="after")
    def _towers(self):
        _unique_towers(self.task_towers, type(self).__name__.removesuffix("Config"))
        return self


class MMoEConfig(_TaskTowers):
    experts: list[ExpertTower] = []
    expert_dnn: DNN | None = None
    num_expert: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self):
        if self.expert_dnn is not None and self.num_expert < 1:
            raise ValueError("MMoE: expert_dnn needs num_expert >= 1")
        if self.expert_dnn is None and not self.experts:
            raise ValueError("MMoE: set expert_dnn and num_expert, or list experts")
        return self


class ExtractionNetwork(_Strict):
    network_name: str
    expert_num_per_task: int = Field(ge=1)
    share_num: int = Field(0, ge=0)
    task_expert_net: DNN
    share_expert_net: DNN | None = None


class PLEConfig(_TaskTowers):
    extraction_networks: list[ExtractionNetwork] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self):
        for network in self.extraction_networks:
            if network.share_num and network.share_expert_net is None:
                raise ValueError(f"PLE: extraction network {network.network_name!r}: share_num {network.share_num} needs share_expert_net")
        return self


class DBMTLConfig(_TaskTowers):
    bottom_cmbf: CMBFTower | None = None  # the bottom is CMBF's fused features (then bottom_dnn is not read)
    bottom_uniter: UniterTower | None = None  # or UNITER's
    bottom_dnn: DNN | None = None
    expert_dnn: DNN | None = None
    num_expert: int = Field(0, ge=0)
    task_towers: list[BayesTaskTowerConfig] = []

    @model_validator(mode="after")
    def _check(self):
        if self.bottom_cmbf is not None and self.bottom_uniter is not None:
            raise ValueError("DBMTL: set bottom_cmbf or bottom_uniter, not both")
        if self.expert_dnn is not None and self.num_expert < 1:
            raise ValueError("DBMTL: expert_dnn needs num_expert >= 1")
        seen: list[str] = []
        for tower in self.task_towers:
            for name in tower.relation_tower_names:
                if name not in seen:
                    raise ValueError(
                        f"DBMTL: task tower {tower.tower_name!r}: relation_tower_names {name!r} is not a tower declared "
                        f"before it ({seen or 'none'}); relations follow the order of task_towers"
                    )
            seen.append(tower.tower_name)
        return self


class SimpleMultiTaskConfig(_TaskTowers):
    """EasyRec's SimpleMultiTask: task towers only."""


# ---------------------------------------------------------------- the backbone (EasyRec's component graph)
class MLPParams(_Strict):
    """EasyRec's MLP message as its backbone MLP layer reads it: a field left unset takes the
    layer's own default (``use_bias`` true, ``final_activation`` linear), not the message's."""

    hidden_units: list[int] = Field(min_length=1)
    dropout_ratio: list[float] = []
    activation: Activation = "relu"
    use_bn: bool = True
    use_final_bn: bool = True
    final_activation: Activation = "linear"
    use_bias: bool = True
    use_bn_after_activation: bool = False

    @model_validator(mode="after")
    def _check(self):
        if any(u <= 0 for u in self.hidden_units):
            raise ValueError(f"hidden_units must be positive, got {self.hidden_units}")
        if any(not 0.0 <= r < 1.0 for r in self.dropout_ratio):
            raise ValueError(f"dropout_ratio entries must be in [0, 1), got {self.dropout_ratio}")
        return self


class FMLayerParams(_Strict):
    use_variant: bool = False
    l2_regularization: float = Field(1e-4, ge=0)


class MMoELayerParams(_Strict):
    num_task: int = Field(ge=1)
    expert_mlp: MLPParams
    num_expert: int = Field(ge=1)


class CINParams(_Strict):
    hidden_feature_sizes: list[int] = Field(min_length=1)


class SENetParams(_Strict):
    reduction_ratio: int = Field(4, ge=1)
    num_squeeze_group: int = Field(2, ge=1)
    use_skip_connection: bool = True
    use_output_layer_norm: bool = True


class BilinearParams(_Strict):
    type: Literal["all", "each", "interaction"] = "interaction"
    use_plus: bool = True
    num_output_units: int = Field(ge=1)


class FiBiNetParams(_Strict):
    bilinear: BilinearParams | None = None
    senet: SENetParams
    mlp: MLPParams | None = None


class MaskBlockParams(_Strict):
    reduction_factor: float | None = Field(None, gt=0)
    output_size: int | None = Field(None, ge=1)
    aggregation_size: int | None = Field(None, ge=1)
    input_layer_norm: bool = False
    projection_dim: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _size(self):
        if self.reduction_factor is None and self.aggregation_size is None:
            raise ValueError("MaskBlock: set reduction_factor or aggregation_size")
        return self


class MaskNetParams(_Strict):
    mask_blocks: list[MaskBlockParams] = Field(min_length=1)
    use_parallel: bool = True
    mlp: MLPParams | None = None
    input_layer_norm: bool = True


class HighwayParams(_Strict):
    emb_size: int = Field(ge=1)
    activation: Activation = "gelu"  # EasyRec's Highway layer default when unset
    dropout_rate: float = Field(0.0, ge=0, lt=1)
    num_layers: int = Field(1, ge=1)


class WeightedGateParams(_Strict):
    weight_index: int = Field(0, ge=0)
    mlp: MLPParams | None = None


class AITMTowerParams(_Strict):
    project_dim: int | None = Field(None, ge=1)
    transfer_mlp: MLPParams | None = None
    stop_gradient: bool = True


class GateNNParams(_Strict):
    output_dim: int | None = Field(None, ge=1)
    hidden_dim: int | None = Field(None, ge=1)
    activation: Activation = "relu"
    use_bn: bool = False
    dropout_rate: float = Field(0.0, ge=0, lt=1)


class PPNetParams(_Strict):
    mlp: MLPParams
    gate_params: GateNNParams = GateNNParams()
    mode: Literal["lazy", "eager"] = "lazy"  # EasyRec's PPNet layer default when unset
    full_gate_input: bool = True


class PeriodicEmbeddingParams(_Strict):
    embedding_dim: int = Field(ge=2)
    sigma: float = Field(gt=0)
    add_linear_layer: bool = True
    linear_activation: Activation = "relu"
    output_3d_tensor: bool = False
    output_tensor_list: bool = False

    @model_validator(mode="after")
    def _check(self):
        if self.embedding_dim % 2:
            raise ValueError(f"periodic_embedding: embedding_dim {self.embedding_dim} must be even (sin and cos halves)")
        return self


class AutoDisEmbeddingParams(_Strict):
    embedding_dim: int = Field(ge=1)
    num_bins: int = Field(ge=1)
    keep_prob: float = Field(0.8, ge=0)
    temperature: float = Field(gt=0)
    output_3d_tensor: bool = False
    output_tensor_list: bool = False


class BSTEncoderParams(_TransformerParams):
    max_position_embeddings: int = Field(512, ge=1)
    output_all_token_embeddings: bool = True
    target_item_position: Literal["head", "tail", "ignore"] = "head"
    reserve_target_position: bool = True


class DINEncoderParams(_Strict):
    attention_dnn: MLPParams
    need_target_feature: bool = True
    attention_normalizer: Literal["softmax", "sigmoid"] = "softmax"


class TextCNNLayerParams(TextCNNConfig):
    """EasyRec's TextCNN message as its backbone layer reads it: the convolutions, then ``mlp``."""

    mlp: MLPParams | None = None


# keras_layer class_name -> the params field it reads (None: it takes none, or st_params);
# fusionrec.ctr.backbone.COMPONENTS builds each (tests/ctr/test_backbone.py checks they agree)
BACKBONE_LAYERS = {"MLP": "mlp", "FM": "fm", "Add": None, "Cross": None, "DotInteraction": None, "CIN": "cin",
                   "MMoE": "mmoe", "SENet": "senet", "FiBiNet": "fibinet", "MaskBlock": "mask_block", "MaskNet": "masknet",
                   "Highway": "highway", "Gate": "gate", "DIN": "din", "TextCNN": "text_cnn", "BST": "bst",
                   "PeriodicEmbedding": "periodic_embedding", "AutoDisEmbedding": "auto_dis_embedding", "Bilinear": "bilinear",
                   "PPNet": "ppnet", "AITMTower": "aitm", "SeqAugment": "seq_aug",
                   "SeqAugmentOps": "seq_aug", "AuxiliaryLoss": None}  # fmt: skip
_LAYER_PARAMS = ("mlp", "fm", "mmoe", "cin", "senet", "fibinet", "mask_block", "masknet", "highway", "gate", "din", "text_cnn",
                 "bst", "periodic_embedding", "auto_dis_embedding", "bilinear", "ppnet", "aitm", "seq_aug")


class SequenceAugmentParams(_Strict):
    """EasyRec's SequenceAugment (CL4SRec's augmentations, Xie et al., ICDE 2022)."""

    mask_rate: float = Field(0.6, ge=0, le=1)
    crop_rate: float = Field(0.2, ge=0, le=1)
    reorder_rate: float = Field(0.6, ge=0, le=1)


class KerasLayerConfig(_Strict):
    class_name: str
    st_params: dict[str, Any] | None = None
    mlp: MLPParams | None = None
    fm: FMLayerParams | None = None
    mmoe: MMoELayerParams | None = None
    cin: CINParams | None = None
    senet: SENetParams | None = None
    fibinet: FiBiNetParams | None = None
    mask_block: MaskBlockParams | None = None
    masknet: MaskNetParams | None = None
    highway: HighwayParams | None = None
    gate: WeightedGateParams | None = None
    din: DINEncoderParams | None = None
    text_cnn: TextCNNLayerParams | None = None
    bst: BSTEncoderParams | None = None
    periodic_embedding: PeriodicEmbeddingParams | None = None
    auto_dis_embedding: AutoDisEmbeddingParams | None = None
    bilinear: BilinearParams | None = None
    ppnet: PPNetParams | None = None
    aitm: AITMTowerParams | None = None
    seq_aug: SequenceAugmentParams | None = None

    @model_validator(mode="after")
    def _known(self):
        if self.class_name not in BACKBONE_LAYERS:
            raise ValueError(f"keras_layer class_name {self.class_name!r} is not implemented yet by fusionrec; it has "
                             f"{sorted(BACKBONE_LAYERS)}")  # fmt: skip
        wanted = BACKBONE_LAYERS[self.class_name]
        given = [name for name in _LAYER_PARAMS if getattr(self, name) is not None]
        if given and given != [wanted]:
            raise ValueError(f"keras_layer {self.class_name}: reads {wanted or 'no params message'}, got {given}")
        if wanted in ("mlp", "mmoe", "cin", "fibinet", "mask_block", "masknet", "highway", "din", "text_cnn", "bst",
                      "periodic_embedding", "auto_dis_embedding", "bilinear", "ppnet", "aitm") and getattr(self, wanted) is None:
            raise ValueError(f"keras_layer {self.class_name} without its {wanted} {{...}} params is not supported "
                             f"(EasyRec's {self.class_name} layer requires them too)")  # fmt: skip
        return self


class LambdaConfig(_Strict):
    expression: str


class RecurrentLayerConfig(_Strict):
    num_steps: int = Field(1, ge=1)
    fixed_input_index: int | None = Field(None, ge=0)
    keras_layer: KerasLayerConfig


class RepeatLayerConfig(_Strict):
    num_repeat: int = Field(1, ge=1)
    output_concat_axis: int | None = None
    keras_layer: KerasLayerConfig


class LayerConfig(_Strict):
    lambda_: LambdaConfig | None = Field(None, alias="lambda")
    keras_layer: KerasLayerConfig | None = None
    recurrent: RecurrentLayerConfig | None = None
    repeat: RepeatLayerConfig | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)


class InputLayerConfig(_Strict):
    do_batch_norm: bool = False
    do_layer_norm: bool = False
    dropout_rate: float = Field(0.0, ge=0, lt=1)
    only_output_feature_list: bool = False
    only_output_3d_tensor: bool = False
    output_2d_tensor_and_feature_list: bool = False
    output_seq_and_normal_feature: bool = False
    concat_seq_feature: bool = True
    wide_output_dim: int | None = Field(None, ge=1)

    @field_validator("concat_seq_feature")
    @classmethod
    def _concat(cls, value):
        return _only_implemented("concat_seq_feature", value, True, "the sequences concatenated, as DIN / TextCNN read them")


class BlockInput(_Strict):
    """EasyRec's Input: a feature group, a block, a package called on ``package_input`` (a
    block or another package), or (inside a package) the input the package was called with."""

    feature_group_name: str | None = None
    block_name: str | None = None
    package_name: str | None = None
    use_package_input: bool = False
    package_input: str | None = None
    package_input_fn: str | None = None
    input_fn: str | None = None
    input_slice: str | None = None
    ignore_input: bool = False

    @property
    def name(self) -> str:
        for name in (self.feature_group_name, self.block_name, self.package_name):
            if name is not None:
                return name
        return "<package input>"

    @model_validator(mode="after")
    def _one(self):
        chosen = [self.feature_group_name is not None, self.block_name is not None, self.package_name is not None,
                  self.use_package_input]  # fmt: skip
        if sum(chosen) != 1:
            raise ValueError("an input sets exactly one of feature_group_name, block_name, package_name and use_package_input")
        if (self.package_input is not None or self.package_input_fn is not None) and self.package_name is None:
            raise ValueError("an input's package_input / package_input_fn go with its package_name")
        return self


class BlockConfig(_Strict):
    name: str = Field(min_length=1)
    inputs: list[BlockInput] = Field(min_length=1)
    input_concat_axis: int = -1
    merge_inputs_into_list: bool = False
    extra_input_fn: str | None = None
    layers: list[LayerConfig] = []
    input_layer: InputLayerConfig | None = None
    lambda_: LambdaConfig | None = Field(None, alias="lambda")
    keras_layer: KerasLayerConfig | None = None
    recurrent: RecurrentLayerConfig | None = None
    repeat: RepeatLayerConfig | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_layer(self):
        chosen = [n for n in ("input_layer", "lambda_", "keras_layer", "recurrent", "repeat") if getattr(self, n) is not None]
        if len(chosen) > 1:
            raise ValueError(f"block {self.name!r}: set one layer, found {chosen}")
        if chosen and self.layers:
            raise ValueError(f"block {self.name!r}: set one layer or `layers`, not both")
        if self.input_layer is not None and (len(self.inputs) != 1 or self.inputs[0].feature_group_name is None):
            raise ValueError(f"block {self.name!r}: an input_layer block takes one input, a feature_group_name")
        return self


def _topological_order(reads: dict[str, list[str]], where: str) -> list[str]:
    """The names of ``reads`` (name -> the names it reads) each after those it reads, in the
    given order otherwise; a cycle is an error naming it."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise ValueError(f"{where}: blocks form a cycle: {' -> '.join(path + [name])}")
        state[name] = 1
        for read in reads[name]:
            visit(read, path + [name])
        state[name] = 2
        order.append(name)

    for name in reads:
        visit(name, [])
    return order


class BlockPackage(_Strict):
    """EasyRec's BlockPackage: blocks called like one layer from other blocks' inputs
    (``package_name``), once per call and sharing their weights across calls (CL4SRec's
    encoder over the original and the augmented sequences)."""

    name: str = Field(min_length=1)
    blocks: list[BlockConfig] = Field(min_length=1)
    concat_blocks: list[str] = []
    output_blocks: list[str] = []

    def block_order(self) -> list[str]:
        """The package's blocks, each after the package blocks it reads."""
        internal = {b.name for b in self.blocks}
        reads = {b.name: [i.block_name for i in b.inputs if i.block_name in internal] for b in self.blocks}
        return _topological_order(reads, f"backbone package {self.name!r}")

    def output(self) -> str:
        """The package's one output block: its concat_blocks / output_blocks, or the block no
        other package block reads."""
        names = list(self.output_blocks or self.concat_blocks)
        if not names:
            read = {i.block_name for b in self.blocks for i in b.inputs}
            names = [name for name in self.block_order() if name not in read]
        if len(names) != 1:
            raise ValueError(f"backbone package {self.name!r}: a package of several outputs {names} is not implemented yet by "
                             "fusionrec; it gives one block's output")  # fmt: skip
        return names[0]


class BackboneConfig(_Strict):
    """EasyRec's BackboneTower: blocks (a DAG), concat_blocks (default: the blocks no other
    block reads), top_mlp."""

    blocks: list[BlockConfig] = Field(min_length=1)
    concat_blocks: list[str] = []
    output_blocks: list[str] = []
    top_mlp: MLPParams | None = None
    packages: list[BlockPackage] = []

    @model_validator(mode="after")
    def _graph(self):
        names = [b.name for b in self.blocks]
        if len(set(names)) != len(names):
            raise ValueError(f"backbone: block names must be unique, got {names}")
        for name in self.concat_blocks + self.output_blocks:
            if name not in names:
                raise ValueError(f"backbone: concat_blocks / output_blocks name {name!r}, which is not a block; blocks are {names}")
        if self.output_blocks and self.concat_blocks:
            raise ValueError("backbone: set concat_blocks (merged into one output) or output_blocks (a list of outputs), not both")
        package_names = [p.name for p in self.packages]
        if len(set(package_names)) != len(package_names) or set(package_names) & set(names):
            raise ValueError(f"backbone: package names must be unique and differ from the block names, got {package_names}")
        for block in self.blocks:
            if any(source.use_package_input for source in block.inputs):
                raise ValueError(f"backbone block {block.name!r}: use_package_input is for the blocks of a package")
        self.block_order()
        for package in self.packages:
            package.block_order()
        return self

    def package(self, name: str, where: str) -> "BlockPackage":
        for package in self.packages:
            if package.name == name:
                return package
        raise ValueError(f"{where}: package_name {name!r} is not a package; packages are {[p.name for p in self.packages]}")

    def outer_reads(self, source: BlockInput, where: str, calling: tuple[str, ...] = ()) -> list[str]:
        """The backbone blocks an input reads: its block, or a package's ``package_input`` (a
        block, or a package) and the backbone blocks the package's own blocks read."""
        if source.block_name is not None:
            return [source.block_name]
        if source.package_name is None:
            return []
        name = source.package_name
        if name in calling:
            raise ValueError(f"backbone: packages call each other in a cycle: {' -> '.join(calling + (name,))}")
        package = self.package(name, where)
        reads: list[str] = []
        if source.package_input is not None:
            inner = BlockInput(package_name=source.package_input) if source.package_input in {p.name for p in self.packages} \
                else BlockInput(block_name=source.package_input)  # fmt: skip
            reads += self.outer_reads(inner, where, calling + (name,))
        internal = {b.name for b in package.blocks}
        for block in package.blocks:
            for inner in block.inputs:
                if inner.block_name is not None and inner.block_name in internal:
                    continue
                reads += self.outer_reads(inner, f"backbone package {name!r} block {block.name!r}", calling + (name,))
        return reads

    def block_order(self) -> list[str]:
        """The blocks in an order where every block comes after the blocks it reads (through
        packages too; a cycle is an error naming its blocks)."""
        names = [b.name for b in self.blocks]
        reads: dict[str, list[str]] = {}
        for block in self.blocks:
            where = f"backbone block {block.name!r}"
            reads[block.name] = [read for source in block.inputs for read in self.outer_reads(source, where)]
            for read in reads[block.name]:
                if read not in reads and read not in names:
                    raise ValueError(f"{where}: input block_name {read!r} is not a block; blocks are {names}")
        return _topological_order(reads, "backbone")

    def outputs(self) -> list[str]:
        """output_blocks or concat_blocks, or (EasyRec's default) every block no other block reads, in order."""
        if self.output_blocks:
            return list(self.output_blocks)
        if self.concat_blocks:
            return list(self.concat_blocks)
        read = {i.block_name for b in self.blocks for i in b.inputs if i.block_name is not None}
        return [name for name in self.block_order() if name not in read]


class ModelParams(_Strict):
    """EasyRec's ModelParams: a backbone model's l2_regularization and (MultiTaskModel) task towers."""

    l2_regularization: float = Field(0.0, ge=0)
    task_towers: list[BayesTaskTowerConfig] = []

    def ordered_task_towers(self) -> list[TaskTowerConfig]:
        return list(self.task_towers)


@dataclass(frozen=True)
class ModelSpec:
    """A model fusionrec trains, registered once here: EasyRec's ``model_class`` names for it,
    the ``model_config`` block that configures it (its pydantic model and how EasyRec's message
    of that name is treated), the ``nn.Module`` that builds it ("module:attribute", imported
    when a model is built) and the suffixes of its output heads (the served one first).
    docs/ctr.md's Models table has a row per model_class (tests/ctr/test_models_registry.py)."""

    model_classes: tuple[str, ...]
    block: str
    config: type[BaseModel]
    message: EasyRecMessage
    module: str
    heads: tuple[str, ...] = ("",)


_MODELS = "fusionrec.ctr.models:"
_BACKBONE_MESSAGE = _message("BackboneTower", not_implemented="packages")
_MULTI_TASK = "fusionrec.ctr.multitask:"
MODEL_SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(("WideAndDeep",), "wide_and_deep", WideAndDeepConfig, _message("WideAndDeep"), _MODELS + "WideAndDeep"),
    ModelSpec(("DeepFM",), "deepfm", DeepFMConfig, _message("DeepFM", not_implemented="wide_regularization dense_regularization"),
              _MODELS + "DeepFM"),
    ModelSpec(("FM",), "fm", FMConfig, _message("FM"), _MODELS + "FM"),
    ModelSpec(("AutoInt",), "autoint", AutoIntConfig, _message("AutoInt"), _MODELS + "AutoInt"),
    ModelSpec(("DCN",), "dcn", DCNConfig, _message("DCN"), _MODELS + "DCN"),
    ModelSpec(("DLRM",), "dlrm", DLRMConfig, _message("DLRM"), _MODELS + "DLRM"),
    ModelSpec(("MultiTower", "MultiTowerDIN", "DIN", "MultiTowerBST"), "multi_tower", MultiTowerConfig,
              _message("MultiTower"), _MODELS + "MultiTower"),
    ModelSpec(("RocketLaunching",), "rocket_launching", RocketLaunchingConfig, _message("RocketLaunching"),
              _MODELS + "RocketLaunching", heads=("_light", "_booster")),
    ModelSpec(("CMBF",), "cmbf", CMBFConfig, _message("CMBF"), _MODELS + "CMBF"),
    ModelSpec(("Uniter",), "uniter", UniterConfig, _message("Uniter"), _MODELS + "Uniter"),
    ModelSpec(("ESMM",), "esmm", ESMMConfig, _message("ESMM"), _MULTI_TASK + "ESMM"),
    ModelSpec(("MMoE",), "mmoe", MMoEConfig, _message("MMoE"), _MULTI_TASK + "MMoE"),
    ModelSpec(("PLE",), "ple", PLEConfig, _message("PLE"), _MULTI_TASK + "PLE"),
    ModelSpec(("DBMTL",), "dbmtl", DBMTLConfig, _message("DBMTL"),
              _MULTI_TASK + "DBMTL"),
    ModelSpec(("SimpleMultiTask",), "simple_multi_task", SimpleMultiTaskConfig, _message("SimpleMultiTask"),
              _MULTI_TASK + "SimpleMultiTask"),
    ModelSpec(("RankModel", "MultiTaskModel"), "backbone", BackboneConfig, _BACKBONE_MESSAGE,
              "fusionrec.ctr.backbone:BackboneModel"),
)  # fmt: skip
MODEL_SPEC_OF = {name: spec for spec in MODEL_SPECS for name in spec.model_classes}
# model_class -> the model_config block that configures it
MODEL_FIELDS = {name: spec.block for name, spec in MODEL_SPEC_OF.items()}
MODEL_BLOCKS = {spec.block: spec for spec in MODEL_SPECS}  # one pydantic field per block


class _ModelConfigBase(_Strict):
    """EasyRec's EasyRecModel; ``ModelConfig`` adds one optional block per ``MODEL_SPECS`` entry."""

    model_class: str
    feature_groups: list[FeatureGroupConfig] = Field(min_length=1)
    seq_att_groups: list[SeqAttGroupConfig] = []
    variational_dropout: VariationalDropoutConfig | None = None
    embedding_regularization: float = Field(0.0, ge=0)
    num_class: int = Field(1, ge=1)
    loss_type: str = "CLASSIFICATION"
    losses: list[LossConfig] = []
    model_params: ModelParams | None = None  # a backbone model's (RankModel, MultiTaskModel)

    @field_validator("loss_type")
    @classmethod
    def _loss_type(cls, value):
        if value not in LOSS_TYPE_TASKS:
            raise ValueError(
                f"loss_type {value!r} is not implemented yet by fusionrec as a model's loss_type; "
                f"it has {list(LOSS_TYPE_TASKS)} (and more in `losses`)"
            )
        return value

    @property
    def towers(self) -> list[TaskTowerConfig]:
        """A multi-task model's task towers, in EasyRec's order (empty for a one-task model)."""
        if self.model_class == "MultiTaskModel":
            return self.model_params.ordered_task_towers() if self.model_params is not None else []
        block = self.block
        return block.ordered_task_towers() if hasattr(block, "ordered_task_towers") else []

    @property
    def l2_regularization(self) -> float:
        """The model's l2_regularization: its block's, or a backbone model's model_params'."""
        if self.spec.block == "backbone":
            return self.model_params.l2_regularization if self.model_params is not None else 0.0
        return getattr(self.block, "l2_regularization", 0.0)

    @property
    def task(self) -> Task:
        """The task of the served output: the model's, or a multi-task model's first tower's."""
        towers = self.towers
        return towers[0].task if towers else Task.of(self.loss_type, self.num_class, self.losses)

    @property
    def head_tasks(self) -> dict[str, Task]:
        """The task of each output head, by suffix (a multi-task model's ``_<tower_name>``)."""
        towers = self.towers
        if towers:
            return {"_" + t.tower_name: t.task for t in towers}
        return {suffix: self.task for suffix in self.spec.heads}

    @property
    def spec(self) -> ModelSpec:
        return MODEL_SPEC_OF[self.model_class]

    @property
    def block(self) -> BaseModel:
        """The model's own config block (``model_config.wide_and_deep``, ...)."""
        return getattr(self, self.spec.block)

    @property
    def head_suffixes(self) -> tuple[str, ...]:
        return tuple(self.head_tasks)

    @model_validator(mode="after")
    def _model(self):
        if self.model_class not in MODEL_FIELDS:
            raise ValueError(
                f"model_class {self.model_class!r} is not implemented yet; fusionrec has {sorted(MODEL_FIELDS)}"
            )
        set_fields = [block for block in MODEL_BLOCKS if getattr(self, block) is not None]
        wanted = MODEL_FIELDS[self.model_class]
        if set_fields != [wanted]:
            raise ValueError(
                f"model_class {self.model_class!r} needs exactly the block {wanted!r}, found {set_fields or 'none'}"
            )
        if self.model_class == "MultiTaskModel" and not self.towers:
            raise ValueError("MultiTaskModel: model_params.task_towers must list at least one task tower")
        if self.model_class == "MultiTaskModel":
            _unique_towers(self.towers, "MultiTaskModel")
        if self.towers:
            for name, default in (("loss_type", "CLASSIFICATION"), ("num_class", 1), ("losses", [])):
                if getattr(self, name) != default:
                    raise ValueError(
                        f"{name}: {self.model_class} is a multi-task model; set {name} on each task tower, as EasyRec reads it there"
                    )
        if self.loss_type == "SOFTMAX_CROSS_ENTROPY" and self.num_class < 2:
            raise ValueError("loss_type SOFTMAX_CROSS_ENTROPY needs num_class >= 2 (one logit per class)")
        if self.loss_type in ("L2_LOSS", "SIGMOID_L2_LOSS") and self.num_class != 1:
            raise ValueError(f"loss_type {self.loss_type} predicts one value: num_class must be 1, got {self.num_class}")
        if any(loss.loss_type == "ORDER_CALIBRATE_LOSS" for loss in self.losses):
            raise ValueError("losses: ORDER_CALIBRATE_LOSS compares a task tower with its relation towers; it is not supported "
                             "on a one-task model")  # fmt: skip
        check_losses(self.losses, self.loss_type, self.num_class, "model_config")
        for group in self.feature_groups:
            if group.wide_deep == "WIDE_AND_DEEP":
                raise ValueError(
                    f"feature_groups {group.group_name!r}: wide_deep WIDE_AND_DEEP is not implemented yet; "
                    "list the features in one WIDE and one DEEP group"
                )
        names = [g.group_name for g in self.feature_groups]
        if len(set(names)) != len(names):
            raise ValueError(f"feature_groups: group names must be unique, got {names}")
        return self


ModelConfig = create_model(
    "ModelConfig", __base__=_ModelConfigBase, **{spec.block: (spec.config | None, None) for spec in MODEL_SPECS}
)


class ConstantLR(_Strict):
    learning_rate: float = Field(0.002, gt=0)


class ExponentialDecayLR(_Strict):
    initial_learning_rate: float = Field(0.002, gt=0)
    decay_steps: int = Field(4000000, ge=1)
    decay_factor: float = Field(0.95, gt=0)
    staircase: bool = True
    min_learning_rate: float = Field(0.0, ge=0)


class CosineDecayLR(_Strict):
    learning_rate_base: float = Field(0.002, gt=0)
    total_steps: int = Field(4000000, ge=1)
    warmup_learning_rate: float = Field(0.0002, ge=0)
    warmup_steps: int = Field(10000, ge=0)
    hold_base_rate_steps: int = Field(0, ge=0)


class LearningRate(_Strict):
    constant_learning_rate: ConstantLR | None = None
    exponential_decay_learning_rate: ExponentialDecayLR | None = None
    cosine_decay_learning_rate: CosineDecayLR | None = None

    @model_validator(mode="after")
    def _one(self):
        if sum(x is not None for x in (self.constant_learning_rate, self.exponential_decay_learning_rate,
                                       self.cosine_decay_learning_rate)) > 1:  # fmt: skip
            raise ValueError("learning_rate: set one schedule")
        return self


class AdamOptimizer(_Strict):
    learning_rate: LearningRate = LearningRate()
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)


class AdagradOptimizer(_Strict):
    learning_rate: LearningRate = LearningRate()
    initial_accumulator_value: float = Field(0.1, ge=0)


class MomentumOptimizer(_Strict):
    learning_rate: LearningRate = LearningRate()
    momentum_optimizer_value: float = Field(0.9, ge=0)


class AdamWOptimizer(AdamOptimizer):
    weight_decay: float = Field(1e-6, ge=0, lt=1)


class MomentumWOptimizer(MomentumOptimizer):
    weight_decay: float = Field(1e-6, ge=0, lt=1)


class RMSPropOptimizer(_Strict):
    learning_rate: LearningRate = LearningRate()
    momentum_optimizer_value: float = Field(0.9, ge=0)
    decay: float = Field(0.9, ge=0, le=1)
    epsilon: float = Field(1.0, gt=0)


class FtrlOptimizer(_Strict):
    learning_rate: LearningRate = LearningRate()
    learning_rate_power: float = Field(-0.5, le=0)
    initial_accumulator_value: float = Field(0.1, gt=0)
    l1_reg: float = Field(0.0, ge=0)
    l2_reg: float = Field(0.0, ge=0)
    l2_shrinkage_reg: float = Field(0.0, ge=0)


OPTIMIZERS = ("adam_optimizer", "lazy_adam_optimizer", "adagrad_optimizer", "momentum_optimizer", "adamw_optimizer",
              "momentumw_optimizer", "rms_prop_optimizer", "ftrl_optimizer")  # fmt: skip


class Optimizer(_Strict):
    adam_optimizer: AdamOptimizer | None = None
    lazy_adam_optimizer: AdamOptimizer | None = None  # what adam_optimizer already is for embedding tables
    adagrad_optimizer: AdagradOptimizer | None = None
    momentum_optimizer: MomentumOptimizer | None = None
    adamw_optimizer: AdamWOptimizer | None = None
    momentumw_optimizer: MomentumWOptimizer | None = None
    rms_prop_optimizer: RMSPropOptimizer | None = None
    ftrl_optimizer: FtrlOptimizer | None = None
    use_moving_average: bool = False
    embedding_learning_rate_multiplier: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _one(self):
        chosen = [n for n in OPTIMIZERS if getattr(self, n)]
        if len(chosen) != 1:
            raise ValueError(f"optimizer_config: set exactly one optimizer, found {chosen or 'none'}")
        if self.use_moving_average:
            raise ValueError("use_moving_average: true is not implemented yet (only false is accepted)")
        return self

    @property
    def chosen(self) -> tuple[str, Any]:
        for name in OPTIMIZERS:
            if getattr(self, name) is not None:
                return ("adam_optimizer" if name == "lazy_adam_optimizer" else name), getattr(self, name)
        raise AssertionError("validated to have one optimizer")


# EasyRec's train_distribute values. Each one trains data-parallel (synchronous or not) over the
# workers of a cluster; launched as one process, as fusionrec trains today, every one of them is
# the same single-worker training as NoStrategy (docs/ctr.md).
DISTRIBUTION_STRATEGIES = ("NoStrategy", "PSStrategy", "MirroredStrategy", "CollectiveAllReduceStrategy",
                           "ExascaleStrategy", "MultiWorkerMirroredStrategy", "HorovodStrategy", "SokStrategy",
                           "EmbeddingParallelStrategy")  # fmt: skip


class TrainConfig(_Strict):
    optimizer_config: list[Optimizer] = []
    gradient_clipping_by_norm: float = Field(0.0, ge=0)
    num_steps: int = Field(0, ge=0)
    fine_tune_checkpoint: str = ""
    sync_replicas: bool = True
    save_checkpoints_steps: int = Field(1000, ge=1)
    save_checkpoints_secs: int | None = None
    keep_checkpoint_max: int = Field(10, ge=1)
    save_summary_steps: int = 1000
    log_step_count_steps: int = Field(10, ge=1)
    is_profiling: bool = False
    inter_op_parallelism_threads: int = Field(0, ge=0)
    intra_op_parallelism_threads: int = Field(0, ge=0)
    write_graph: bool = True
    startup_delay_steps: float = 15
    train_distribute: str = "NoStrategy"

    @field_validator("train_distribute")
    @classmethod
    def _one_process(cls, value):
        if value not in DISTRIBUTION_STRATEGIES:
            raise ValueError(f"train_distribute {value!r} is not an EasyRec strategy; EasyRec has {list(DISTRIBUTION_STRATEGIES)}")
        return value

    @model_validator(mode="after")
    def _one(self):
        if len(self.optimizer_config) > 3:
            raise ValueError(
                f"optimizer_config: {len(self.optimizer_config)} optimizers; EasyRec trains one, two (embedding "
                "tables / the rest) or, for WideAndDeep, three (WIDE tables / other tables / the rest)"
            )
        return self


class EvalConfig(_Strict):
    num_examples: int = 0
    eval_interval_secs: int = 300
    metrics_set: list[EvalMetrics] = []
    eval_online: bool = False


class ExportConfig(_Strict):
    batch_size: int = -1
    exporter_type: Literal["final", "best", "latest", "none"] = "final"
    best_exporter_metric: str = "auc"
    metric_bigger: bool = True
    exports_to_keep: int = 1
    enable_early_stop: bool = False
    max_check_steps: int = Field(10000, ge=1)


class ConfigRefError(ValueError):
    """A rule between two places of a config (a feature and the input it reads, a group and its
    features) broken at ``loc``, the path of the offending entry: a validator of the whole
    config raises it so that the message gives that entry's line, not "(top level)"."""

    def __init__(self, loc: tuple, message: str):
        super().__init__(message)
        self.loc = tuple(loc)


def located_features(feature_configs: list[FeatureConfig], feature_config: FeatureConfigV2 | None,
                     prefix: tuple = ()) -> list[tuple[tuple, FeatureConfig]]:  # fmt: skip
    """``expand_features`` with the config path each feature was written at."""
    listed = [(prefix + ("feature_configs", i), f) for i, f in enumerate(feature_configs)]
    if feature_config is not None:
        listed += [(prefix + ("feature_config", "features", i), f) for i, f in enumerate(feature_config.features)]
    return [(loc, copy) for loc, feature in listed for copy in feature.with_shared_names()]


def check_feature_inputs(located: list[tuple[tuple, FeatureConfig]], fields: dict, label_fields: list[str]) -> set[str]:
    """Every feature names a distinct feature and reads non-label input fields; the names."""
    names: set[str] = set()
    for loc, feature in located:
        if feature.name in names:
            raise ConfigRefError(loc, f"feature {feature.name!r} is defined twice (feature names are unique, shared_names included)")
        names.add(feature.name)
        for j, input_name in enumerate(feature.input_names):
            if input_name not in fields:
                raise ConfigRefError(loc + ("input_names", j), f"feature {feature.name!r}: input_names {input_name!r} is not "
                                                               f"an input_field (input fields: {sorted(fields)})")  # fmt: skip
            if input_name in label_fields:
                raise ConfigRefError(loc + ("input_names", j), f"feature {feature.name!r}: input {input_name!r} is a label field")
    return names


def expand_features(feature_configs: list[FeatureConfig], feature_config: FeatureConfigV2 | None) -> list[FeatureConfig]:
    """The features of ``feature_configs`` and ``feature_config.features``, with a copy for each ``shared_names``."""
    listed = feature_configs + (feature_config.features if feature_config else [])
    return [copy for feature in listed for copy in feature.with_shared_names()]


@dataclass(frozen=True)
class MetricGroup:
    """Metrics computed on one output head against one label; EasyRec names each of them with
    ``suffix`` (``auc_ctr``). ESMM's CVR tower is evaluated twice, as EasyRec does: on CTCVR
    (label = cvr label x ctr label, score = pCVR x pCTR, every impression; ``times_head``) and
    on the clicked impressions only (``only_positive``: rows whose ``only_positive`` label > 0)."""

    suffix: str
    metrics: tuple[EvalMetrics, ...]
    task: Task
    head: str
    label: str
    times_head: str | None = None
    times_label: str | None = None
    only_positive: str | None = None


class PipelineConfig(_Strict):
    train_input_path: str | None = None
    eval_input_path: str | None = None
    model_dir: str | None = None
    train_config: TrainConfig = TrainConfig()
    eval_config: EvalConfig = EvalConfig()
    data_config: DataConfig
    feature_configs: list[FeatureConfig] = []
    feature_config: FeatureConfigV2 | None = None
    model_config_: ModelConfig = Field(alias="model_config")
    export_config: ExportConfig = ExportConfig()

    parquet_train_input: str | None = None  # ParquetInputV2's paths: the same as train_input_path here
    parquet_eval_input: str | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True, protected_namespaces=(),
                              allow_inf_nan=False)  # fmt: skip

    @property
    def features(self) -> list[FeatureConfig]:
        """Every feature, those that ``shared_names`` stands for included."""
        return expand_features(self.feature_configs, self.feature_config)

    def head_labels(self) -> dict[str, str]:
        """The label field each output head learns: a task tower's ``label_name``, else the
        label_fields entry at the tower's position (EasyRec's MultiTaskModel); a one-task
        model's heads all learn the first label field."""
        labels = self.data_config.label_fields
        towers = self.model_config_.towers
        if not towers:
            return {suffix: labels[0] for suffix in self.model_config_.head_suffixes}
        out = {}
        for i, tower in enumerate(towers):
            if tower.label_name is not None:
                out["_" + tower.tower_name] = tower.label_name
            elif i < len(labels):
                out["_" + tower.tower_name] = labels[i]
            else:
                raise ValueError(
                    f"task tower {tower.tower_name!r} (number {i + 1}) sets no label_name and data_config.label_fields "
                    f"has only {len(labels)} entries ({labels}); EasyRec matches such towers to labels by position"
                )
        return out

    def label_tasks(self) -> dict[str, Task]:
        """The task each label field is checked against when read: the task of the heads that
        learn it; a label no head learns (a task_space_indicator_label) is any finite number."""
        tasks = self.model_config_.head_tasks
        by_label = {label: tasks[suffix] for suffix, label in self.head_labels().items()}
        return {label: by_label.get(label, Task(REGRESSION)) for label in self.data_config.label_fields}

    def metric_groups(self) -> list[MetricGroup]:
        """What evaluation computes (``fusionrec.ctr.trainer.Trainer.evaluate``): a one-task
        model's eval_config.metrics_set on each head; a multi-task model's tower metrics_set on
        its tower (EasyRec's MultiTaskModel reads those, not eval_config's)."""
        model = self.model_config_
        labels = self.head_labels()
        towers = model.towers
        if not towers:
            metrics = tuple(self.eval_config.metrics_set)
            return [MetricGroup(suffix, metrics, model.task, suffix, labels[suffix]) for suffix in model.head_suffixes]
        groups = []
        for tower in towers:
            suffix = "_" + tower.tower_name
            metrics = tuple(tower.metrics_set)
            if model.model_class == "ESMM" and tower is model.esmm.cvr_tower:
                ctr = "_" + model.esmm.ctr_tower.tower_name
                groups.append(MetricGroup("_ctcvr", metrics, tower.task, suffix, labels[suffix], times_head=ctr,
                                          times_label=labels[ctr]))  # fmt: skip
                groups.append(MetricGroup(suffix + "_masked", metrics, tower.task, suffix, labels[suffix],
                                          only_positive=labels[ctr]))  # fmt: skip
            else:
                groups.append(MetricGroup(suffix, metrics, tower.task, suffix, labels[suffix]))
        return groups

    def metric_names(self) -> list[str]:
        """Every metric evaluation reports (logloss or mean_squared_error always), by EasyRec's name."""
        names = []
        for group in self.metric_groups():
            always = "mean_squared_error" if group.task.kind in (REGRESSION, ZILN) else "logloss"
            names += [name + group.suffix for name in sorted({always} | {m.name for m in group.metrics})]
        return names

    def parallel_lists(self) -> list[list[tuple[str, str]]]:
        """(input field, separator) of the ``hist_seq`` lists of each sequence group that has
        several: DIN and BST read them as parallel lists, so each row must give them equal lengths."""
        by_name = {f.name: f for f in self.features}
        model = self.model_config_
        seq_groups = [g for group in model.feature_groups for g in group.sequence_features] + list(model.seq_att_groups)
        out = []
        for seq_group in seq_groups:  # EasyRec concatenates the hist_seq of every seq_att_map of a group
            hists = [name for att in seq_group.seq_att_map for name in att.hist_seq + att.aux_hist_seq]
            if len(hists) > 1:
                out.append([(by_name[n].input_names[0], by_name[n].separator) for n in hists])
        if model.backbone is not None:  # a backbone's sequence input concatenates its group's sequences per position
            groups = {g.group_name: g for g in model.feature_groups}
            for block in model.backbone.blocks:
                if block.input_layer is not None and block.input_layer.output_seq_and_normal_feature:
                    group = groups.get(block.inputs[0].feature_group_name)
                    sequences = [n for n in (group.feature_names if group else [])
                                 if n in by_name and by_name[n].feature_type in ("SequenceFeature", "TagFeature")]  # fmt: skip
                    if len(sequences) > 1:
                        out.append([(by_name[n].input_names[0], by_name[n].separator) for n in sequences])
        return out

    def kv_maps(self) -> dict[str, tuple[str, str, bool]]:
        """Field -> (separator, kv_separator, weights) of each LookupFeature map and weighted
        TagFeature: the reader checks that every entry is key<kv_separator>value (the value a
        decimal number for a TagFeature's weight)."""
        maps = {f.input_names[1]: (f.separator, f.kv_separator, False) for f in self.features if f.feature_type == "LookupFeature"}
        maps.update({f.input_names[0]: (f.separator, f.kv_separator, True) for f in self.features
                     if f.feature_type == "TagFeature" and f.kv_separator})  # fmt: skip
        return maps

    def number_lists(self) -> dict[str, tuple[str, str, int]]:
        """Input field -> (separator, seq_multi_sep or "", numbers per position or 0) of each
        RawFeature sequence: the reader checks that every element is a finite number and that
        an unbucketized 3-D sequence holds at most raw_input_dim numbers per position."""
        return {f.input_names[0]: (f.separator, f.seq_multi_sep or "", f.raw_input_dim if f.raw_input_dim > 1 else 0)
                for f in self.features if f.is_raw_sequence}  # fmt: skip

    def vector_inputs(self) -> dict[str, tuple[int, str]]:
        """Input field -> (raw_input_dim, separator) of each RawFeature of several values: the
        reader parses such a field into raw_input_dim numbers per row."""
        return {f.input_names[0]: (f.raw_input_dim, f.separator) for f in self.features
                if f.raw_input_dim > 1 and f.feature_type in DENSE_FEATURE_TYPES}  # fmt: skip

    @model_validator(mode="before")
    @classmethod
    def _parquet_paths(cls, data):
        if isinstance(data, dict):
            for stage in ("train", "eval"):
                if data.get(f"parquet_{stage}_input") and not data.get(f"{stage}_input_path"):
                    data = {**data, f"{stage}_input_path": data[f"parquet_{stage}_input"]}
        return data

    @model_validator(mode="after")
    def _cross(self):
        fields = {f.input_name: f for f in self.data_config.input_fields}
        located = located_features(self.feature_configs, self.feature_config)
        names = check_feature_inputs(located, fields, self.data_config.label_fields)
        for loc, feature in located:
            kind = fields[feature.input_names[0]].input_type
            if feature.is_raw_sequence and kind != "STRING":
                raise ConfigRefError(loc, f"feature {feature.name!r}: a RawFeature sequence reads numbers joined by "
                                 f"{feature.separator!r} from a STRING field; {feature.input_names[0]!r} is {kind}")  # fmt: skip
            if feature.num_buckets and feature.feature_type != "RawFeature" and not feature.is_raw_sequence and kind not in ("INT32", "INT64"):
                raise ConfigRefError(loc,
                    f"feature {feature.name!r}: num_buckets needs an INT32 or INT64 input field; "
                    f"{feature.input_names[0]!r} is {kind}"
                )
            if feature.feature_type == "LookupFeature" and any(fields[n].input_type != "STRING" for n in feature.input_names):
                raise ConfigRefError(loc, f"feature {feature.name!r} (LookupFeature): its key and map fields must be STRING")
            if feature.feature_type == "ExprFeature" and any(fields[n].input_type == "STRING" for n in feature.input_names):
                raise ConfigRefError(loc, f"feature {feature.name!r} (ExprFeature): its input_names must be numeric fields, not STRING")
            if feature.feature_type in DENSE_FEATURE_TYPES and (kind == "STRING") != (feature.raw_input_dim > 1):
                raise ConfigRefError(loc,
                    f"feature {feature.name!r}: a RawFeature reads one number from a numeric input field, or "
                    f"raw_input_dim > 1 numbers joined by its separator from a STRING field; {feature.input_names[0]!r} "
                    f"is {kind} and raw_input_dim is {feature.raw_input_dim}"
                )
            if feature.feature_type in ("TagFeature", "SequenceFeature") and kind != "STRING":
                raise ConfigRefError(loc, f"feature {feature.name!r}: {feature.feature_type} needs a STRING input field")
            if feature.feature_type in ("TagFeature", "SequenceFeature") and feature.num_buckets and not feature.is_raw_sequence:
                raise ConfigRefError(loc,
                    f"feature {feature.name!r} ({feature.feature_type}): num_buckets is not supported for "
                    "multi-value strings; use hash_bucket_size or vocab_list"
                )
            if any(sep and fields[n].input_type != "STRING" for n, sep in zip(feature.input_names, feature.combo_input_seps)):
                raise ConfigRefError(loc, f"feature {feature.name!r} (ComboFeature): combo_input_seps splits STRING fields only")
            if feature.feature_type == "ComboFeature" and any(
                fields[n].input_type not in ("STRING", "INT32", "INT64") for n in feature.input_names
            ):
                raise ConfigRefError(loc,
                    f"feature {feature.name!r} (ComboFeature): crossing FLOAT, DOUBLE or BOOL inputs is not implemented "
                    "yet by fusionrec; STRING and integer fields are crossed"
                )
            if feature.feature_type == "IdFeature" and kind in ("FLOAT", "DOUBLE"):
                raise ConfigRefError(loc,
                    f"feature {feature.name!r} (IdFeature): input {feature.input_names[0]!r} is {kind}; "
                    "ids must be STRING or integer fields"
                )
            if (feature.vocab_file or feature.vocab_list) and kind != "STRING":
                raise ConfigRefError(loc, f"feature {feature.name!r}: vocab_list / vocab_file need a STRING input field")
        model = self.model_config_
        for g, group in enumerate(model.feature_groups):
            for j, name in enumerate(group.feature_names):
                if name not in names:
                    raise ConfigRefError(("model_config", "feature_groups", g, "feature_names", j),
                                         f"feature_groups {group.group_name!r}: feature {name!r} is not in feature_configs")  # fmt: skip
            for k, seq_group in enumerate(group.sequence_features):
                _check_seq_group(seq_group, names, f"feature_groups {group.group_name!r}", ("model_config", "feature_groups", g, "sequence_features", k))
        for k, seq_group in enumerate(model.seq_att_groups):
            _check_seq_group(seq_group, names, "seq_att_groups", ("model_config", "seq_att_groups", k))
        if len(self.train_config.optimizer_config) == 3 and model.model_class != "WideAndDeep":
            raise ValueError(
                "train_config.optimizer_config: three optimizers (WIDE tables / other tables / the rest) are for "
                f"WideAndDeep only, as in EasyRec; {model.model_class} takes one or two (embedding tables / the rest)"
            )
        head_labels = self.head_labels()
        for suffix, label in head_labels.items():
            if label not in self.data_config.label_fields:
                raise ValueError(f"task tower {suffix[1:]!r}: label_name {label!r} is not one of data_config.label_fields "
                                 f"{self.data_config.label_fields}")  # fmt: skip
        for tower in model.towers:
            indicator = tower.task_space_indicator_label
            if indicator is not None and indicator not in self.data_config.label_fields:
                raise ValueError(f"task tower {tower.tower_name!r}: task_space_indicator_label {indicator!r} is not one of "
                                 f"data_config.label_fields {self.data_config.label_fields}")  # fmt: skip
        task = model.task
        # a multi-task model is evaluated on its towers' metrics_set (see metric_groups)
        for metric in self.eval_config.metrics_set if not model.towers else []:
            # EasyRec computes the AUCs of a two-class softmax model on the second class's probability
            two_class = ("auc", "gauc", "session_auc") if task.kind == MULTICLASS and task.n_classes == 2 else ()
            if metric.name not in TASK_METRICS[task.kind] + two_class:
                raise ValueError(
                    f"eval_config.metrics_set: {metric.name} is not a metric of a {task.kind} model "
                    f"(loss_type {model.loss_type}, num_class {model.num_class}); it has {list(TASK_METRICS[task.kind])}"
                )
        for group in self.metric_groups():
            for metric in group.metrics:
                field = metric.gauc.uid_field if metric.gauc else metric.session_auc.session_id_field if metric.session_auc else None
                if field is not None and field not in fields:
                    raise ValueError(f"metrics_set: field {field!r} is not an input_field")
        for where, entries in [("model_config", model.losses)] + [(f"task tower {t.tower_name!r}", t.losses) for t in model.towers]:
            for entry in entries:
                if entry.jrc_loss is not None and entry.jrc_loss.session_name not in fields:
                    raise ValueError(f"{where}: jrc_loss.session_name {entry.jrc_loss.session_name!r} is not an input_field; "
                                     "JRC_LOSS groups the rows of a batch into sessions by its values")  # fmt: skip
        export = self.export_config
        if export.exporter_type == "best" or export.enable_early_stop:
            names = self.metric_names()
            if export.best_exporter_metric not in names:
                raise ValueError(
                    f"export_config.best_exporter_metric {export.best_exporter_metric!r} is not computed by this "
                    f"eval_config.metrics_set (it computes {names}); the best export and early stop compare it"
                )
        return self


# ---------------------------------------------------------------- EasyRec's schema
_MODELS_NOT_IMPLEMENTED = (
    "dummy multi_tower_recall dssm mind dropoutnet metric_learning pdn "
    "dssm_senet dat"
)
EASYREC_MESSAGES: dict[type[BaseModel], EasyRecMessage] = {
    **{spec.config: spec.message for spec in MODEL_SPECS},
    PipelineConfig: _message(
        "EasyRecConfig",
        not_implemented="kafka_train_input kafka_eval_input datahub_train_input datahub_eval_input hive_train_input "
        "hive_eval_input binary_train_input binary_eval_input fg_json_path",
    ),
    DataConfig: _message(
        "DatasetConfig",
        no_effect="file_shard pai_worker_slice_num eval_batch_size data_compression_type n_data_batch_tfrecord",
        not_implemented="label_sep label_dim extra_label_func selected_cols selected_col_types "
        "rtp_separator feature_fields negative_sampler negative_sampler_v2 hard_negative_sampler hard_negative_sampler_v2 "
        "negative_sampler_in_memory drop_remainder",
    ),
    InputField: _message(
        "Field", not_implemented="input_dim input_shape user_define_fn user_define_fn_path user_define_fn_res_type ignore_val"
    ),
    TrainConfig: _message(
        "TrainConfig",
        no_effect="sparse_accumulator_type num_gpus_per_worker summary_model_vars protocol tensor_fuse "
        "enable_oss_stop_signal dead_line",
        not_implemented="fine_tune_ckpt_var_map force_restore_shape_compatible freeze_gradient incr_save_config",
    ),
    EvalConfig: _message("EvalConfig", no_effect="max_evals save_graph"),
    EvalMetrics: _message("EvalMetrics"),
    TopKMetric: _message("RecallAtTopK"),
    AUCMetric: _message("AUC"),
    GAUCMetric: _message("GAUC"),
    SessionAUCMetric: _message("SessionAUC"),
    AccuracyMetric: _message("Accuracy"),
    ExportConfig: _message(
        "ExportConfig",
        no_effect="multi_placeholder placeholder_named_by_input filter_inputs export_features export_rtp_outputs "
        "asset_files auto_multi_value multi_value_fields",
        not_implemented="early_stop_func early_stop_params",
    ),
    FeatureConfig: _message(
        "FeatureConfig",
        not_implemented="initializer precision ev_params",
    ),
    FeatureConfigV2: _message("FeatureConfigV2", no_effect="embedding_on_cpu"),
    SequenceCombinerConfig: _message("SequenceCombiner", not_implemented="multi_head_attention"),
    AttentionCombinerConfig: _message("AttentionCombiner"),
    TextCNNConfig: _message("TextCNN", not_implemented="mlp"),
    FeatureGroupConfig: _message("FeatureGroupConfig", not_implemented="negative_sampler"),
    SeqAttGroupConfig: _message(
        "SeqAttGroupConfig"
    ),
    SeqAttMap: _message("SeqAttMap"),
    DNN: _message("DNN"),
    ModelConfig: _message(
        "EasyRecModel", no_effect="model_name",
        not_implemented=_MODELS_NOT_IMPLEMENTED + " ev_params kd restore_filters "
        "loss_weight_strategy label_name",
    ),
    Tower: _message("Tower"),
    TaskTowerConfig: _message("TaskTower", not_implemented="task_space_indicator_name task_space_indicator_value"),
    BayesTaskTowerConfig: _message("BayesTaskTower", not_implemented="task_space_indicator_name task_space_indicator_value"),
    ExpertTower: _message("ExpertTower"),
    ExtractionNetwork: _message("ExtractionNetwork"),
    ModelParams: _message(
        "ModelParams", not_implemented="outputs user_tower_idx_in_output item_tower_idx_in_output simi_func temperature scale_simi"
    ),
    BackboneConfig: _BACKBONE_MESSAGE,
    BlockConfig: _message("Block", not_implemented="raw_input embedding_layer"),
    BlockInput: _message("Input", not_implemented="package_name use_package_input reset_input package_input package_input_fn"),
    InputLayerConfig: _message(
        "InputLayer",
        not_implemented="feature_dropout_rate",
    ),
    LayerConfig: _message("Layer"),
    LambdaConfig: _message("Lambda"),
    RecurrentLayerConfig: _message("RecurrentLayer"),
    RepeatLayerConfig: _message("RepeatLayer", not_implemented="input_slice input_fn"),
    KerasLayerConfig: _message(
        "KerasLayer",
        not_implemented="nary_dis_embedding "
        "seq_aug overlap dot_product attention multi_head_attention transformer "
        "text_encoder",
    ),
    MLPParams: _message("MLP", no_effect="initializer use_final_bias", not_implemented="add_to_outputs"),
    FMLayerParams: _message("FM"),
    MMoELayerParams: _message("MMoELayer"),
    CINParams: _message("CIN"),
    SENetParams: _message("SENet"),
    BilinearParams: _message("Bilinear"),
    FiBiNetParams: _message("FiBiNet"),
    MaskBlockParams: _message("MaskBlock"),
    MaskNetParams: _message("MaskNet"),
    HighwayParams: _message("HighWayTower", no_effect="input init_gate_bias"),  # the backbone Highway layer reads neither
    WeightedGateParams: _message("WeightedGate"),
    DINEncoderParams: _message("DINEncoder"),
    BSTEncoderParams: _message("BSTEncoder"),
    PeriodicEmbeddingParams: _message("PeriodicEmbedding"),
    PPNetParams: _message("PPNet"),
    AITMTowerParams: _message("AITMTower"),
    GateNNParams: _message("GateNN"),
    AutoDisEmbeddingParams: _message("AutoDisEmbedding"),
    TextCNNLayerParams: _message("TextCNN"),
    CrossTower: _message("CrossTower"),
    BSTTower: _message("BSTTower"),
    LossConfig: _message(
        "Loss",
        not_implemented="softmax_loss circle_loss multi_simi_loss pairwise_focal_loss jrc_loss "
        "pairwise_hinge_loss listwise_rank_loss listwise_distill_loss ziln_loss",
    ),
    F1ReweightedLoss: _message("F1ReweighedLoss"),
    BinaryFocalLoss: _message("BinaryFocalLoss"),
    PairwiseLoss: _message("PairwiseLoss"),
    PairwiseLogisticLoss: _message("PairwiseLogisticLoss", not_implemented="hinge_margin"),
    CMBFTower: _message("CMBFTower"),
    UniterTower: _message("UniterTower"),
    VariationalDropoutConfig: _message("VariationalDropoutLayer"),
    Optimizer: _message(
        "Optimizer",
        not_implemented="adam_async_optimizer adam_asyncw_optimizer moving_average_decay",
    ),
    AdamWOptimizer: _message("AdamWOptimizer"),
    MomentumWOptimizer: _message("MomentumWOptimizer"),
    RMSPropOptimizer: _message("RMSPropOptimizer"),
    FtrlOptimizer: _message("FtrlOptimizer"),
    AdamOptimizer: _message("AdamOptimizer"),
    AdagradOptimizer: _message("AdagradOptimizer"),
    MomentumOptimizer: _message("MomentumOptimizer"),
    LearningRate: _message(
        "LearningRate", not_implemented="manual_step_learning_rate poly_decay_learning_rate transformer_learning_rate"
    ),
    ConstantLR: _message("ConstantLearningRate"),
    ExponentialDecayLR: _message("ExponentialDecayLearningRate", not_implemented="burnin_learning_rate burnin_steps"),
    CosineDecayLR: _message("CosineDecayLearningRate"),
}


def _drop_no_effect(data: Any, model: type[BaseModel] | None, dropped: list[str], path: str = "") -> Any:
    """``data`` without the fields that have no effect here (recorded in ``dropped``)."""
    if not isinstance(data, dict) or model is None:
        return data
    message = EASYREC_MESSAGES.get(model)
    out = {}
    for key, value in data.items():
        if message is not None and key in message.no_effect:
            dropped.append(f"{path}{key}")
            continue
        sub_model = field_model(model, key)
        if isinstance(value, list):
            out[key] = [_drop_no_effect(v, sub_model, dropped, f"{path}{key}.") for v in value]
        else:
            out[key] = _drop_no_effect(value, sub_model, dropped, f"{path}{key}.")
    return out


def _owner(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that owns the last field of an error location."""
    model: type[BaseModel] | None = PipelineConfig
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        model = field_model(model, part)
    return model


def _check_seq_group(seq_group: SeqAttGroupConfig, names: set[str], where: str, loc: tuple) -> None:
    for m, att in enumerate(seq_group.seq_att_map):
        for name in att.key + att.hist_seq + att.aux_hist_seq:
            if name not in names:
                raise ConfigRefError(loc + ("seq_att_map", m), f"{where} seq_att_map: feature {name!r} is not in feature_configs")


# --------------------------------------------------------------------------- loading
def _text_format_to_dict(text: str, path: str, lines: dict) -> dict:
    """An EasyRec `.config`, read as EasyRec reads it (``text_format.Merge``), into plain data."""
    return shape(parse(text, path), PipelineConfig, lines)


def _format_validation(error: ValidationError, path: str, lines: dict | None = None) -> str:
    out = []
    for item in error.errors():
        loc = error_loc(item)
        where = ".".join(str(p) for p in loc) or "(top level)"
        line = line_of(loc, lines or {})
        if line:
            where = f"line {line}: {where}"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            leaf = str(item["loc"][-1])
            easyrec = EASYREC_MESSAGES.get(_owner(tuple(item["loc"])))
            if easyrec is not None and leaf in easyrec.not_implemented:
                message = f"EasyRec field {leaf!r} (in {easyrec.name}) is not implemented yet by fusionrec"
            else:
                message = f"unknown field: EasyRec's {easyrec.name if easyrec else 'schema'} has no field {leaf!r}"
        elif "input" in item and item["type"] != "value_error":
            message += f" (got {item['input']!r})"
        out.append(f"{where}: {message}")
    return f"{path}: invalid pipeline config\n  " + "\n  ".join(out)


def error_loc(item: dict) -> tuple:
    """The path of a validation error: pydantic's, extended by a ``ConfigRefError``'s own."""
    cause = (item.get("ctx") or {}).get("error")
    return tuple(item["loc"]) + (cause.loc if isinstance(cause, ConfigRefError) else ())


def line_of(loc: tuple, lines: dict) -> int | None:
    """The line of a field path, or of its nearest parent the file names."""
    loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return None


def config_from_dict(data: dict, path: str = "<config>", lines: dict | None = None) -> PipelineConfig:
    data = _drop_no_effect(data, PipelineConfig, [])
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as error:
        raise FusionrecError(_format_validation(error, path, lines)) from None


def load_config(path: str | Path, edit_config_json: str | None = None) -> PipelineConfig:
    """Read a `.config` (EasyRec text format) or `.yaml`/`.yml` pipeline config and validate it.

    ``edit_config_json`` is EasyRec's ``--edit_config_json``: a JSON object of dotted paths to
    new values, e.g. ``{"train_config.num_steps": 10, "data_config.batch_size": 64}``.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise FusionrecError(f"pipeline config {str(path)!r}: cannot read ({error.strerror})") from None
    lines: dict = {}  # field path -> line, for the text format's error messages
    if path.suffix in (".yaml", ".yml"):
        data = yaml_with_lines(text, str(path), lines)
        if not isinstance(data, dict):
            raise FusionrecError(f"{path}: the top level must be a mapping of fields, got {type(data).__name__}")
    else:
        data = _text_format_to_dict(text, str(path), lines)
    if edit_config_json:
        apply_edits(data, edit_config_json)
    return config_from_dict(data, str(path), lines)


def apply_edits(data: dict, edit_config_json: str) -> None:
    try:
        edits = json.loads(edit_config_json)
    except json.JSONDecodeError as error:
        raise FusionrecError(f"--edit_config_json: not valid JSON ({error})") from None
    if not isinstance(edits, dict):
        raise FusionrecError("--edit_config_json: must be a JSON object of dotted paths to values")
    for dotted, value in edits.items():
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise FusionrecError(f"--edit_config_json: {dotted!r}: {part!r} is not a message")
        node[parts[-1]] = value


def dump_config(config: PipelineConfig) -> dict:
    """The resolved config as plain data (written beside checkpoints and exports)."""
    return config.model_dump(mode="json", by_alias=True, exclude_none=True)

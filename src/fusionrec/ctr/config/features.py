"""``feature_configs`` / ``feature_config``: EasyRec's FeatureConfig, one entry per feature."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from fusionrec.ctr.config._base import ConfigRefError, _Strict, check_activation
from fusionrec.ctr.config.feature_types import FEATURE_TYPE_RULES


class AttentionCombinerConfig(_Strict):
    """EasyRec's AttentionCombiner has no fields (``attention {}``)."""


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
        check_activation(self.activation, "text_cnn: ")
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
    def rules(self):
        """Its feature type's rules (``feature_types.FEATURE_TYPE_RULES``): output, sequence, key, weights."""
        return FEATURE_TYPE_RULES[self.feature_type]

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
        """The rules every feature type shares (which fields belong to which type), then its
        type's own (``feature_types.FEATURE_TYPE_RULES``)."""
        if self.feature_type not in FEATURE_TYPES:
            known = self.feature_type in EASYREC_FEATURE_TYPES_NOT_IMPLEMENTED
            raise ValueError(
                f"feature {self.name!r}: feature_type {self.feature_type!r} is "
                + ("not implemented yet by fusionrec" if known else "not an EasyRec feature type")
                + f"; fusionrec has {list(FEATURE_TYPES)}"
            )
        if self.seq_multi_sep is not None and (self.feature_type != "SequenceFeature" or len(self.seq_multi_sep.encode()) != 1
                                               or self.seq_multi_sep == self.separator):  # fmt: skip
            raise ValueError(f"feature {self.name!r}: seq_multi_sep is a SequenceFeature's, one byte other than its separator; "
                             f"got {self.seq_multi_sep!r} on a {self.feature_type} with separator {self.separator!r}")  # fmt: skip
        if self.sub_feature_type != "IdFeature" and self.feature_type != "SequenceFeature":
            raise ValueError(f"feature {self.name!r}: sub_feature_type is a SequenceFeature's, not a {self.feature_type}'s")
        if self.kv_separator is not None and self.feature_type != "LookupFeature" and (
                self.feature_type != "TagFeature" or len(self.kv_separator.encode()) != 1):  # fmt: skip
            raise ValueError(
                f"feature {self.name!r}: kv_separator is for TagFeature (key<kv>weight values) and LookupFeature, "
                f"a single byte; got {self.kv_separator!r} on a {self.feature_type}"
            )
        if (self.feature_type == "ExprFeature") != (self.expression is not None):
            raise ValueError(f"feature {self.name!r}: expression is what an ExprFeature computes, and only an ExprFeature's")
        if self.feature_type not in ("ComboFeature", "LookupFeature", "ExprFeature") and len(self.input_names) != 1:
            raise ValueError(f"feature {self.name!r} ({self.feature_type}): takes exactly one input_names entry")
        if self.min_val > self.max_val:
            raise ValueError(f"feature {self.name!r}: min_val {self.min_val} is greater than max_val {self.max_val}")
        if self.bucket_boundaries and self.embedding_dim == 0:
            raise ValueError(f"feature {self.name!r}: boundaries (or num_buckets) need embedding_dim > 0")
        if self.raw_input_dim > 1 and self.feature_type not in DENSE_FEATURE_TYPES and not self.is_raw_sequence:
            raise ValueError(f"feature {self.name!r}: raw_input_dim is for RawFeature, not {self.feature_type}")
        if (self.combo_join_sep or self.combo_input_seps) and self.feature_type != "ComboFeature":
            raise ValueError(f"feature {self.name!r}: combo_join_sep / combo_input_seps are for ComboFeature")
        if self.sequence_combiner is not None and self.feature_type != "SequenceFeature":
            raise ValueError(f"feature {self.name!r}: sequence_combiner is for SequenceFeature, not {self.feature_type}")
        if self.raw_input_dim > 1 and len(self.separator.encode()) != 1:
            raise ValueError(f"feature {self.name!r}: separator {self.separator!r} must be a single byte")
        if self.normalizer_fn is not None:
            raise ValueError(
                f"feature {self.name!r}: normalizer_fn (a TensorFlow function) is not supported; "
                "use min_val / max_val to scale to [0, 1]"
            )
        FEATURE_TYPE_RULES[self.feature_type].check(self)
        return self


class FeatureConfigV2(_Strict):
    features: list[FeatureConfig] = []


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


# ---------------------------------------------------------------- what the table reader checks or parses per feature
def _reader_option(features: list[FeatureConfig], option: str) -> dict:
    out: dict = {}
    for f in features:
        out.update(FEATURE_TYPE_RULES[f.feature_type].reader_options(f).get(option, {}))
    return out


def kv_maps(features: list[FeatureConfig]) -> dict[str, tuple[str, str, bool]]:
    """Field -> (separator, kv_separator, weights) of each LookupFeature map and weighted
    TagFeature: the reader checks that every entry is key<kv_separator>value (the value a
    decimal number for a TagFeature's weight)."""
    return _reader_option(features, "kv_maps")


def number_lists(features: list[FeatureConfig]) -> dict[str, tuple[str, str, int]]:
    """Input field -> (separator, seq_multi_sep or "", numbers per position or 0) of each
    RawFeature sequence: the reader checks that every element is a finite number and that
    an unbucketized 3-D sequence holds at most raw_input_dim numbers per position."""
    return _reader_option(features, "number_lists")


def vector_inputs(features: list[FeatureConfig]) -> dict[str, tuple[int, str]]:
    """Input field -> (raw_input_dim, separator) of each RawFeature of several values: the
    reader parses such a field into raw_input_dim numbers per row."""
    return _reader_option(features, "vectors")


def reader_options(features: list[FeatureConfig]) -> dict:
    """What the table reader needs to know of ``features`` (``fusionrec.ctr.data.TableReader``'s
    ``vectors``, ``kv_maps`` and ``number_lists``, from each type's ``reader_options``): every
    reader of a config's input passes them."""
    return {"vectors": vector_inputs(features), "kv_maps": kv_maps(features), "number_lists": number_lists(features)}

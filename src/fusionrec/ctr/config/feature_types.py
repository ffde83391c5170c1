"""EasyRec's feature types as a config knows them, one class each: the rules of the feature's own
fields (``check``), the input field types it reads (``check_inputs``), and what the table reader
must check or parse in its input (``reader_options``). ``FEATURE_TYPE_RULES`` registers them
(one line per type); ``FeatureConfig`` applies the rules every type shares, then its type's.
The transforms of the same types are ``fusionrec.ctr.features`` (torch): the config stays
importable without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fusionrec.ctr.expressions import compile_expression

if TYPE_CHECKING:
    from fusionrec.ctr.config.features import FeatureConfig

STRING = "STRING"
INTEGER_TYPES = ("INT32", "INT64")


class FeatureTypeRules:
    """A feature type with no rules of its own beyond those ``FeatureConfig`` applies to all.

    ``sequence``: its values can be a behaviour sequence (a DIN / BST history, a text group, a
    backbone sequence input). ``output(f)`` is how its transform's output is embedded: "ids"
    (one id per row: an embedding row), "bag" (several ids per row, pooled by ``combiner``),
    "dense" (numbers per row: as they are, or projected with ``embedding_dim``) or "value" (one
    computed number per row, never embedded)."""

    sequence = False

    def output(self, f: "FeatureConfig") -> str:
        return "ids"

    def can_be_key(self, f: "FeatureConfig") -> bool:
        """Whether it can be a DIN key or a sequence input's target: one id per row."""
        return False

    def weighted(self, f: "FeatureConfig") -> bool:
        """Whether each of its values comes with a weight (EasyRec's key<kv>weight tags)."""
        return False

    #: the reader options this type's input takes: {option: {field: value}}
    def reader_options(self, f: "FeatureConfig") -> dict[str, dict]:
        return {}

    def check(self, f: "FeatureConfig") -> None:
        """Raise ValueError naming the feature when its own fields break this type's rules."""

    def check_inputs(self, f: "FeatureConfig", types: dict[str, str]) -> str | None:
        """The rule the input fields' types (``types``: input name -> input_type) break, or None."""
        return self._num_buckets_rule(f, types) or self._vocab_rule(f, types)

    @staticmethod
    def _num_buckets_rule(f: "FeatureConfig", types: dict[str, str]) -> str | None:
        """num_buckets takes integer ids as they are (EasyRec's categorical_column_with_identity)."""
        kind = types[f.input_names[0]]
        if f.num_buckets and kind not in INTEGER_TYPES:
            return f"feature {f.name!r}: num_buckets needs an INT32 or INT64 input field; {f.input_names[0]!r} is {kind}"
        return None

    @staticmethod
    def _vocab_rule(f: "FeatureConfig", types: dict[str, str]) -> str | None:
        if (f.vocab_file or f.vocab_list) and types[f.input_names[0]] != STRING:
            return f"feature {f.name!r}: vocab_list / vocab_file need a STRING input field"
        return None

    @staticmethod
    def _one_id_space(f: "FeatureConfig") -> None:
        """Ids come from exactly one of hash_bucket_size, num_buckets, a vocabulary, into an embedding."""
        kinds = [bool(f.hash_bucket_size), bool(f.num_buckets), bool(f.vocab_list or f.vocab_file)]
        if sum(kinds) != 1:
            raise ValueError(f"feature {f.name!r} ({f.feature_type}): set exactly one of hash_bucket_size, num_buckets, "
                             "vocab_list / vocab_file")  # fmt: skip
        if f.feature_type == "ComboFeature" and not f.hash_bucket_size:
            raise ValueError(f"feature {f.name!r} (ComboFeature): needs hash_bucket_size")
        if f.embedding_dim == 0:
            raise ValueError(f"feature {f.name!r}: embedding_dim must be > 0")


class IdFeatureRules(FeatureTypeRules):
    def can_be_key(self, f):
        return True

    def check(self, f):
        self._one_id_space(f)

    def check_inputs(self, f, types):
        kind = types[f.input_names[0]]
        if broken := self._num_buckets_rule(f, types):
            return broken
        if kind in ("FLOAT", "DOUBLE"):
            return f"feature {f.name!r} (IdFeature): input {f.input_names[0]!r} is {kind}; ids must be STRING or integer fields"
        return self._vocab_rule(f, types)


class TagFeatureRules(FeatureTypeRules):
    sequence = True

    def output(self, f):
        return "bag"

    def weighted(self, f):
        return bool(f.kv_separator)

    def check(self, f):
        self._one_id_space(f)
        if len(f.separator.encode()) != 1:
            raise ValueError(f"feature {f.name!r}: separator {f.separator!r} must be a single byte")

    def check_inputs(self, f, types):
        if broken := self._num_buckets_rule(f, types):  # num_buckets of a STRING field: refused as of any type
            return broken
        if types[f.input_names[0]] != STRING:
            return f"feature {f.name!r}: TagFeature needs a STRING input field"
        return self._vocab_rule(f, types)

    def reader_options(self, f):
        # key<kv_separator>weight tokens: the reader checks each weight is a decimal number
        return {"kv_maps": {f.input_names[0]: (f.separator, f.kv_separator, True)}} if f.kv_separator else {}


class SequenceFeatureRules(FeatureTypeRules):
    sequence = True

    def output(self, f):
        return "bag"

    def check(self, f):
        if f.seq_multi_sep is not None:
            if f.is_raw_sequence and not f.bucket_boundaries and f.raw_input_dim < 2:
                raise ValueError(f"feature {f.name!r}: seq_multi_sep on an unbucketized RawFeature sequence holds "
                                 "raw_input_dim numbers per position; set raw_input_dim >= 2 (as EasyRec's 3-D raw sequence)")  # fmt: skip
            if f.sequence_combiner is not None:
                raise ValueError(f"feature {f.name!r}: a sequence_combiner over a seq_multi_sep sequence is not implemented "
                                 "yet by fusionrec")  # fmt: skip
        if f.is_raw_sequence:
            if f.hash_bucket_size or f.vocab_list or f.vocab_file:
                raise ValueError(f"feature {f.name!r}: a sub_feature_type RawFeature sequence holds numbers; "
                                 "hash_bucket_size and vocabularies need sub_feature_type IdFeature (as EasyRec asserts)")  # fmt: skip
            if f.embedding_dim == 0:
                raise ValueError(f"feature {f.name!r}: a RawFeature sequence without embedding_dim is not implemented yet "
                                 "by fusionrec")  # fmt: skip
            if f.raw_input_dim != 1 and (f.seq_multi_sep is None or f.bucket_boundaries):
                raise ValueError(f"feature {f.name!r}: a RawFeature sequence of raw_input_dim {f.raw_input_dim} holds "
                                 "that many unbucketized numbers per position, joined by seq_multi_sep; set seq_multi_sep "
                                 "and no boundaries / num_buckets")  # fmt: skip
        else:
            self._one_id_space(f)
        if len(f.separator.encode()) != 1:
            raise ValueError(f"feature {f.name!r}: separator {f.separator!r} must be a single byte")

    def check_inputs(self, f, types):
        kind = types[f.input_names[0]]
        if f.is_raw_sequence:
            if kind != STRING:
                return (f"feature {f.name!r}: a RawFeature sequence reads numbers joined by {f.separator!r} from a "
                        f"STRING field; {f.input_names[0]!r} is {kind}")  # fmt: skip
            return None
        if broken := self._num_buckets_rule(f, types):  # num_buckets of a STRING field: refused as of any type
            return broken
        if kind != STRING:
            return f"feature {f.name!r}: SequenceFeature needs a STRING input field"
        return self._vocab_rule(f, types)

    def reader_options(self, f):
        # a sequence of numbers: the reader checks every element (and, 3-D, the numbers per position)
        if not f.is_raw_sequence:
            return {}
        per_position = f.raw_input_dim if f.raw_input_dim > 1 else 0
        return {"number_lists": {f.input_names[0]: (f.separator, f.seq_multi_sep or "", per_position)}}


class ComboFeatureRules(FeatureTypeRules):
    def output(self, f):
        return "bag" if any(f.combo_input_seps) else "ids"  # a sparse cross of split values: several ids

    def check(self, f):
        self._one_id_space(f)
        if len(f.input_names) < 2:
            raise ValueError(f"feature {f.name!r} (ComboFeature): needs at least two input_names")
        if f.combo_input_seps and (len(f.combo_input_seps) != len(f.input_names)
                                   or any(len(sep.encode()) > 1 for sep in f.combo_input_seps)):  # fmt: skip
            raise ValueError(f"feature {f.name!r}: combo_input_seps {f.combo_input_seps} needs one entry per input_names "
                             f"entry ({len(f.input_names)}), each empty (one value) or a single byte")  # fmt: skip

    def check_inputs(self, f, types):
        if any(sep and types[n] != STRING for n, sep in zip(f.input_names, f.combo_input_seps)):
            return f"feature {f.name!r} (ComboFeature): combo_input_seps splits STRING fields only"
        if any(types[n] not in (STRING, *INTEGER_TYPES) for n in f.input_names):
            return (f"feature {f.name!r} (ComboFeature): crossing FLOAT, DOUBLE or BOOL inputs is not implemented yet by "
                    "fusionrec; STRING and integer fields are crossed")  # fmt: skip
        return super().check_inputs(f, types)


class LookupFeatureRules(FeatureTypeRules):
    def output(self, f):
        return "bag"

    def check(self, f):
        self._one_id_space(f)
        if len(f.input_names) != 2 or not f.hash_bucket_size or not f.feature_name:
            raise ValueError(f"feature {f.name!r} (LookupFeature): needs a feature_name, hash_bucket_size and two "
                             "input_names (the key field, then the key<kv_separator>value map field)")  # fmt: skip
        if f.kv_separator is None or len(f.kv_separator.encode()) != 1 or len(f.separator.encode()) != 1:
            raise ValueError(f"feature {f.name!r} (LookupFeature): separator and kv_separator must be single bytes")

    def check_inputs(self, f, types):
        if any(types[n] != STRING for n in f.input_names):
            return f"feature {f.name!r} (LookupFeature): its key and map fields must be STRING"
        return super().check_inputs(f, types)

    def reader_options(self, f):
        # the map's key<kv_separator>value entries: the reader checks each has one separator
        return {"kv_maps": {f.input_names[1]: (f.separator, f.kv_separator, False)}}


class ExprFeatureRules(FeatureTypeRules):
    def output(self, f):
        return "value"  # a computed number, as EasyRec's numeric column

    def check(self, f):
        if not f.feature_name:
            raise ValueError(f"feature {f.name!r} (ExprFeature): needs a feature_name")
        compile_expression(f.expression, list(f.input_names))

    def check_inputs(self, f, types):
        if any(types[n] == STRING for n in f.input_names):
            return f"feature {f.name!r} (ExprFeature): its input_names must be numeric fields, not STRING"
        return super().check_inputs(f, types)


class RawFeatureRules(FeatureTypeRules):
    def output(self, f):
        return "ids" if f.bucket_boundaries else "dense"

    def can_be_key(self, f):
        return bool(f.bucket_boundaries) and f.feature_type == "RawFeature"

    def check(self, f):
        if f.raw_input_dim > 1 and f.bucket_boundaries:
            raise ValueError(f"feature {f.name!r}: bucketizing a RawFeature of raw_input_dim {f.raw_input_dim} is not "
                             "implemented yet by fusionrec")  # fmt: skip

    def check_inputs(self, f, types):
        kind = types[f.input_names[0]]
        if (kind == STRING) != (f.raw_input_dim > 1):
            return (f"feature {f.name!r}: a RawFeature reads one number from a numeric input field, or raw_input_dim > 1 "
                    f"numbers joined by its separator from a STRING field; {f.input_names[0]!r} is {kind} and "
                    f"raw_input_dim is {f.raw_input_dim}")  # fmt: skip
        return self._vocab_rule(f, types)  # num_buckets buckets the value: any numeric field

    def reader_options(self, f):
        # raw_input_dim numbers joined by the separator: the reader parses them into a vector
        return {"vectors": {f.input_names[0]: (f.raw_input_dim, f.separator)}} if f.raw_input_dim > 1 else {}


class PassThroughFeatureRules(RawFeatureRules):
    def check(self, f):
        if f.boundaries or f.num_buckets or f.embedding_dim or f.max_val > f.min_val:
            raise ValueError(f"feature {f.name!r} (PassThroughFeature): passes its value as it is; boundaries, "
                             "num_buckets, embedding_dim and min_val / max_val are RawFeature's")  # fmt: skip
        super().check(f)


# EasyRec's feature_type -> its rules (fusionrec.ctr.features.FEATURE_MODULES has its transform)
FEATURE_TYPE_RULES: dict[str, FeatureTypeRules] = {
    "IdFeature": IdFeatureRules(),
    "RawFeature": RawFeatureRules(),
    "TagFeature": TagFeatureRules(),
    "ComboFeature": ComboFeatureRules(),
    "SequenceFeature": SequenceFeatureRules(),
    "ExprFeature": ExprFeatureRules(),
    "LookupFeature": LookupFeatureRules(),
    "PassThroughFeature": PassThroughFeatureRules(),
}

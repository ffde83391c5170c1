"""Columns for the trees: EasyRec input fields -> a float32 matrix a boosted model splits on.

fusionrec.gbdt splits numbers, so each input field is read one way (``gbdt.columns`` in the
pipeline config; the defaults follow the field's type and the features that read it):

* ``numeric``: the field's value (INT*, FLOAT, DOUBLE, BOOL fields; the default for them);
* ``frequency``: how often the value occurred in the rows the trees were fitted on (the
  default for a single-valued STRING field); a value never seen there is 0 and counted;
* ``ordinal``: the value's rank by frequency there (0 = most frequent) among the
  ``max_categories`` most frequent values; rarer and unseen values are missing (the trees'
  default direction decides them) and the unseen ones are counted;
* ``count``: the number of entries of a list field (a TagFeature's or SequenceFeature's
  separator; the default for those);
* ``skip``: not used (the default for fields no feature reads, such as a day column).

An empty STRING value is missing (NaN). The fitted state is plain JSON (values and counts).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fusionrec.errors import FusionrecError

LIST_FEATURE_TYPES = ("TagFeature", "SequenceFeature")
NUMERIC_TYPES = ("INT32", "INT64", "FLOAT", "DOUBLE", "BOOL")
TABULAR_FORMAT = "fusionrec.pipeline.tabular"


def default_encodings(data_config, features, overrides: dict[str, str]) -> dict[str, tuple[str, str]]:
    """Input field -> (encoding, list separator) for every non-label input field."""
    read_by: dict[str, list] = {}
    for feature in features:
        for name in feature.input_names:
            read_by.setdefault(name, []).append(feature)
    out = {}
    for field in data_config.input_fields:
        name = field.input_name
        if name in data_config.label_fields or name == data_config.sample_weight:
            continue
        readers = read_by.get(name, [])
        list_reader = next((f for f in readers if f.feature_type in LIST_FEATURE_TYPES), None)
        separator = list_reader.separator if list_reader is not None else "|"
        if name in overrides:
            kind = overrides[name]
        elif not readers:
            kind = "skip"
        elif field.input_type in NUMERIC_TYPES:
            kind = "numeric"
        elif list_reader is not None:
            kind = "count"
        else:
            kind = "frequency"
        if kind == "numeric" and field.input_type not in NUMERIC_TYPES:
            raise FusionrecError(f"gbdt.columns.{name}: 'numeric' needs a numeric input field; {name!r} is {field.input_type}")
        out[name] = (kind, separator)
    return out


@dataclass
class TabularEncoder:
    """Fitted column encodings; ``transform`` maps typed input tables (``TableReader``'s) to a matrix."""

    encodings: dict[str, tuple[str, str]]  # field -> (encoding, separator)
    max_categories: int = 254
    vocabularies: dict | None = None  # field -> (values, numbers) after fit

    @property
    def feature_names(self) -> list[str]:
        return [name if kind != "count" else f"{name}.count" for name, (kind, _) in self.encodings.items() if kind != "skip"]

    def fit(self, table: pa.Table) -> "TabularEncoder":
        self.vocabularies = {}
        for name, (kind, _) in self.encodings.items():
            if kind not in ("frequency", "ordinal"):
                continue
            column = _strings(table.column(name))
            counted = pc.value_counts(pc.drop_null(pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)))
            values = counted.field("values").to_pylist()
            counts = counted.field("counts").to_numpy().astype(np.int64)
            order = np.lexsort((np.asarray(values, dtype=object).astype(str), -counts))  # most frequent first, ties by value
            values = [values[i] for i in order]
            counts = counts[order]
            if kind == "ordinal":  # values past max_categories are kept (seen, so not counted unseen) as missing
                numbers = np.where(np.arange(len(values)) < self.max_categories, np.arange(len(values)), np.nan)
            else:
                numbers = counts.astype(np.float64)
            self.vocabularies[name] = (values, numbers)
        return self

    def transform(self, table: pa.Table, unseen: Counter | None = None) -> np.ndarray:
        """(n, n_features) float32, NaN where missing; ``unseen`` counts values not seen in fit."""
        if self.vocabularies is None:
            raise FusionrecError("TabularEncoder: transform before fit")
        n = table.num_rows
        out = np.empty((n, len(self.feature_names)), dtype=np.float32)
        j = 0
        for name, (kind, separator) in self.encodings.items():
            if kind == "skip":
                continue
            if name not in table.column_names:
                raise FusionrecError(f"input column {name!r} is missing (the trees read it as {kind})")
            column = table.column(name)
            if kind == "numeric":
                values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
                out[:, j] = np.where(np.isnan(values), np.nan, values)
            elif kind == "count":
                text = _strings(column)
                parts = pc.split_pattern(pc.fill_null(text, ""), separator)
                tokens = pc.list_flatten(parts)
                rows = pc.list_parent_indices(parts).to_numpy(zero_copy_only=False)
                non_empty = pc.not_equal(tokens, "").to_numpy(zero_copy_only=False)
                out[:, j] = np.bincount(rows[non_empty], minlength=n)[:n]
            else:
                values, numbers = self.vocabularies[name]
                text = _strings(column)
                index = pc.index_in(text, value_set=pa.array(values, pa.string())).to_numpy(zero_copy_only=False)
                empty = pc.fill_null(pc.equal(text, ""), True).to_numpy(zero_copy_only=False)
                index = np.nan_to_num(index.astype(np.float64), nan=-1).astype(np.int64)
                found = index >= 0
                missing_value = 0.0 if kind == "frequency" else np.nan
                column_out = np.full(n, missing_value, dtype=np.float64)
                column_out[found] = numbers[index[found]]
                column_out[empty] = np.nan
                out[:, j] = column_out
                if unseen is not None:
                    n_unseen = int((~found & ~empty).sum())
                    if n_unseen:
                        unseen[name] += n_unseen
            j += 1
        return out

    # -- plain-data state (no pickle) ---------------------------------------------------
    def state(self) -> dict:
        return {
            "format": TABULAR_FORMAT, "version": 1, "max_categories": self.max_categories,
            "columns": [{"field": name, "encoding": kind, "separator": sep,
                         **({"values": self.vocabularies[name][0], "numbers": [None if np.isnan(x) else x for x in self.vocabularies[name][1].tolist()]}
                            if name in (self.vocabularies or {}) else {})}
                        for name, (kind, sep) in self.encodings.items()],
        }  # fmt: skip

    @classmethod
    def from_state(cls, state: dict, source: str) -> "TabularEncoder":
        try:
            if state.get("format") != TABULAR_FORMAT or state.get("version") != 1:
                raise ValueError("not a fusionrec tabular encoder of version 1")
            encodings, vocabularies = {}, {}
            for entry in state["columns"]:
                if entry["encoding"] not in ("numeric", "frequency", "ordinal", "count", "skip"):
                    raise ValueError(f"column {entry['field']!r}: unknown encoding {entry['encoding']!r}")
                encodings[str(entry["field"])] = (entry["encoding"], str(entry["separator"]))
                if entry["encoding"] in ("frequency", "ordinal"):
                    values = [str(v) for v in entry["values"]]
                    numbers = np.array([np.nan if v is None else float(v) for v in entry["numbers"]], dtype=np.float64)
                    if len(values) != len(numbers):
                        raise ValueError(f"column {entry['field']!r}: {len(values)} values but {len(numbers)} numbers")
                    vocabularies[str(entry["field"])] = (values, numbers)
            return cls(encodings, int(state["max_categories"]), vocabularies)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise FusionrecError(f"{source}: not a valid tabular encoder ({error})") from None


def _strings(column) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column if pa.types.is_string(column.type) or pa.types.is_large_string(column.type) else pc.cast(column, pa.string())

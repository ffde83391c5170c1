"""Columns for the trees: EasyRec input fields -> a float32 matrix a boosted model splits on.

fusionrec.gbdt splits numbers, so each input field is read one way (``gbdt.columns`` in the
pipeline config; the defaults follow the field's type and the features that read it):

* ``numeric``: the field's value (INT*, FLOAT, DOUBLE, BOOL fields; the default for them);
* ``frequency``: how often the value occurred in the rows the trees were fitted on (the
  default for a single-valued STRING field); a value never seen there is 0 and counted;
* ``ordinal``: the value's rank by frequency there (0 = most frequent) among the
  ``max_categories`` most frequent values; rarer and unseen values are missing (the trees'
  default direction decides them) and the unseen ones are counted;
* ``target``: the value's smoothed click rate (scikit-learn's ``TargetEncoder``; the fit
  rows' own values are cross-fitted, each encoded by the other folds, so no row sees its
  own label); an unseen value gets the overall rate and is counted;
* ``count``: the number of entries of a list field (a TagFeature's or SequenceFeature's
  separator; the default for those);
* ``vector``: the raw_input_dim numbers of a RawFeature of several values, one column each
  (``<field>.0``, ``<field>.1``, ...; the default for such a field, which the reader parses);
* ``skip``: not used (the default for fields no feature reads, such as a day column).

``gbdt.matches`` adds, per (value field, list field) pair, how often the row's value occurs
in its list (the ad's category among the user's recent categories).

An empty STRING value is missing (NaN). The fitted state is plain JSON (values and numbers).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fusionrec.errors import FusionrecError

LIST_FEATURE_TYPES = ("TagFeature", "SequenceFeature")
NUMERIC_TYPES = ("INT32", "INT64", "FLOAT", "DOUBLE", "BOOL")
TABULAR_FORMAT = "fusionrec.pipeline.tabular"
COLUMN_KINDS = ("numeric", "frequency", "ordinal", "target", "count", "vector", "skip")
DENSE_FEATURE_TYPES = ("RawFeature", "PassThroughFeature")


def default_encodings(data_config, features, overrides: dict[str, str]) -> dict[str, tuple[str, str]]:
    """Input field -> (encoding, list separator) for every non-label input field."""
    read_by: dict[str, list] = {}
    for feature in features:
        for name in feature.input_names:
            read_by.setdefault(name, []).append(feature)
    out = {}
    for input_field in data_config.input_fields:
        name = input_field.input_name
        if name in data_config.label_fields or name == data_config.sample_weight:
            continue
        readers = read_by.get(name, [])
        list_reader = next((f for f in readers if f.feature_type in LIST_FEATURE_TYPES), None)
        # a RawFeature of several numbers: the reader parses the field into raw_input_dim of them
        vector_reader = next((f for f in readers if f.feature_type in DENSE_FEATURE_TYPES and f.raw_input_dim > 1), None)
        separator = list_reader.separator if list_reader is not None else "|"
        if name in overrides:
            kind = overrides[name]
        elif not readers:
            kind = "skip"
        elif vector_reader is not None:
            kind = "vector"
        elif input_field.input_type in NUMERIC_TYPES:
            kind = "numeric"
        elif list_reader is not None:
            kind = "count"
        else:
            kind = "frequency"
        if kind == "numeric" and input_field.input_type not in NUMERIC_TYPES:
            raise FusionrecError(f"gbdt.columns.{name}: 'numeric' needs a numeric input field; {name!r} is {input_field.input_type}")
        if (kind == "vector") != (vector_reader is not None):
            raise FusionrecError(f"gbdt.columns.{name}: 'vector' is the encoding of a field a RawFeature reads as raw_input_dim > 1 "
                                 f"numbers, and the only one such a field takes; got {kind!r}")  # fmt: skip
        out[name] = (kind, separator)
    return out


@dataclass
class TabularEncoder:
    """Fitted column encodings; ``transform`` maps typed input tables (``TableReader``'s) to a matrix."""

    encodings: dict[str, tuple[str, str]]  # field -> (encoding, separator)
    max_categories: int = 254
    vocabularies: dict | None = None  # field -> (values, numbers) after fit
    matches: list[tuple[str, str, str]] = field(default_factory=list)  # (value field, list field, separator)
    defaults: dict = field(default_factory=dict)  # target: the number of a value not seen in fit
    widths: dict = field(default_factory=dict)  # vector: the numbers per row, after fit

    @property
    def feature_names(self) -> list[str]:
        names = []
        for name, (kind, _) in self.encodings.items():
            if kind == "vector":
                names += [f"{name}.{i}" for i in range(self.widths.get(name, 0))]
            elif kind != "skip":
                names.append(name if kind != "count" else f"{name}.count")
        return names + [f"{value}.in.{values}" for value, values, _ in self.matches]

    def _columns_of(self, name: str, kind: str) -> int:
        return self.widths[name] if kind == "vector" else int(kind != "skip")

    def fit_transform(self, table: pa.Table, y: np.ndarray, seed: int) -> np.ndarray:
        """Fit on ``table`` and return its matrix. A ``target`` column of the fit rows is
        cross-fitted (scikit-learn's TargetEncoder: each row's value is encoded by the other
        folds' rows), so the trees never see a row's own label in its features."""
        self.vocabularies = {}
        cross_fitted = {}
        for name, (kind, _) in self.encodings.items():
            if kind == "vector":
                self.widths[name] = _vector_width(_column(table, name, kind), name)
            if kind in ("frequency", "ordinal"):
                self.vocabularies[name] = self._ranked(_strings(table.column(name)), kind)
            elif kind == "target":
                cross_fitted[name] = self._fit_target(name, _strings(table.column(name)), y, seed)
        X = self.transform(table)
        j = 0
        for name, (kind, _) in self.encodings.items():
            if name in cross_fitted:
                X[:, j] = cross_fitted[name]
            j += self._columns_of(name, kind)
        return X

    def _ranked(self, column: pa.Array, kind: str) -> tuple[list, np.ndarray]:
        counted = pc.value_counts(pc.drop_null(pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)))
        values = counted.field("values").to_pylist()
        counts = counted.field("counts").to_numpy().astype(np.int64)
        order = np.lexsort((np.asarray(values, dtype=object).astype(str), -counts))  # most frequent first, ties by value
        values = [values[i] for i in order]
        counts = counts[order]
        if kind == "ordinal":  # values past max_categories are kept (seen, so not counted unseen) as missing
            return values, np.where(np.arange(len(values)) < self.max_categories, np.arange(len(values)), np.nan)
        return values, counts.astype(np.float64)

    def _fit_target(self, name: str, column: pa.Array, y: np.ndarray, seed: int) -> np.ndarray:
        from sklearn.model_selection import StratifiedKFold
        from sklearn.preprocessing import TargetEncoder

        values = np.asarray(column.to_pylist(), dtype=object).reshape(-1, 1)
        empty = values[:, 0] == ""
        folds = StratifiedKFold(5, shuffle=True, random_state=seed)
        encoder = TargetEncoder(target_type="binary", smooth="auto", cv=folds)
        train_codes = encoder.fit_transform(values, (y >= 0.5).astype(int))[:, 0]
        categories = list(encoder.categories_[0])
        numbers = np.asarray(encoder.encodings_[0], dtype=np.float64)
        keep = [i for i, v in enumerate(categories) if v != ""]
        self.vocabularies[name] = ([categories[i] for i in keep], numbers[keep])
        self.defaults[name] = float(encoder.target_mean_)
        return np.where(empty, np.nan, train_codes)

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
            column = _column(table, name, kind)
            if kind == "vector":
                width, given = self.widths[name], _vector_width(column, name)
                if given != width:
                    raise FusionrecError(f"input column {name!r}: {given} numbers per row; the trees were fitted on {width}")
                values = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.float32)
                out[:, j : j + width] = values.reshape(n, width)
                j += width
                continue
            if kind == "numeric":
                out[:, j] = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
            elif kind == "count":
                tokens, rows = _tokens(column, separator)
                non_empty = pc.not_equal(tokens, "").to_numpy(zero_copy_only=False)
                out[:, j] = np.bincount(rows[non_empty], minlength=n)[:n]
            else:
                values, numbers = self.vocabularies[name]
                text = _strings(column)
                index = pc.index_in(text, value_set=pa.array(values, pa.string())).to_numpy(zero_copy_only=False)
                index = np.nan_to_num(index.astype(np.float64), nan=-1).astype(np.int64)
                found = index >= 0
                empty = pc.fill_null(pc.equal(text, ""), True).to_numpy(zero_copy_only=False)
                column_out = np.full(n, {"frequency": 0.0, "ordinal": np.nan}.get(kind, self.defaults.get(name, np.nan)))
                column_out[found] = numbers[index[found]]
                column_out[empty] = np.nan
                out[:, j] = column_out
                n_unseen = int((~found & ~empty).sum())
                if unseen is not None and n_unseen:
                    unseen[name] += n_unseen
            j += 1
        for value_field, list_field, separator in self.matches:
            # how often the row's value occurs in its list (EasyRec's feature generation calls this a match feature)
            value = _strings(_column(table, value_field, "match"))
            tokens, rows = _tokens(_column(table, list_field, "match"), separator)
            hits = pc.equal(tokens, value.take(pa.array(rows))).to_numpy(zero_copy_only=False)
            out[:, j] = np.bincount(rows[hits], minlength=n)[:n]
            j += 1
        return out

    # -- plain-data state (no pickle) ---------------------------------------------------
    def state(self) -> dict:
        return {
            "format": TABULAR_FORMAT, "version": 1, "max_categories": self.max_categories,
            "matches": [list(m) for m in self.matches], "defaults": self.defaults,
            "columns": [{"field": name, "encoding": kind, "separator": sep,
                         **({"width": self.widths[name]} if kind == "vector" else {}),
                         **({"values": self.vocabularies[name][0], "numbers": [None if np.isnan(x) else x for x in self.vocabularies[name][1].tolist()]}
                            if name in (self.vocabularies or {}) else {})}
                        for name, (kind, sep) in self.encodings.items()],
        }  # fmt: skip

    @classmethod
    def from_state(cls, state: dict, source: str) -> "TabularEncoder":
        try:
            if state.get("format") != TABULAR_FORMAT or state.get("version") != 1:
                raise ValueError("not a fusionrec tabular encoder of version 1")
            encodings, vocabularies, widths = {}, {}, {}
            for entry in state["columns"]:
                if entry["encoding"] not in COLUMN_KINDS:
                    raise ValueError(f"column {entry['field']!r}: unknown encoding {entry['encoding']!r}")
                encodings[str(entry["field"])] = (entry["encoding"], str(entry["separator"]))
                if entry["encoding"] == "vector":
                    widths[str(entry["field"])] = int(entry["width"])
                if entry["encoding"] in ("frequency", "ordinal", "target"):
                    values = [str(v) for v in entry["values"]]
                    numbers = np.array([np.nan if v is None else float(v) for v in entry["numbers"]], dtype=np.float64)
                    if len(values) != len(numbers):
                        raise ValueError(f"column {entry['field']!r}: {len(values)} values but {len(numbers)} numbers")
                    vocabularies[str(entry["field"])] = (values, numbers)
            matches = [(str(a), str(b), str(c)) for a, b, c in state.get("matches", [])]
            defaults = {str(k): float(v) for k, v in state.get("defaults", {}).items()}
            return cls(encodings, int(state["max_categories"]), vocabularies, matches, defaults, widths)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise FusionrecError(f"{source}: not a valid tabular encoder ({error})") from None


def _column(table: pa.Table, name: str, kind: str):
    if name not in table.column_names:
        raise FusionrecError(f"input column {name!r} is missing (the trees read it as {kind})")
    column = table.column(name)
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _vector_width(column, name: str) -> int:
    """The numbers per row of a parsed RawFeature column (a fixed-size list)."""
    if not pa.types.is_fixed_size_list(column.type):
        raise FusionrecError(f"input column {name!r}: the trees read it as a vector of numbers, got {column.type}")
    return int(column.type.list_size)


def _tokens(column, separator: str) -> tuple[pa.Array, np.ndarray]:
    """The entries of a list column and the row of each."""
    parts = pc.split_pattern(pc.fill_null(_strings(column), ""), separator)
    return pc.list_flatten(parts), pc.list_parent_indices(parts).to_numpy(zero_copy_only=False)


def _strings(column) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column if pa.types.is_string(column.type) or pa.types.is_large_string(column.type) else pc.cast(column, pa.string())

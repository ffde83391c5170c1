"""Turn user inputs into the engine's arrays, or say exactly what is wrong with them.

Features become a C-ordered float32 matrix or a float32 CSR matrix (absent sparse
entries are missing values, as in XGBoost; a sparse input is never densified). NaN is
the missing value; +-inf, values that overflow float32 and non-numeric columns are
errors naming the column, the row and the value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from fusionrec.errors import DataTypeError, FusionrecError

FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class FeatureMatrix:
    """Validated features: ``values`` is float32 ndarray (C order) or CSR; names and types."""

    values: np.ndarray | sp.csr_matrix
    feature_names: list[str] | None
    feature_types: list[str]

    @property
    def n_rows(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.values.shape[1])

    @property
    def is_sparse(self) -> bool:
        return sp.issparse(self.values)


def _module_of(obj: Any) -> str:
    return type(obj).__module__.split(".")[0]


def to_feature_matrix(data: Any, what: str = "X") -> FeatureMatrix:
    """Convert ``data`` (numpy, pandas, polars, pyarrow, scipy.sparse, lists) and validate it."""
    if data is None:
        raise FusionrecError(f"{what}: got None, expected a 2-D array, DataFrame, Arrow table or sparse matrix")
    module = _module_of(data)
    if sp.issparse(data):
        matrix = _from_sparse(data, what)
    elif module == "pandas" and hasattr(data, "columns"):
        matrix = _from_columns(
            [str(c) for c in data.columns],
            [str(t) for t in data.dtypes],
            lambda i: data.iloc[:, i],
            len(data),
            what,
            kind_of=lambda col: _numpy_kind(col.dtype),
            to_numpy=lambda col: col.to_numpy(dtype=np.float64, na_value=np.nan),
        )
    elif module == "polars" and hasattr(data, "schema"):
        matrix = _from_polars(data, what)
    elif module == "pyarrow" and hasattr(data, "schema"):
        matrix = _from_arrow(data, what)
    else:
        matrix = _from_array(data, what)
    if matrix.n_rows == 0:
        raise FusionrecError(
            f"{what}: Found array with 0 sample(s) (shape={matrix.values.shape}) while a minimum of 1 is required."
        )
    if matrix.n_features == 0:
        raise FusionrecError(
            f"{what}: Found array with 0 feature(s) (shape={matrix.values.shape}) while a minimum of 1 is required."
        )
    return matrix


def _from_array(data: Any, what: str) -> FeatureMatrix:
    try:
        array = np.asarray(data)
    except Exception as exc:  # ragged lists and the like
        raise FusionrecError(f"{what}: cannot be read as a 2-D numeric array ({exc})") from None
    if array.ndim != 2:
        raise FusionrecError(
            f"{what}: expected a 2-D array, got {array.ndim}-D with shape {array.shape}; "
            "Reshape your data either using X.reshape(-1, 1) if it has one feature or X.reshape(1, -1) if it is one row"
        )
    if array.dtype.kind == "c":
        raise FusionrecError(f"{what}: Complex data not supported (dtype {array.dtype})")
    if array.dtype.kind == "O":
        try:
            array = array.astype(np.float64)
        except (TypeError, ValueError) as exc:
            bad = _first_non_numeric_columns(array)
            raise DataTypeError(
                f"{what}: non-numeric column(s) {bad} in an object array ({exc}); encode strings and categories as numbers first"
            ) from None
    if array.dtype.kind not in "biuf":
        bad = _first_non_numeric_columns(array)
        raise DataTypeError(
            f"{what}: dtype {array.dtype} is not numeric; non-numeric column(s) {bad} "
            "(encode strings and categories as numbers first)"
        )
    kind = "int" if array.dtype.kind in "iu" else "bool" if array.dtype.kind == "b" else "float"
    values = _to_float32(array, what, None)
    return FeatureMatrix(values, None, [kind] * array.shape[1])


def _first_non_numeric_columns(array: np.ndarray) -> list[int]:
    if array.dtype.kind != "O" or array.ndim != 2:
        return list(range(array.shape[1]))[:20] if array.ndim == 2 else []
    bad = []
    for j in range(array.shape[1]):
        try:
            array[:, j].astype(np.float64)
        except (TypeError, ValueError):
            bad.append(j)
    return bad


def _numpy_kind(dtype: Any) -> str | None:
    """'float', 'int', 'bool' for numeric dtypes (numpy or pandas extension), else None."""
    kind = getattr(dtype, "kind", None)
    name = str(dtype)
    if name in ("category", "string", "object") or name.startswith(("string", "category")):
        return None
    return {"f": "float", "i": "int", "u": "int", "b": "bool"}.get(kind)


def _from_columns(names, dtype_names, get_col, n_rows, what, kind_of, to_numpy) -> FeatureMatrix:
    _check_unique_names(names, what)
    kinds = [kind_of(get_col(i)) for i in range(len(names))]
    bad = [f"{names[i]!r} ({dtype_names[i]})" for i, kind in enumerate(kinds) if kind is None]
    if bad:
        raise DataTypeError(
            f"{what}: non-numeric column(s) {', '.join(bad)}; encode strings and categories as numbers first"
        )
    out = np.empty((n_rows, len(names)), dtype=np.float32)
    for i in range(len(names)):
        out[:, i] = _to_float32(to_numpy(get_col(i)), what, [names[i]], column_offset=i)
    return FeatureMatrix(out, list(names), [k for k in kinds])


def _from_polars(frame: Any, what: str) -> FeatureMatrix:
    names = list(frame.columns)
    dtypes = list(frame.dtypes)

    def kind_of(series):
        dtype = series.dtype
        if dtype.is_float():
            return "float"
        if dtype.is_integer():
            return "int"
        if str(dtype) == "Boolean":
            return "bool"
        return None

    return _from_columns(
        names,
        [str(d) for d in dtypes],
        lambda i: frame.to_series(i),
        frame.height,
        what,
        kind_of=kind_of,
        to_numpy=lambda s: s.cast(__import__("polars").Float64).to_numpy().astype(np.float64),
    )


def _from_arrow(table: Any, what: str) -> FeatureMatrix:
    import pyarrow as pa

    names = list(table.schema.names)

    def kind_of(column):
        t = column.type
        if pa.types.is_floating(t):
            return "float"
        if pa.types.is_integer(t):
            return "int"
        if pa.types.is_boolean(t):
            return "bool"
        return None

    def to_numpy(column):
        return column.cast(pa.float64()).to_numpy(zero_copy_only=False)

    return _from_columns(
        names,
        [str(t) for t in table.schema.types],
        lambda i: table.column(i),
        table.num_rows,
        what,
        kind_of=kind_of,
        to_numpy=to_numpy,
    )


def _from_sparse(data: Any, what: str) -> FeatureMatrix:
    if data.ndim != 2:
        raise FusionrecError(f"{what}: expected a 2-D sparse matrix, got shape {data.shape}")
    if data.dtype.kind not in "biuf":
        raise FusionrecError(f"{what}: sparse dtype {data.dtype} is not numeric")
    csr = sp.csr_matrix(data)
    csr.sum_duplicates()
    values = _to_float32(csr.data, what, None, sparse=csr)
    csr = sp.csr_matrix((values, csr.indices, csr.indptr), shape=csr.shape)
    return FeatureMatrix(csr, None, ["float"] * csr.shape[1])


def _to_float32(
    array: np.ndarray,
    what: str,
    names: Sequence[str] | None,
    column_offset: int = 0,
    sparse: sp.csr_matrix | None = None,
) -> np.ndarray:
    """Cast to float32; +-inf and values beyond float32's range are errors, NaN is missing."""
    if array.dtype == np.float32:
        values = np.ascontiguousarray(array)
    else:
        values = np.ascontiguousarray(array, dtype=np.float32)
    if np.isinf(values).any():
        flat = np.flatnonzero(np.isinf(values.ravel()))[0]
        original = float(np.asarray(array).ravel()[flat])
        if sparse is not None:
            row = int(np.searchsorted(sparse.indptr, flat, side="right") - 1)
            column = f"column {int(sparse.indices[flat])}"
        elif values.ndim == 2:
            row, col = divmod(int(flat), values.shape[1])
            column = f"column {col}"
        else:
            row = int(flat)
            column = f"column {names[0]!r}" if names else f"column {column_offset}"
        if np.isinf(original):
            rule = "infinite values are not allowed (use NaN for missing)"
        else:
            rule = f"overflows float32 (|x| > {FLOAT32_MAX:.4g})"
        raise FusionrecError(f"{what} {column} row {row}: value {original!r} {rule}")
    return values


def _check_unique_names(names: Sequence[str], what: str) -> None:
    seen: set[str] = set()
    duplicates = sorted({n for n in names if n in seen or seen.add(n)})
    if duplicates:
        raise FusionrecError(f"{what}: duplicate column names {duplicates}")


def check_feature_names(expected: list[str] | None, given: list[str] | None, n_expected: int, n_given: int, what="X") -> None:
    """Predict-time check of column count and, for DataFrames, names and order."""
    if n_given != n_expected:
        raise FusionrecError(f"{what}: expected {n_expected} features, got {n_given}")
    if expected is None or given is None or list(expected) == list(given):
        return
    unseen = [n for n in given if n not in expected]
    missing = [n for n in expected if n not in given]
    if unseen or missing:
        raise FusionrecError(
            f"{what}: feature names differ from training: unseen {unseen}, missing {missing}"
        )
    raise FusionrecError(
        f"{what}: columns are in a different order than at training; expected {list(expected)}, got {list(given)}"
    )


def check_label(label: Any, n_rows: int, what: str = "label") -> np.ndarray:
    """A finite float64 vector of length ``n_rows``; the first bad index is named."""
    try:
        y = np.asarray(label, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise FusionrecError(f"{what}: not numeric ({exc})") from None
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise FusionrecError(f"{what}: expected a 1-D array, got shape {y.shape}")
    if y.shape[0] != n_rows:
        raise FusionrecError(f"{what}: has {y.shape[0]} values but the data has {n_rows} rows")
    bad = np.flatnonzero(~np.isfinite(y))
    if bad.size:
        raise FusionrecError(f"{what}[{bad[0]}] = {float(y[bad[0]])!r}: labels must be finite ({bad.size} bad value(s))")
    return np.ascontiguousarray(y)


def check_weight(weight: Any, n_rows: int, what: str = "weight", part: bool = False) -> np.ndarray | None:
    """None or a non-negative, finite float64 vector of length ``n_rows`` that is not all zero
    (a ``part`` of the data may be: the whole data's total is checked where it is known)."""
    if weight is None:
        return None
    try:
        w = np.asarray(weight, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise FusionrecError(f"{what}: not numeric ({exc})") from None
    if w.ndim != 1:
        raise FusionrecError(f"{what}: expected a 1-D array, got shape {w.shape}")
    if w.shape[0] != n_rows:
        raise FusionrecError(f"{what}: has {w.shape[0]} values but the data has {n_rows} rows")
    bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
    if bad.size:
        raise FusionrecError(
            f"{what}[{bad[0]}] = {float(w[bad[0]])!r}: weights must be finite and >= 0 ({bad.size} bad value(s))"
        )
    if not part and not np.any(w > 0):
        raise FusionrecError(f"{what}: all {n_rows} weights are zero; at least one must be positive")
    return np.ascontiguousarray(w)


def dense_with_nan(csr: sp.csr_matrix) -> np.ndarray:
    """A CSR block as a dense float32 array with NaN where entries are absent (= missing)."""
    dense = np.full(csr.shape, np.nan, dtype=np.float32)
    dense[np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr)), csr.indices] = csr.data
    return dense


def group_pointer(group: Any, qid: Any, n_rows: int) -> np.ndarray | None:
    """Query boundaries (n_groups + 1,) int64 from XGBoost's ``group`` (sizes) or ``qid``
    (one sorted id per row); None when neither is given."""
    if group is not None and qid is not None:
        raise FusionrecError("group and qid: give one of them, not both")
    if group is not None:
        try:
            sizes = np.asarray(group)
        except (TypeError, ValueError) as exc:
            raise FusionrecError(f"group: not numeric ({exc})") from None
        if sizes.ndim != 1 or sizes.size == 0 or sizes.dtype.kind not in "iuf" or np.any(sizes != np.floor(sizes)):
            raise FusionrecError(f"group: expected a 1-D list of query sizes (integers), got {sizes!r:.80}")
        bad = np.flatnonzero(sizes < 1)
        if bad.size:
            raise FusionrecError(f"group[{bad[0]}] = {sizes[bad[0]]}: every query group needs at least 1 row")
        total = int(sizes.sum())
        if total != n_rows:
            raise FusionrecError(f"group: the {sizes.size} query sizes sum to {total} rows but the data has {n_rows} rows")
        return np.concatenate([[0], np.cumsum(sizes.astype(np.int64))])
    if qid is not None:
        ids = np.asarray(qid)
        if ids.ndim != 1:
            raise FusionrecError(f"qid: expected a 1-D array, got shape {ids.shape}")
        if ids.shape[0] != n_rows:
            raise FusionrecError(f"qid: has {ids.shape[0]} values but the data has {n_rows} rows")
        if ids.dtype.kind not in "iu":
            raise FusionrecError(f"qid: expected integer query ids, got dtype {ids.dtype}")
        down = np.flatnonzero(ids[1:] < ids[:-1])
        if down.size:
            i = int(down[0]) + 1
            raise FusionrecError(
                f"qid[{i}] = {ids[i]} comes after qid[{i - 1}] = {ids[i - 1]}: qid must be sorted ascending, "
                "each query's rows together (sort the rows by qid first)"
            )
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        return np.r_[starts, n_rows].astype(np.int64)
    return None

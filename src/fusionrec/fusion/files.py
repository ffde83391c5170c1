"""Fusing prediction files: what competition users do with their models' submissions.

Each file is a CSV with a header, an id column and one or more prediction columns. Files are
joined on the id column (the first file's row order is kept); a missing or duplicated id, a
different row count, or a prediction that is not a finite number stops with an error that
names the file, the row (1-based, not counting the header) and the id. Ids are compared as
text, so "007" and "7" are different ids.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from fusionrec._atomic import atomic_write_bytes
from fusionrec.errors import FusionrecError
from fusionrec.fusion.combine import DOMAINS, check_weights, combine
from fusionrec.fusion.metrics import is_classification_metric
from fusionrec.fusion.weights import WeightFit, optimize_weights


@dataclass
class PredictionFile:
    path: str
    ids: np.ndarray  # str
    values: np.ndarray  # (n, n_columns) float64


def read_prediction_file(path, *, id_col: str = "id", pred_cols=("pred",)) -> PredictionFile:
    """Read ``id_col`` as text and ``pred_cols`` as finite numbers, checking ids are unique."""
    path = str(path)
    if not Path(path).is_file():
        raise FusionrecError(f"{path}: file does not exist")
    wanted = [id_col, *pred_cols]
    if id_col in pred_cols or len(set(pred_cols)) != len(pred_cols):
        raise FusionrecError(f"prediction columns {list(pred_cols)} must be distinct and differ from id column {id_col!r}")
    try:
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in wanted}, include_columns=wanted, strings_can_be_null=False))  # fmt: skip
    except (pa.ArrowInvalid, pa.ArrowKeyError) as exc:
        missing = _missing_columns(path, wanted)
        if missing:
            raise FusionrecError(f"{path}: column {missing[0]!r} not found in the header") from None
        raise FusionrecError(f"{path}: cannot be read as CSV ({exc})") from None
    ids = np.asarray(table.column(id_col).to_pylist(), dtype=object).astype(str)
    if len(ids) == 0:
        raise FusionrecError(f"{path}: no data rows")
    values = np.column_stack([_numbers(path, table.column(c), c, ids) for c in pred_cols])
    unique, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if len(unique) != len(ids):
        dup = int(np.argmax(counts > 1))
        again = np.flatnonzero(ids == unique[dup])[1]
        raise FusionrecError(f"{path} row {again + 1}: id {str(unique[dup])!r} is duplicated (first at row {first[dup] + 1})")
    return PredictionFile(path, ids, values)


def _missing_columns(path: str, wanted: list[str]) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as handle:
        header = next(csv.reader(handle), [])
    return [w for w in wanted if w not in header]


def _numbers(path: str, column, name: str, ids: np.ndarray) -> np.ndarray:
    try:
        values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        texts = column.to_pylist()
        for row, text in enumerate(texts):
            try:
                float(text)
            except ValueError:
                raise FusionrecError(f"{path} row {row + 1} (id {str(ids[row])!r}): column {name!r} value {text!r} is "
                                     "not a number") from None  # fmt: skip
        raise
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        row = int(bad[0])
        raise FusionrecError(f"{path} row {row + 1} (id {str(ids[row])!r}): column {name!r} value {values[row]} is not "
                             f"a finite number ({bad.size} such rows)")  # fmt: skip
    return values


def align_to(reference: PredictionFile, other: PredictionFile) -> np.ndarray:
    """``other``'s values in ``reference``'s row order; every id must be in both files."""
    order = np.argsort(other.ids)
    sorted_ids = other.ids[order]
    position = np.clip(np.searchsorted(sorted_ids, reference.ids), 0, len(sorted_ids) - 1)
    found = sorted_ids[position] == reference.ids
    if not found.all():
        row = int(np.argmax(~found))
        raise FusionrecError(f"{other.path}: id {str(reference.ids[row])!r} (row {row + 1} of {reference.path}) is missing; "
                             f"{int((~found).sum())} of {reference.path}'s ids are not in {other.path}")  # fmt: skip
    if len(other.ids) != len(reference.ids):
        extra = np.setdiff1d(other.ids, reference.ids)
        row = int(np.flatnonzero(other.ids == extra[0])[0])
        raise FusionrecError(f"{other.path} row {row + 1}: id {str(extra[0])!r} is not in {reference.path} "
                             f"({len(other.ids)} rows against {len(reference.ids)})")  # fmt: skip
    return other.values[order[position]]


def read_labels(path, *, id_col: str, label_col: str) -> PredictionFile:
    return read_prediction_file(path, id_col=id_col, pred_cols=(label_col,))


def fuse_files(
    paths, output, *, method: str = "mean", weights=None, id_col: str = "id", pred_cols=("pred",),
    power: float = 2.0, optimize: str | None = None, oof_paths=None, labels_path=None, label_col: str = "label",
) -> dict:  # fmt: skip
    """Fuse prediction files into ``output`` (written atomically); returns the weights used.

    With ``optimize`` (a metric name), the weights are first fitted on out-of-fold files
    (``oof_paths``, one per input file, in the same order) against ``labels_path``.
    """
    paths = [str(p) for p in paths]
    if len(paths) < 1:
        raise FusionrecError("fuse: give at least one prediction file")
    pred_cols = tuple(pred_cols)
    files = [read_prediction_file(p, id_col=id_col, pred_cols=pred_cols) for p in paths]
    stack = np.stack([files[0].values] + [align_to(files[0], f) for f in files[1:]])
    if method in DOMAINS:
        low, high = DOMAINS[method]
        for file, values in zip(files, stack):
            bad = np.flatnonzero(((values < low) | (values > high)).any(axis=1))
            if bad.size:
                row = int(np.flatnonzero(file.ids == files[0].ids[bad[0]])[0])
                raise FusionrecError(f"{file.path} row {row + 1} (id {str(file.ids[row])!r}): {file.values[row]} is "
                                     f"outside [{low}, {high}], which --method {method} needs")  # fmt: skip
    report: dict = {"files": paths, "rows": len(files[0].ids), "method": method}
    if optimize:
        if weights is not None:
            raise FusionrecError("fuse: give either --weights or --optimize, not both")
        fit = fit_file_weights(oof_paths, labels_path, paths, method=method, metric=optimize, id_col=id_col,
                               pred_cols=pred_cols, label_col=label_col, power=power)  # fmt: skip
        weights = fit.weights
        report.update(oof_score=fit.score, oof_model_scores=list(fit.model_scores), metric=fit.metric)
    w = np.ones(len(files)) if weights is None else check_weights(weights, len(files), name="--weights")
    if method == "weighted" and weights is None:
        raise FusionrecError("fuse: --method weighted needs --weights or --optimize")
    keep = w > 0
    fused = combine(stack[keep], method, w[keep], power=power, name="files")
    fused = fused.reshape(len(files[0].ids), -1)
    columns = {id_col: pa.array(files[0].ids, pa.string())}
    columns.update({name: pa.array(fused[:, i]) for i, name in enumerate(pred_cols)})
    sink = io.BytesIO()
    pacsv.write_csv(pa.table(columns), sink, write_options=pacsv.WriteOptions(quoting_style="needed"))
    atomic_write_bytes(output, sink.getvalue(), checksum=False)
    report.update(weights=[float(x) for x in w / w.sum()], output=str(output))
    return report


def _class_labels(y: np.ndarray, labels: PredictionFile, path, label_col: str, *, n_classes: int, metric) -> np.ndarray:
    """Labels a classification metric can score: integers in [0, n_classes), two classes at least."""
    bad = np.flatnonzero((y != np.round(y)) | (y < 0) | (y >= n_classes))
    if len(bad):
        i = int(bad[0])
        raise FusionrecError(
            f"{path}: column {label_col!r}, id {str(labels.ids[i])!r}: label {float(y[i])!r} is not a class in 0..{n_classes - 1} "
            f"({len(bad)} such labels); --optimize {metric} needs class labels"
        )
    present = np.unique(y)
    if len(present) < 2:
        raise FusionrecError(
            f"{path}: column {label_col!r} holds only the class {[float(c) for c in present]}; --optimize {metric} "
            "needs labels of at least two classes to fit weights"
        )
    return y.astype(np.int64)


def fit_file_weights(oof_paths, labels_path, paths, *, method, metric, id_col, pred_cols, label_col,
                     power) -> WeightFit:  # fmt: skip
    if not oof_paths or labels_path is None:
        raise FusionrecError("fuse: --optimize needs --oof files (one per prediction file) and --labels")
    if len(oof_paths) != len(paths):
        raise FusionrecError(f"fuse: {len(oof_paths)} --oof files for {len(paths)} prediction files; "
                             "give one out-of-fold file per prediction file, in the same order")  # fmt: skip
    labels = read_labels(labels_path, id_col=id_col, label_col=label_col)
    oof = [read_prediction_file(p, id_col=id_col, pred_cols=pred_cols) for p in oof_paths]
    stack = np.stack([align_to(labels, f) for f in oof])
    y = labels.values[:, 0]
    predictions = [s[:, 0] if s.shape[1] == 1 else s for s in stack]
    if stack.shape[2] > 1 or is_classification_metric(metric):
        y = _class_labels(y, labels, labels_path, label_col, n_classes=max(stack.shape[2], 2), metric=metric)
    return optimize_weights(predictions, y, metric=metric, method=method, power=power,
                            normalize_rows=stack.shape[2] > 1)  # fmt: skip

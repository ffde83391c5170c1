"""``CTRClassifier``: a scikit-learn classifier around the CTR trainer, for DataFrames.

The pipeline config is derived from the training frame: text / categorical columns become
``IdFeature``s with the observed values as vocabulary (unseen values share the
out-of-vocabulary row); numeric columns become a dense ``RawFeature`` scaled to [0, 1] by the
training range plus a bucketized ``RawFeature`` (quantile boundaries) with its own embedding.
Every feature goes to the DEEP group; ids and buckets also to the WIDE group of WideAndDeep.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from fusionrec.ctr.config import config_from_dict
from fusionrec.ctr.data import iter_batches, reader_for
from fusionrec.errors import DataTypeError, FusionrecError

LABEL = "__label__"
UNSEEN = "\x00unseen"  # vocabulary row 0: values not seen in fit (and missing ones)


def _to_table(X) -> pa.Table:
    if isinstance(X, pa.Table):
        return X
    if hasattr(X, "to_arrow"):  # polars
        return X.to_arrow()
    if hasattr(X, "columns") and hasattr(X, "dtypes"):  # pandas
        return pa.Table.from_pandas(X, preserve_index=False)
    raise DataTypeError(f"X: CTRClassifier takes a pandas / polars DataFrame or a pyarrow Table, got {type(X).__name__}")


class CTRClassifier(ClassifierMixin, BaseEstimator):
    """Binary classifier trained by ``fusionrec.ctr`` (WideAndDeep, DeepFM or DCN) on a DataFrame."""

    def __init__(self, model_class: str = "WideAndDeep", embedding_dim: int = 16, hidden_units=(128, 64, 32),
                 n_buckets: int = 16, learning_rate: float = 0.001, batch_size: int = 256, num_epochs: int = 5,
                 use_bn: bool = False, dropout: float = 0.0, l2_regularization: float = 0.0,
                 embedding_regularization: float = 0.0, random_state: int = 0):  # fmt: skip
        self.model_class = model_class
        self.embedding_dim = embedding_dim
        self.hidden_units = hidden_units
        self.n_buckets = n_buckets
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.num_epochs = num_epochs
        self.use_bn = use_bn
        self.dropout = dropout
        self.l2_regularization = l2_regularization
        self.embedding_regularization = embedding_regularization
        self.random_state = random_state

    # -- config ---------------------------------------------------------------------
    def _config(self, table: pa.Table, train_path: str, model_dir: str) -> dict:
        fields, features, wide, deep = [], [], [], []
        for name in table.column_names:
            if name == LABEL:
                continue
            column = table.column(name)
            if pa.types.is_string(column.type) or pa.types.is_large_string(column.type) or pa.types.is_dictionary(column.type) or pa.types.is_boolean(column.type):
                values = sorted({str(v) for v in column.cast(pa.string()).to_pylist() if v is not None} - {UNSEEN})
                fields.append({"input_name": name, "input_type": "STRING"})
                # row 0 (the first word) is where unseen and missing values go, as in EasyRec
                features.append({"feature_name": name, "input_names": [name], "feature_type": "IdFeature",
                                 "embedding_dim": self.embedding_dim, "vocab_list": [UNSEEN, *values]})  # fmt: skip
                wide.append(name)
                deep.append(name)
            elif pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
                values = column.to_numpy(zero_copy_only=False).astype(np.float64)
                finite = values[np.isfinite(values)]
                low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
                fields.append({"input_name": name, "input_type": "DOUBLE", "default_val": repr(float(np.median(finite))) if finite.size else "0"})
                dense = {"feature_name": name, "input_names": [name], "feature_type": "RawFeature"}
                if high > low:
                    dense.update(min_val=low, max_val=high)
                features.append(dense)
                deep.append(name)
                edges = np.unique(np.quantile(finite, np.linspace(0, 1, self.n_buckets + 1)[1:-1])) if finite.size else []
                if len(edges):
                    features.append({"feature_name": name + "__bucket", "input_names": [name], "feature_type": "RawFeature",
                                     "boundaries": [float(e) for e in edges], "embedding_dim": self.embedding_dim})  # fmt: skip
                    wide.append(name + "__bucket")
                    deep.append(name + "__bucket")
            else:
                raise DataTypeError(f"X column {name!r}: type {column.type} is neither numeric nor text")
        fields.append({"input_name": LABEL, "input_type": "INT32"})
        dnn = {"hidden_units": list(self.hidden_units), "use_bn": self.use_bn}
        if self.dropout > 0:
            dnn["dropout_ratio"] = [self.dropout] * len(self.hidden_units)
        groups = [{"group_name": "deep", "feature_names": deep}]
        if self.model_class == "WideAndDeep":
            groups.insert(0, {"group_name": "wide", "feature_names": wide, "wide_deep": "WIDE"})
            body = {"wide_and_deep": {"wide_output_dim": 1, "dnn": dnn, "l2_regularization": self.l2_regularization}}
        elif self.model_class == "DeepFM":
            groups.insert(0, {"group_name": "wide", "feature_names": wide, "wide_deep": "WIDE"})
            # the FM needs one width: dense values are left out of its group
            groups[1]["feature_names"] = [n for n in deep if n not in {f["feature_name"] for f in features if f["feature_type"] == "RawFeature" and "boundaries" not in f}]
            body = {"deepfm": {"dnn": dnn, "l2_regularization": self.l2_regularization}}
        elif self.model_class == "DCN":
            body = {"dcn": {"deep_tower": {"input": "deep", "dnn": dnn}, "cross_tower": {"input": "deep", "cross_num": 3},
                            "l2_regularization": self.l2_regularization}}  # fmt: skip
        else:
            raise FusionrecError(f"model_class {self.model_class!r}: CTRClassifier builds WideAndDeep, DeepFM or DCN")
        return {
            "train_input_path": train_path, "model_dir": model_dir,
            "train_config": {"optimizer_config": [{"adam_optimizer": {"learning_rate": {"constant_learning_rate": {"learning_rate": self.learning_rate}}}}],
                             "save_checkpoints_steps": 10**9, "log_step_count_steps": 10**9},
            "data_config": {"input_fields": fields, "label_fields": [LABEL], "batch_size": self.batch_size,
                            "num_epochs": self.num_epochs, "input_type": "ParquetInput", "shuffle_buffer_size": 100000},
            "feature_config": {"features": features},
            "model_config": {"model_class": self.model_class, "feature_groups": groups, **body,
                             "embedding_regularization": self.embedding_regularization},
        }  # fmt: skip

    # -- API --------------------------------------------------------------------------
    def fit(self, X, y, sample_weight=None):
        from fusionrec.ctr.trainer import Trainer

        table = _to_table(X)
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != table.num_rows:
            raise FusionrecError(f"y: expected {table.num_rows} labels (one per row of X), got shape {y.shape}")
        if table.num_rows == 0:
            raise FusionrecError("X: 0 rows; need at least one")
        self.classes_ = np.unique(y)
        if len(self.classes_) != 2:
            raise FusionrecError(f"y: CTRClassifier is binary; found {len(self.classes_)} classes {self.classes_[:5].tolist()}")
        if sample_weight is not None:
            raise FusionrecError("sample_weight: not supported by CTRClassifier yet")
        self.feature_names_in_ = np.array(table.column_names, dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        labels = (y == self.classes_[1]).astype(np.int32)
        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "train.parquet")
            pq.write_table(table.append_column(LABEL, pa.array(labels)), path)
            self.config_ = config_from_dict(self._config(table, path, str(Path(tmp) / "model")), "CTRClassifier")
            self.trainer_ = Trainer(self.config_, seed=self.random_state)
            # nulls and NaN take the column's median (default_val); counted per column here
            self.input_report_ = self.trainer_.train(progress=False, evaluate_at_checkpoints=False)["input"]
        self.trainer_.model.eval()
        return self

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "trainer_")
        table = _to_table(X)
        if list(table.column_names) != list(self.feature_names_in_):
            raise FusionrecError(
                f"X: columns {table.column_names} differ from those seen in fit {list(self.feature_names_in_)}"
            )
        fields = [f for f in self.config_.data_config.input_fields if f.input_name != "__label__"]
        reader = reader_for(self.config_, fields=fields, labels=False)
        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "x.parquet")
            pq.write_table(table, path)
            out = []
            with torch.no_grad():
                for batch in iter_batches(reader, [path], 8192, shuffle=False, shuffle_rows=0, seed=0):
                    out.append(torch.sigmoid(self.trainer_.model(self.trainer_.transform(batch.columns))).numpy())
        positive = np.concatenate(out).astype(np.float64) if out else np.zeros(0)
        return np.column_stack([1 - positive, positive])

    def predict(self, X) -> np.ndarray:
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]

"""What ``fusionrec serve`` can serve, behind one interface: a pipeline export
(``artifact.PipelineScorer``), a bare ``fusionrec ctr export`` directory (``CTRExportScorer``),
and a ``fusionrec gbdt`` model file (``GBDTModelScorer``), so that an EasyRec user serves the
model ``fusionrec ctr export`` wrote without building a pipeline.

A scorer has ``names`` (the scores it gives per row), ``digest`` (the sha256 that pins what
was loaded), ``required`` / ``optional`` (request fields), ``request_reader()`` (its
``read_text_table(table, where)`` types a request's text table or raises naming the row, the
column and the rule), ``score(table)`` (each name's score (n, m), the answer's score (n,) or
(n, k)) and ``metadata()``. ``open_scorer`` tells the kinds apart by what the path holds;
``pinned_digest`` computes the digest without loading a model (the supervisor has no torch)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fusionrec import __version__
from fusionrec.errors import FusionrecError

CTR_EXPORT_FILES = ("model.pt", "pipeline.json", "input_schema.json")


def kind_of(path: str | Path) -> str:
    """``pipeline``, ``ctr`` or ``gbdt``, by what ``path`` holds."""
    from fusionrec.pipeline.manifest import MANIFEST

    path = Path(path)
    if path.is_dir():
        if (path / MANIFEST).exists():
            return "pipeline"
        if all((path / name).exists() for name in CTR_EXPORT_FILES):
            return "ctr"
        raise FusionrecError(f"saved_model_dir {str(path)!r}: no {MANIFEST} (a pipeline export) and not the files of a "
                             f"`fusionrec ctr export` directory ({', '.join(CTR_EXPORT_FILES)})")  # fmt: skip
    if path.is_file():
        return "gbdt"
    raise FusionrecError(f"saved_model_dir {str(path)!r}: no such directory or model file")


def pinned_digest(path: str | Path, *, require_checksums: bool = True) -> str:
    """The sha256 of what ``path`` holds, every file checked against its sidecar."""
    from fusionrec.pipeline import manifest

    path = Path(path)
    kind = kind_of(path)
    if kind == "pipeline":
        return manifest.pinned_digest(path, require_checksums=require_checksums)
    if kind == "ctr":
        return manifest.files_digest(path, list(CTR_EXPORT_FILES), "exported file", require_checksums=require_checksums)
    return manifest.files_digest(path.parent, [path.name], "model file", require_checksums=require_checksums)


def open_scorer(path: str | Path, *, require_checksums: bool = True, expected_digest: str | None = None):
    """The scorer of what ``path`` holds; refused when it is not what was pinned at start."""
    kind = kind_of(path)
    if kind == "pipeline":
        from fusionrec.pipeline.artifact import PipelineScorer

        return PipelineScorer(path, require_checksums=require_checksums, expected_digest=expected_digest)
    digest = pinned_digest(path, require_checksums=require_checksums)
    if expected_digest is not None and digest != expected_digest:
        raise FusionrecError(f"saved_model_dir {str(path)!r}: holds another model (sha256 {digest[:16]}) than the one "
                             f"pinned at start ({expected_digest[:16]}); restart the server to serve it")  # fmt: skip
    scorer = CTRExportScorer(path, require_checksums) if kind == "ctr" else GBDTModelScorer(path)
    scorer.digest = digest
    return scorer


class CTRExportScorer:
    """A ``fusionrec ctr export`` directory: its TorchScript module reads the request's raw
    columns (the feature transform is inside). ``names``: the export's probability outputs
    (``probs``, or ``probs_<tower>`` of a multi-task model); the answer's score is ``probs``,
    or the first tower's."""

    kind = "ctr"

    def __init__(self, directory: str | Path, require_checksums: bool = True):
        from fusionrec.ctr.export import load_export, output_kinds

        self.directory = Path(directory)
        self.module, self.config = load_export(self.directory, require_checksums=require_checksums)
        data = self.config.data_config
        self.label_fields = list(data.label_fields)
        used = {name for feature in self.config.features for name in feature.input_names}
        inputs = [f.input_name for f in data.input_fields if f.input_name not in self.label_fields]
        self.required = [name for name in inputs if name in used]
        self.optional = tuple(name for name in inputs if name not in used) + tuple(self.label_fields)
        self.names = [name for name in output_kinds(self.config.model_config_) if name.startswith("probs")]
        self._fields = [f for f in data.input_fields if f.input_name not in self.label_fields]
        self._has_outputs = hasattr(self.module, "outputs_with_counts")
        self.digest = ""

    def request_reader(self):
        from fusionrec.ctr.data import reader_for

        return reader_for(self.config, labels=False, optional=self.optional)

    def score(self, table: pa.Table, counts: Counter | None = None) -> tuple[np.ndarray, np.ndarray]:
        import torch

        from fusionrec.ctr.data import table_to_columns

        if table.num_rows == 0:
            return np.zeros((0, len(self.names))), np.zeros(0)
        columns = table_to_columns(table, self._fields)
        with torch.no_grad(), torch.jit.optimized_execution(False):  # no profiling recompilation (export.predict)
            if self._has_outputs:
                named, feature_counts = self.module.outputs_with_counts(columns)
            else:  # exports written before per-task outputs: binary models
                proba, feature_counts = self.module.forward_with_counts(columns)
                named = {"probs": proba}
        if counts is not None:
            counts.update({k: int(v) for k, v in feature_counts.items() if int(v)})
        scores = np.column_stack([named[name].double().numpy().reshape(table.num_rows, -1)[:, 0] for name in self.names])
        return scores, scores[:, 0]

    def metadata(self) -> dict:
        schema = self.directory / "input_schema.json"
        return {"kind": "ctr export", "serving_fusionrec_version": __version__, "model_class": self.config.model_config_.model_class,
                "outputs": self.names, "required_fields": self.required, "optional_fields": list(self.optional),
                "input_schema": schema.name, "export_digest": self.digest}  # fmt: skip


class _NumberReader:
    """Types a request's text columns as the trees read them: float64, null (or empty) as missing."""

    def __init__(self, names: list[str]):
        self.names = names

    def read_text_table(self, table: pa.Table, where: str) -> pa.Table:
        columns = {}
        for name in self.names:
            column = table.column(name)
            text = pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)
            try:
                values = pc.cast(text, pa.float64())
            except pa.ArrowInvalid:
                for row, value in enumerate(text.to_pylist(), start=1):
                    try:
                        float(value) if value is not None else None
                    except ValueError:
                        raise FusionrecError(f"{where} row {row}, column {name!r}: {value[:40]!r} is not a number "
                                             "(the trees read numbers; null for a missing value)") from None  # fmt: skip
                raise
            columns[name] = values
        return pa.table(columns)


class GBDTModelScorer:
    """A ``fusionrec gbdt`` model file: request rows give one number (or null: missing, which
    takes each split's default direction) per feature, named as the model's features (``f0``,
    ``f1``, ... when the model has no names, as XGBoost names them)."""

    kind = "gbdt"

    def __init__(self, path: str | Path):
        from fusionrec.gbdt import Booster

        self.path = Path(path)
        self.booster = Booster.load_model(str(self.path))
        n_features = int(self.booster.n_features or 0)
        self.required = list(self.booster.feature_names or [f"f{i}" for i in range(n_features)])
        self.optional: tuple[str, ...] = ()
        probe = self.booster.predict(np.full((1, n_features), np.nan))
        self.n_outputs = 1 if probe.ndim == 1 else probe.shape[1]
        self.names = ["gbdt"] if self.n_outputs == 1 else [f"class_{k}" for k in range(self.n_outputs)]
        self.digest = ""

    def request_reader(self) -> _NumberReader:
        return _NumberReader(self.required)

    def score(self, table: pa.Table, counts: Counter | None = None) -> tuple[np.ndarray, np.ndarray]:
        if table.num_rows == 0:
            return np.zeros((0, len(self.names))), np.zeros((0,) if self.n_outputs == 1 else (0, self.n_outputs))
        matrix = np.column_stack([table.column(name).to_numpy(zero_copy_only=False) for name in self.required])
        prediction = self.booster.predict(matrix, validate_features=False)
        scores = prediction.reshape(table.num_rows, -1)
        return scores, prediction

    def metadata(self) -> dict:
        return {"kind": "gbdt model", "serving_fusionrec_version": __version__, "objective": self.booster.params["objective"],
                "outputs": self.names, "required_fields": self.required, "export_digest": self.digest}  # fmt: skip

"""Export and batch prediction.

``export`` scripts the feature transform and the model together into one TorchScript file
that maps raw column tensors (see ``fusionrec.ctr.features``) to probabilities, and writes
the resolved config and an input schema beside it. ``predict`` reads files with the same
input fields, scores them with that file alone, and writes ``reserved_cols`` plus
``output_cols``; rows that cannot be read go to a rejects file with their line numbers.
"""

from __future__ import annotations

import io
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import Tensor, nn

from fusionrec import __version__
from fusionrec._atomic import atomic_write_bytes, check_writable_dir, check_writable_file, verify_sidecar
from fusionrec.ctr.config import config_from_dict, dump_config
from fusionrec.ctr.data import TableReader, iter_batches, reader_for, resolve_paths
from fusionrec.ctr.features import FeatureTransform, feature_counts, tensor_digest
from fusionrec.ctr.tasks import Task, output_name, task_outputs, task_score
from fusionrec.errors import FusionrecError

MODEL_FILE = "model.pt"
EXPORT_FORMAT = "fusionrec.ctr.export"
EXPORT_VERSION = 1


def export(trainer, export_dir: str | Path, checkpoint: Path | None = None, *, current: bool = False) -> Path:
    """Write ``export_dir/model.pt`` (TorchScript), ``pipeline.json`` and ``input_schema.json``
    from ``checkpoint`` (default: the best or the last of the model_dir), or with ``current``
    from the trainer's model as it is (a fit trained without checkpoints, as a pipeline's are)."""
    config = trainer.config
    check_writable_dir(export_dir, "export_dir")
    if current:
        source = f"step {trainer.step}, not checkpointed"
    else:
        if checkpoint is None:
            if config.export_config.exporter_type == "best" and (trainer.model_dir / "best.pt").exists():
                checkpoint = trainer.model_dir / "best.pt"
            else:
                found = trainer.checkpoints()
                if not found:
                    raise FusionrecError(f"model_dir {str(trainer.model_dir)!r}: no checkpoint to export; train first")
                checkpoint = found[-1][1]
        trainer.load_checkpoint(checkpoint, weights_only_model=True)
        source = checkpoint.name
    task = config.model_config_.task
    scripted = torch.jit.script(scoring_module(trainer))
    export_dir = Path(export_dir)
    export_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    atomic_write_bytes(export_dir / MODEL_FILE, buffer.getvalue())
    atomic_write_bytes(export_dir / "pipeline.json", json.dumps(dump_config(config), indent=1).encode())
    schema = {
        "format": EXPORT_FORMAT, "version": EXPORT_VERSION, "checkpoint": source,
        "fusionrec_version": __version__, "torch_version": torch.__version__,
        "features": trainer.transform.layout(),
        "inputs": [_input_schema(f, config.vector_inputs()) for f in config.data_config.input_fields
                   if f.input_name not in config.data_config.label_fields],
        "output": _OUTPUT_MEANING[task.kind],
        "outputs": list(output_names(config.model_config_)),
    }  # fmt: skip
    atomic_write_bytes(export_dir / "input_schema.json", json.dumps(schema, indent=1).encode())
    return export_dir / MODEL_FILE


class ScoringModel(nn.Module):
    """What export writes: raw column tensors -> the served score (probabilities, or y for a
    regression; a multi-task model's first tower's) and every output EasyRec's exported model
    has. Needs no fusionrec code to run; runs eagerly as well (a pipeline scores its folds so)."""

    # typed here, not by value (TorchScript cannot type an empty list from its value); as
    # objects, not the strings ``from __future__ import annotations`` would make of them
    __annotations__ = {"head_params": List[float], "heads_params": Dict[str, List[float]]}

    def __init__(self, transform: FeatureTransform, model: nn.Module, head_tasks: Dict[str, Task]):
        super().__init__()
        self.transform = transform
        self.model = model
        served = next(iter(head_tasks.values()))
        self.head = served.head
        self.squash = served.squash
        self.head_params = list(served.head_params)
        self.heads: Dict[str, str] = {suffix: task.head for suffix, task in head_tasks.items()}
        self.head_squash: Dict[str, bool] = {suffix: task.squash for suffix, task in head_tasks.items()}
        self.heads_params = {suffix: list(task.head_params) for suffix, task in head_tasks.items()}

    def forward(self, columns: Dict[str, Tensor]) -> Tensor:
        return task_score(self.model(self.transform(columns)), self.head, self.squash, self.head_params)

    @torch.jit.export
    def forward_with_counts(self, columns: Dict[str, Tensor]) -> Tuple[Tensor, Dict[str, Tensor]]:
        """The score and the batch's per-feature counts (out of vocabulary, truncated)."""
        features = self.transform(columns)
        return task_score(self.model(features), self.head, self.squash, self.head_params), feature_counts(features)

    @torch.jit.export
    def outputs_with_counts(self, columns: Dict[str, Tensor]) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        """Every output by name (``Task.output_names`` per head, and a model's
        ``derived_outputs``) and the batch's per-feature counts."""
        features = self.transform(columns)
        outputs: Dict[str, Tensor] = {}
        for suffix, logits in self.model.forward_heads(features).items():
            head_outputs = task_outputs(logits, self.heads[suffix], self.head_squash[suffix], self.heads_params[suffix])
            for name, value in head_outputs.items():
                outputs[output_name(name, suffix)] = value
        for name, value in self.model.derived_outputs(outputs).items():
            outputs[name] = value
        return outputs, feature_counts(features)


def scoring_module(trainer) -> ScoringModel:
    """The trainer's model as export scripts it (raw columns in, named outputs out), in eval
    mode and eager: what a pipeline scores a fold's held-out rows with."""
    return ScoringModel(trainer.transform, trainer.model, trainer.config.model_config_.head_tasks).eval()


def _input_schema(field, vectors: dict[str, tuple[int, str]]) -> dict:
    """How a client passes one input field to ``model.pt``: tensor names and dtype."""
    name, kind = field.input_name, field.input_type
    if name in vectors:
        dim, separator = vectors[name]
        return {"name": name, "type": kind, "tensors": [name],
                "dtype": f"float64 (n, {dim}): the field's {dim} numbers (joined by {separator!r} in files)"}  # fmt: skip
    if kind == "STRING":
        return {"name": name, "type": kind, "tensors": [name + ".bytes", name + ".offsets"],
                "dtype": "uint8 utf-8 bytes + int64 offsets"}  # fmt: skip
    return {"name": name, "type": kind, "tensors": [name], "dtype": "float64" if kind in ("FLOAT", "DOUBLE") else "int64"}


def load_export(saved_model_dir: str | Path, *, require_checksums: bool = True):
    """(TorchScript module, config) of an export directory, after checking its files against
    their sha256 sidecars and the module's vocabularies against ``input_schema.json``. A file
    without its sidecar is an error unless ``require_checksums`` is off (the flag
    ``--allow_missing_checksums``: accepting an unverifiable export knowingly)."""
    directory = Path(saved_model_dir)
    model_path, config_path, schema_path = directory / MODEL_FILE, directory / "pipeline.json", directory / "input_schema.json"
    for path in (model_path, config_path, schema_path):
        if not path.exists():
            raise FusionrecError(f"saved_model_dir {str(directory)!r}: no {path.name}; run `fusionrec ctr export` first")
    raw = {}
    for path in (model_path, config_path, schema_path):
        raw[path.name] = path.read_bytes()
        verify_sidecar(path, raw[path.name], "exported file", required=require_checksums)
    schema = _read_json(schema_path, raw[schema_path.name])
    if not isinstance(schema, dict) or schema.get("format") != EXPORT_FORMAT:
        raise FusionrecError(f"{schema_path}: not a fusionrec CTR export schema")
    version = schema.get("version")
    if not isinstance(version, int) or version > EXPORT_VERSION:
        raise FusionrecError(
            f"{schema_path}: export format version {version!r} (fusionrec {schema.get('fusionrec_version')}) is newer "
            f"than this fusionrec {__version__} reads ({EXPORT_VERSION})"
        )
    try:
        module = torch.jit.load(io.BytesIO(raw[model_path.name]), map_location="cpu")
    except Exception as error:
        raise FusionrecError(
            f"{model_path}: cannot load the exported model ({type(error).__name__}: {error}); it was exported with "
            f"torch {schema.get('torch_version')}, this is torch {torch.__version__}"
        ) from None
    if "features" in schema:  # exports of version 1 before the feature layout was recorded have none
        _check_vocabularies(module, schema["features"], schema_path)
    data = _read_json(config_path, raw[config_path.name])
    return module.eval(), config_from_dict(data, str(config_path))


def _read_json(path: Path, raw: bytes):
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FusionrecError(f"{path}: not valid JSON ({error})") from None


def _check_vocabularies(module, features: dict, schema_path: Path) -> None:
    """The module's vocabulary and boundary tensors must be those the schema recorded."""
    buffers = dict(module.named_buffers())
    for name, layout in features.items():
        for key, buffer in (("vocab_sha256", "vocab_keys"), ("boundaries_sha256", "boundaries")):
            if not layout.get(key):
                continue
            tensor = buffers.get(f"transform.features.{name}.{buffer}")
            if tensor is None or tensor_digest(tensor) != layout[key]:
                raise FusionrecError(
                    f"{schema_path}: feature {name!r}: the {buffer} of {MODEL_FILE} do not match the schema's {key}; "
                    "the export directory mixes files of different exports"
                )


_OUTPUT_MEANING = {
    "binary": "forward: probability of the positive class, float32 (n,)",
    "multiclass": "forward: class probabilities, float32 (n, num_class)",
    "regression": "forward: the predicted value y, float32 (n,)",
    "ziln": "forward: the predicted value y (zero-inflated lognormal mean), float32 (n,)",
}
EASYREC_OUTPUT_SEP = "\x01"  # EasyRec predict's --output_sep default, chr(1)
OUTPUT_TYPES = {"double": pa.float64(), "float": pa.float32(), "int": pa.int64(), "int64": pa.int64(),
                "string": pa.string()}  # fmt: skip


def output_kinds(model_config) -> dict[str, str]:
    """Every output of the exported model by name, sorted, with the task kind of its head: each
    head's ``Task.output_names`` named with its suffix as EasyRec names them (``probs_light``,
    ``probs_light_y``, ``probs_ctr``), and ESMM's ``probs_ctcvr`` (``y_ctcvr``)."""
    kinds = {output_name(name, suffix): task.kind for suffix, task in model_config.head_tasks.items()
             for name in task.output_names}  # fmt: skip
    if model_config.model_class == "ESMM":
        kinds["y_ctcvr" if model_config.esmm.cvr_tower.loss_type == "L2_LOSS" else "probs_ctcvr"] = "binary"
    return dict(sorted(kinds.items()))


def output_names(model_config) -> list[str]:
    return list(output_kinds(model_config))


def _parse_output_cols(spec: str, model_config) -> list[tuple[str, pa.DataType]]:
    """(name, type) of each ``--output_cols`` entry; ``ALL_COLUMNS``: every output of the model."""
    kinds = output_kinds(model_config)
    names = list(kinds)
    if spec.strip() in ("", "ALL_COLUMNS"):
        # a multi-class model's y is the class id
        return [(name, pa.int64() if name.split("_")[0] == "y" and kind == "multiclass" else pa.float64())
                for name, kind in kinds.items()]  # fmt: skip
    out = []
    for part in spec.split(","):
        pieces = part.split()
        if len(pieces) != 2 or pieces[0] not in names or pieces[1] not in OUTPUT_TYPES:
            raise FusionrecError(
                f"--output_cols {part.strip()!r}: expected 'name type' (e.g. '{names[-1]} double'); this "
                f"model's outputs are {names}, types {sorted(OUTPUT_TYPES)}"
            )
        out.append((pieces[0], OUTPUT_TYPES[pieces[1]]))
    return out


def _output_column(values: np.ndarray, kind: pa.DataType) -> pa.Array:
    """One output column; a per-class output (n, num_class) becomes its values joined by ','."""
    if values.ndim == 1:
        return pa.array(values).cast(kind)
    as_text = pc.cast(pa.array(values.reshape(-1)).cast(kind if kind != pa.string() else pa.float64()), pa.string())
    rows = pa.ListArray.from_arrays(pa.array(np.arange(0, values.size + 1, values.shape[1], dtype=np.int32)), as_text)
    return pc.binary_join(rows, ",")


def predict(input_path: str, output_path: str, saved_model_dir: str, *, reserved_cols: str = "ALL_COLUMNS",
            output_cols: str = "ALL_COLUMNS", input_sep: str | None = None, output_sep: str = EASYREC_OUTPUT_SEP,
            batch_size: int = 1024, selected_cols: str | None = None, require_checksums: bool = True) -> dict:  # fmt: skip
    """Score ``input_path`` with an export; returns counts of rows read, written and rejected.

    The output is what EasyRec's CSV predictor writes: a header line, then per row the
    ``output_cols`` and then the ``reserved_cols``, joined by ``output_sep`` (EasyRec's
    default, byte 0x01), unquoted; only a value holding the separator, a quote or a line
    break is quoted (CSV style), so no row is ever split wrongly. An ``output_path`` that is
    a directory (EasyRec writes one) receives ``part-0.csv``.

    Every input row is either written or rejected (with its line and reason, in
    ``<output_path>.rejects``): rows_read = rows_written + rows_rejected. The label columns are
    optional. A CSV with a header is matched by name; a headerless one by position: all
    input_fields in config order, or the same without the labels, or the columns that
    ``selected_cols`` (0-based indices, one per non-label input field, as EasyRec's flag) names.
    """
    module, config = load_export(saved_model_dir, require_checksums=require_checksums)
    fields = list(config.data_config.input_fields)
    names = [f.input_name for f in fields]
    reserved = names if reserved_cols.strip() == "ALL_COLUMNS" else [c.strip() for c in reserved_cols.split(",") if c.strip()]
    for column in reserved:
        if column not in names:
            raise FusionrecError(f"--reserved_cols: {column!r} is not an input field ({names})")
    outputs = _parse_output_cols(output_cols, config.model_config_)
    vectors = config.vector_inputs()
    # exports written before per-task outputs have forward_with_counts only (binary models)
    has_outputs = hasattr(module, "outputs_with_counts")
    if batch_size < 1:
        raise FusionrecError(f"--batch_size {batch_size}: must be at least 1")
    reader = reader_for(config, labels=False, separator=input_sep, collect_rejects=True,
                        optional=tuple(config.data_config.label_fields), selected_cols=parse_selected_cols(selected_cols))
    paths = resolve_paths(input_path, "--input_path")
    if not output_sep:
        raise FusionrecError("--output_sep: must not be empty")
    output_file = check_writable_file(predictions_file(output_path), "--output_path")
    pieces = []
    n_rows = 0
    with rejects_listed_on_error(output_file, reader):
        # TorchScript's optimizing executor profiles and re-compiles a graph on its first calls:
        # for a config of 100+ features that took ~50 s before the first row was scored. The
        # plain interpreter runs the same graph at once (the model's ops dominate either way).
        with torch.no_grad(), torch.jit.optimized_execution(False):
            for batch in iter_batches(reader, paths, batch_size, shuffle=False, shuffle_rows=0, seed=0):
                if has_outputs:
                    named, counts = module.outputs_with_counts(batch.columns)
                else:
                    proba_tensor, counts = module.forward_with_counts(batch.columns)
                    named = {"probs": proba_tensor, "logits": torch.logit(proba_tensor.double(), eps=1e-12)}
                reader.report.add_feature_counts(counts)
                columns = {name: _output_column(named[name].double().numpy(), kind) for name, kind in outputs}
                columns.update({c: reserved_column(batch.table.column(c), vectors.get(c)) for c in reserved if c not in columns})
                pieces.append(pa.table(columns))
                n_rows += batch.table.num_rows
    report = write_predictions(output_file, pieces, reader, output_sep, n_rows)
    return {**report, "features": reader.report.as_dict()["features"]}


def predictions_file(output_path: str) -> Path:
    """Where predictions go: an ``output_path`` that is a directory (EasyRec writes one) receives ``part-0.csv``."""
    return Path(output_path) / "part-0.csv" if Path(output_path).is_dir() else Path(output_path)


@contextmanager
def rejects_listed_on_error(output_file: Path, reader: TableReader):
    """An error mid-prediction still writes ``<output>.rejects``, and says so."""
    rejects_path = Path(str(output_file) + ".rejects")
    try:
        yield
    except FusionrecError as error:
        if write_rejects(rejects_path, reader.report.rejected):  # say why every row was refused
            raise FusionrecError(f"{error}; every rejected row is listed in {rejects_path}") from None
        raise


def write_predictions(output_file: Path, pieces: list[pa.Table], reader: TableReader, output_sep: str, n_rows: int) -> dict:
    """Write the scored rows and the rejects file; every row read is written or rejected, never lost."""
    atomic_write_bytes(output_file, delimited(pa.concat_tables(pieces), output_sep), checksum=False)
    rejects_path = Path(str(output_file) + ".rejects")
    rejected = reader.report.rejected
    wrote_rejects = write_rejects(rejects_path, rejected)
    report = reader.report.as_dict()
    if report["rows_read"] != n_rows + len(rejected):
        raise FusionrecError(f"predict: {report['rows_read']} rows read but {n_rows} written and {len(rejected)} rejected")
    return {"rows_read": report["rows_read"], "rows_written": n_rows, "rows_rejected": len(rejected),
            "rejects_path": str(rejects_path) if wrote_rejects else None, "blank_lines": report["blank_lines"],
            "defaults_used": report["defaults_used"]}  # fmt: skip


def reserved_column(column, vector: tuple[int, str] | None):
    """An input column as predict writes it back: a raw_input_dim field's numbers joined by its separator."""
    if vector is None:
        return column
    as_text = pc.cast(pc.cast(column, pa.list_(pa.float64())), pa.list_(pa.string()))
    return pc.binary_join(as_text, vector[1])


def delimited(table: pa.Table, separator: str) -> bytes:
    """A header line and one line per row, values joined by ``separator`` (vectorized)."""
    columns = []
    for name in table.column_names:
        text = pc.fill_null(pc.cast(table.column(name), pa.string()), "")
        needs_quotes = pc.or_(pc.or_(pc.match_substring(text, separator), pc.match_substring(text, "\n")),
                              pc.match_substring(text, '"'))  # fmt: skip
        if pc.any(needs_quotes).as_py():
            quoted = pc.binary_join_element_wise('"', pc.replace_substring(text, '"', '""'), '"', "")
            text = pc.if_else(needs_quotes, quoted, text)
        columns.append(text)
    lines = pc.binary_join_element_wise(*columns, separator) if len(columns) > 1 else columns[0]
    body = "\n".join(lines.to_pylist())
    return (separator.join(table.column_names) + "\n" + body + ("\n" if body else "")).encode()


def write_rejects(path: Path, rejected: list) -> bool:
    """Write the rejects file (file, location, reason, value); remove a stale one when there are none."""
    if not rejected:
        path.unlink(missing_ok=True)
        return False
    def clean(text) -> str:
        return str(text).replace("\t", " ").replace("\n", " ")
    lines = ["file\tlocation\treason\tvalue"] + [
        f"{clean(f)}\t{loc}\t{clean(reason)}\t{clean(text)}" for f, loc, reason, text in rejected
    ]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode(), checksum=False)
    return True


def parse_selected_cols(spec: str | None) -> list[int] | None:
    if spec is None or not spec.strip():
        return None
    try:
        indices = [int(part) for part in spec.split(",")]
    except ValueError:
        raise FusionrecError(f"--selected_cols {spec!r}: expected comma-separated 0-based column indices") from None
    if any(i < 0 for i in indices) or len(set(indices)) != len(indices):
        raise FusionrecError(f"--selected_cols {spec!r}: indices must be distinct and >= 0")
    return indices

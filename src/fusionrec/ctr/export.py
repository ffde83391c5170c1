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
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import torch

from fusionrec._atomic import atomic_write_bytes
from fusionrec.ctr.config import config_from_dict, dump_config
from fusionrec.ctr.data import TableReader, iter_batches, resolve_paths
from fusionrec.ctr.models import ScoringModel
from fusionrec.errors import FusionrecError

MODEL_FILE = "model.pt"
EXPORT_FORMAT = "fusionrec.ctr.export"


def export(trainer, export_dir: str | Path, checkpoint: Path | None = None) -> Path:
    """Write ``export_dir/model.pt`` (TorchScript), ``pipeline.json`` and ``input_schema.json``."""
    config = trainer.config
    if checkpoint is None:
        if config.export_config.exporter_type == "best" and (trainer.model_dir / "best.pt").exists():
            checkpoint = trainer.model_dir / "best.pt"
        else:
            found = trainer.checkpoints()
            if not found:
                raise FusionrecError(f"model_dir {str(trainer.model_dir)!r}: no checkpoint to export; train first")
            checkpoint = found[-1][1]
    trainer.load_checkpoint(checkpoint, weights_only_model=True)
    scoring = ScoringModel(trainer.transform, trainer.model).eval()
    scripted = torch.jit.script(scoring)
    export_dir = Path(export_dir)
    export_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    atomic_write_bytes(export_dir / MODEL_FILE, buffer.getvalue())
    atomic_write_bytes(export_dir / "pipeline.json", json.dumps(dump_config(config), indent=1).encode())
    schema = {
        "format": EXPORT_FORMAT, "version": 1, "checkpoint": checkpoint.name,
        "inputs": [
            {"name": f.input_name, "type": f.input_type,
             "tensors": [f.input_name + ".bytes", f.input_name + ".offsets"] if f.input_type == "STRING" else [f.input_name],
             "dtype": "uint8 utf-8 bytes + int64 offsets" if f.input_type == "STRING"
             else ("float64" if f.input_type in ("FLOAT", "DOUBLE") else "int64")}
            for f in config.data_config.input_fields if f.input_name not in config.data_config.label_fields
        ],
        "output": "probability of the positive class, float32 (n,)",
    }  # fmt: skip
    atomic_write_bytes(export_dir / "input_schema.json", json.dumps(schema, indent=1).encode())
    return export_dir / MODEL_FILE


def load_export(saved_model_dir: str | Path):
    """(TorchScript module, config) of an export directory."""
    directory = Path(saved_model_dir)
    model_path, config_path = directory / MODEL_FILE, directory / "pipeline.json"
    for path in (model_path, config_path):
        if not path.exists():
            raise FusionrecError(f"saved_model_dir {str(directory)!r}: no {path.name}; run `fusionrec ctr export` first")
    try:
        module = torch.jit.load(str(model_path), map_location="cpu")
    except Exception as error:
        raise FusionrecError(f"{model_path}: cannot load the exported model ({type(error).__name__}: {error})") from None
    try:
        data = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise FusionrecError(f"{config_path}: not valid JSON ({error})") from None
    return module.eval(), config_from_dict(data, str(config_path))


OUTPUT_TYPES = {"double": pa.float64(), "float": pa.float32(), "string": pa.string()}


def _parse_output_cols(spec: str) -> list[tuple[str, pa.DataType]]:
    if spec.strip() in ("", "ALL_COLUMNS"):
        return [("probs", pa.float64())]
    out = []
    for part in spec.split(","):
        pieces = part.split()
        if len(pieces) != 2 or pieces[0] not in ("probs", "logits") or pieces[1] not in OUTPUT_TYPES:
            raise FusionrecError(
                f"--output_cols {part.strip()!r}: expected 'probs double' or 'logits float' (name type), "
                f"names probs / logits, types {sorted(OUTPUT_TYPES)}"
            )
        out.append((pieces[0], OUTPUT_TYPES[pieces[1]]))
    return out


def predict(input_path: str, output_path: str, saved_model_dir: str, *, reserved_cols: str = "ALL_COLUMNS",
            output_cols: str = "ALL_COLUMNS", input_sep: str | None = None, output_sep: str = "|",
            batch_size: int = 1024) -> dict:  # fmt: skip
    """Score ``input_path`` with an export; returns counts of rows written and rejected."""
    module, config = load_export(saved_model_dir)
    fields = list(config.data_config.input_fields)
    names = [f.input_name for f in fields]
    reserved = names if reserved_cols.strip() == "ALL_COLUMNS" else [c.strip() for c in reserved_cols.split(",") if c.strip()]
    for column in reserved:
        if column not in names:
            raise FusionrecError(f"--reserved_cols: {column!r} is not an input field ({names})")
    outputs = _parse_output_cols(output_cols)
    if batch_size < 1:
        raise FusionrecError(f"--batch_size {batch_size}: must be at least 1")
    reader = TableReader(config.data_config, labels=False, separator=input_sep, collect_rejects=True)
    paths = resolve_paths(input_path, "--input_path")
    pieces = []
    n_rows = 0
    with torch.no_grad():
        for batch in iter_batches(reader, paths, batch_size, shuffle=False, shuffle_rows=0, seed=0):
            proba = module(batch.columns).double().numpy()
            logits = np.log(np.clip(proba, 1e-12, 1)) - np.log(np.clip(1 - proba, 1e-12, 1))
            columns = {c: batch.table.column(c) for c in reserved}
            for name, kind in outputs:
                columns[name] = pa.array(proba if name == "probs" else logits).cast(kind)
            pieces.append(pa.table(columns))
            n_rows += batch.table.num_rows
    if not pieces:
        table = pa.table({**{c: pa.array([], pa.string()) for c in reserved}, **{n: pa.array([], k) for n, k in outputs}})
    else:
        table = pa.concat_tables(pieces)
    sink = io.BytesIO()
    pacsv.write_csv(table, sink, write_options=pacsv.WriteOptions(delimiter=output_sep, quoting_style="needed"))
    atomic_write_bytes(output_path, sink.getvalue(), checksum=False)
    rejected = reader.report.rejected
    rejects_path = None
    if rejected:
        rejects_path = str(output_path) + ".rejects"
        lines = ["file\tlocation\treason\tvalue"] + [f"{f}\t{loc}\t{reason}\t{text}" for f, loc, reason, text in rejected]
        atomic_write_bytes(rejects_path, ("\n".join(lines) + "\n").encode(), checksum=False)
    return {"rows_written": n_rows, "rows_rejected": len(rejected), "rejects_path": rejects_path}


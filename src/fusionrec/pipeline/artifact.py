"""One export directory for the whole pipeline, and the scorer that ``predict`` and the
server share.

    export_dir/manifest.json        format, version, the models (name, kind, files), the label
    export_dir/pipeline.json        the resolved pipeline config
    export_dir/input_schema.json    the input fields a request or file gives (name, type, default)
    export_dir/fusion.json          the fusion (weights or the meta-model's coefficients)
    export_dir/models/<name>/...    each model in its own format: GBDT JSON + encoder JSON,
                                    TorchScript (model.pt) with its config and schema

Every file has a sha256 sidecar and is checked when loaded (a missing sidecar is an error
unless the caller accepts it knowingly); nothing is pickled. The manifest, the list of files
and the export's digest are ``manifest.py``'s.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
from scipy.special import logit

from fusionrec import __version__
from fusionrec._atomic import atomic_write_bytes, check_writable_file, verify_sidecar
from fusionrec.ctr.data import TableReader, reader_for
from fusionrec.errors import FusionrecError
from fusionrec.pipeline.config import DataSection
from fusionrec.pipeline.fuse import apply_fusion, check_fusion_state
from fusionrec.pipeline.manifest import EXPORT_FORMAT, EXPORT_VERSION, MANIFEST, export_digest, read_manifest
from fusionrec.pipeline.members import MEMBER_KINDS, Rows, load_member, read_json, score_rows, write_json


def export_run(run, export_dir: str | Path | None = None) -> Path:
    """Copy a finished run's full-data models, its fusion and config into one directory."""
    export_dir = Path(export_dir) if export_dir is not None else run.run_dir / "export"
    fusion_path = run.run_dir / "fusion.json"
    if not fusion_path.exists():
        raise FusionrecError(f"run_dir {str(run.run_dir)!r}: no fusion.json; run `fusionrec train` to the end first")
    staging = export_dir.with_name(export_dir.name + ".staging")
    if staging.exists():
        shutil.rmtree(staging)
    models = []
    for entry in run.spec.models:
        source = run.run_dir / "models" / entry.name / "full"
        if not (source / "done.json").exists():
            raise FusionrecError(f"model {entry.name!r}: its fit on all rows has not finished; run `fusionrec train` first")
        files = []
        for path in MEMBER_KINDS[entry.kind].files(source):
            relative = path.relative_to(source)
            raw = path.read_bytes()
            verify_sidecar(path, raw, "pipeline model file")
            (staging / "models" / entry.name / relative).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(staging / "models" / entry.name / relative, raw)
            files.append(str(relative))
        models.append({"name": entry.name, "kind": entry.kind, "files": files})
    data = run.spec.data
    label = data.data_config.label_fields[0]
    schema = {"label": label, "separator": data.data_config.separator, "with_header": data.data_config.with_header,
              "columns": [f.input_name for f in data.data_config.input_fields],  # a file's layout, label included
              "inputs": [{"name": f.input_name, "type": f.input_type, "default_val": f.default_val}
                         for f in data.data_config.input_fields if f.input_name != label]}  # fmt: skip
    fusion = read_json(fusion_path)
    staging.mkdir(parents=True, exist_ok=True)
    write_json(staging / "fusion.json", fusion)
    write_json(staging / "pipeline.json", run.spec.model_dump(mode="json", by_alias=True, exclude_none=True))
    write_json(staging / "input_schema.json", schema)
    write_json(staging / "manifest.json", {"format": EXPORT_FORMAT, "version": EXPORT_VERSION,
                                           "fusionrec_version": __version__, "label": label, "models": models,
                                           "fusion": fusion["kind"]})  # fmt: skip
    # the old export stays whole until the new one is complete, then is swapped out
    if export_dir.exists():
        retired = export_dir.with_name(export_dir.name + ".old")
        if retired.exists():
            shutil.rmtree(retired)
        export_dir.rename(retired)
        staging.rename(export_dir)
        shutil.rmtree(retired)
    else:
        staging.rename(export_dir)
    return export_dir


class PipelineScorer:
    """Loads an export once; scores typed tables through every model and the fusion."""

    def __init__(self, saved_model_dir: str | Path, *, require_checksums: bool = True, expected_digest: str | None = None):
        directory = Path(saved_model_dir)
        manifest_path = directory / MANIFEST
        manifest = read_manifest(directory, require_checksums=require_checksums)
        self.digest = export_digest(directory, manifest, require_checksums=require_checksums)
        if expected_digest is not None and self.digest != expected_digest:
            raise FusionrecError(f"saved_model_dir {str(directory)!r}: holds another export (sha256 {self.digest[:16]}) "
                                 f"than the one pinned at start ({expected_digest[:16]}); it was rewritten after the "
                                 "server started: restart the server to serve the new export")  # fmt: skip
        self.directory = directory
        self.manifest = manifest
        self.names = [m["name"] for m in manifest["models"]]
        self.kinds = [m["kind"] for m in manifest["models"]]
        for model in manifest["models"]:
            if model["kind"] not in MEMBER_KINDS:
                raise FusionrecError(f"{manifest_path}: model {model['name']!r} has unknown kind {model['kind']!r}")
        self.members = [load_member(kind, directory / "models" / name) for name, kind in zip(self.names, self.kinds)]
        self.fusion = check_fusion_state(read_json(directory / "fusion.json"), self.names, str(directory / "fusion.json"))
        self.spec_data = read_json(directory / "pipeline.json")
        self.schema = read_json(directory / "input_schema.json")
        self.data = DataSection.model_validate(self.spec_data["data"])
        self.data_config = self.data.data_config
        # the deep models' sequences read as parallel lists, checked as their own readers check them
        self.parallel_lists = [group for member in self.members if hasattr(member, "deep")
                               for group in member.deep.config.parallel_lists()]  # fmt: skip
        self.label = manifest["label"]
        used = set().union(*(member.input_fields() for member in self.members))
        # the fields some model reads; the others (and the label) may be left out of a request
        self.required = [f["name"] for f in self.schema["inputs"] if f["name"] in used]
        self.optional = tuple(f["name"] for f in self.schema["inputs"] if f["name"] not in used) + (self.label,)
        if expected_digest is not None and export_digest(directory, manifest, require_checksums=require_checksums) != self.digest:
            raise FusionrecError(f"saved_model_dir {str(directory)!r}: the export changed while it was being loaded; "
                                 "restart the server once the new export is complete")  # fmt: skip

    def reader(self, *, separator: str | None = None, collect_rejects: bool = False, selected_cols=None) -> TableReader:
        """A reader of files to score, laid out as the training files (the label may be left
        out); bad rows raise, or with ``collect_rejects`` are rejected with their place and reason."""
        return reader_for(self.data, labels=False, parallel_lists=self.parallel_lists, separator=separator,
                          collect_rejects=collect_rejects, optional=(self.label,), selected_cols=selected_cols)  # fmt: skip

    def request_reader(self) -> TableReader:
        """A reader of request rows: fields no model reads (and the label) may be left out."""
        return reader_for(self.data, labels=False, parallel_lists=self.parallel_lists, optional=self.optional)

    def score(self, table: pa.Table, counts: Counter | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(each model's probability (n, m), the fused probability (n,)) of typed rows."""
        counts = Counter() if counts is None else counts
        if table.num_rows == 0:
            return np.zeros((0, len(self.members))), np.zeros(0)
        rows = Rows(table, self.data_config)
        columns = []
        for name, member in zip(self.names, self.members):
            own: Counter = Counter()
            columns.append(score_rows(member, rows, own))
            counts.update({f"{name}.{key}": n for key, n in own.items()})
        scores = np.column_stack(columns)
        return scores, apply_fusion(self.fusion, scores)

    def metadata(self) -> dict:
        return {"format": self.manifest["format"], "version": self.manifest["version"],
                "fusionrec_version": self.manifest["fusionrec_version"], "serving_fusionrec_version": __version__,
                "models": [{"name": n, "kind": k} for n, k in zip(self.names, self.kinds)],
                "fusion": {k: v for k, v in self.fusion.items() if k != "format"},
                "input_schema": self.schema, "required_fields": self.required, "export_digest": self.digest}  # fmt: skip


def predict_pipeline(input_path: str, output_path: str, saved_model_dir: str, *, reserved_cols: str = "ALL_COLUMNS",
                     output_cols: str = "ALL_COLUMNS", model_scores: bool = False, input_sep: str | None = None,
                     output_sep: str = "\x01", batch_size: int = 1024, selected_cols: str | None = None,
                     require_checksums: bool = True) -> dict:  # fmt: skip
    """Score files with a pipeline export, as EasyRec's predict does (its flags, its output
    layout: a header, then ``output_cols`` and ``reserved_cols`` joined by ``output_sep``).
    Outputs: ``probs`` (the fusion's probability), ``logits`` (its log-odds) and, with
    ``model_scores``, ``probs_<model>`` for each model. Every row is written or rejected
    (``<output>.rejects``, with its line and reason)."""
    from fusionrec.ctr.data import resolve_paths
    from fusionrec.ctr.export import parse_selected_cols, predictions_file, rejects_listed_on_error, write_predictions

    scorer = PipelineScorer(saved_model_dir, require_checksums=require_checksums)
    names = [f["name"] for f in scorer.schema["inputs"]] + [scorer.label]
    reserved = names if reserved_cols.strip() == "ALL_COLUMNS" else [c.strip() for c in reserved_cols.split(",") if c.strip()]
    for column in reserved:
        if column not in names:
            raise FusionrecError(f"--reserved_cols: {column!r} is not an input field ({names})")
    available = ["probs", "logits"] + ([f"probs_{n}" for n in scorer.names] if model_scores else [])
    outputs = available if output_cols.strip() in ("", "ALL_COLUMNS") else [c.split()[0] for c in output_cols.split(",") if c.strip()]
    for column in outputs:
        if column not in available:
            raise FusionrecError(f"--output_cols: {column!r} is not an output; this export gives {available}"
                                 + ("" if model_scores else " (probs_<model> with --model_scores)"))  # fmt: skip
    if batch_size < 1:
        raise FusionrecError(f"--batch_size {batch_size}: must be at least 1")
    if not output_sep:
        raise FusionrecError("--output_sep: must not be empty")
    reader = scorer.reader(separator=input_sep, collect_rejects=True, selected_cols=parse_selected_cols(selected_cols))
    output_file = check_writable_file(predictions_file(output_path), "--output_path")
    pieces, n_rows = [], 0
    counts: Counter = Counter()
    with rejects_listed_on_error(output_file, reader):
        for table in reader.iter_tables(resolve_paths(input_path, "--input_path")):
            for start in range(0, table.num_rows, batch_size):
                batch = table.slice(start, batch_size)
                scores, fused = scorer.score(batch, counts)
                named = {"probs": fused, "logits": logit(np.clip(fused, 1e-15, 1 - 1e-15)),
                         **{f"probs_{n}": scores[:, j] for j, n in enumerate(scorer.names)}}  # fmt: skip
                columns = {name: pa.array(named[name], pa.float64()) for name in outputs}
                columns.update({c: batch.column(c) for c in reserved if c not in columns})
                pieces.append(pa.table(columns))
                n_rows += batch.num_rows
    return {**write_predictions(output_file, pieces, reader, output_sep, n_rows), "features": dict(counts)}

"""``fusionrec train pipeline.yaml``: every model on every fold and on all rows, the fusion
fitted on the out-of-fold predictions, the metrics side by side, the export.

The unit of work is one (model, fold) fit; each writes its directory and, last, a
``done.json``, so an interrupted run resumes from the fits that finished. The run directory:

    run_dir/spec.json                     the resolved config (a different config refuses to resume)
    run_dir/data/train.parquet            the training rows as read (typed), once
    run_dir/data/folds.json               the splitter's blocks
    run_dir/data/inputs.json              each training file's path, size, time and sha256: a rerun on
                                          changed data stops, naming the file, instead of resuming
    run_dir/models/<name>/fold_<i>/       a fold's out-of-fold scores (oof.json), done.json (its model is
                                          scored in memory and not kept)
    run_dir/models/<name>/full/           the model fitted on every row (exported)
    run_dir/oof_predictions.csv           row, label and every model's out-of-fold score
    run_dir/fusion.json, eval_result.json, oof_correlation.png, roc.png
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fusionrec._atomic import atomic_write_bytes, check_writable_dir
from fusionrec.ctr.data import reader_for, resolve_paths
from fusionrec.errors import FusionrecError
from fusionrec.pipeline.config import PipelineSpec, SplitSection, load_pipeline
from fusionrec.pipeline.fuse import apply_fusion, fit_fusion
from fusionrec.pipeline.members import MEMBER_KINDS, FitContext, Rows, label_values, load_member, read_json, score_rows, write_json
from fusionrec.pipeline.metrics import binary_metrics

FULL = "full"


# ---------------------------------------------------------------- data and folds
def read_rows(spec: PipelineSpec, path_spec: str, what: str) -> tuple[pa.Table, dict]:
    """The typed rows of ``path_spec`` (labels required) and the reader's report. Read as
    ``fusionrec ctr`` reads them (``reader_for``: multi-value RawFeatures parsed, key:value
    and number lists checked); each deep model's own reader checks its parallel lists."""
    reader = reader_for(spec.data, labels=True, parallel_lists=[])
    tables = list(reader.iter_tables(resolve_paths(path_spec, what)))
    table = pa.concat_tables(tables).combine_chunks()
    return table, reader.report.as_dict()


def make_blocks(split: SplitSection, table: pa.Table, labels: np.ndarray) -> tuple[str, np.ndarray, list]:
    """(kind, block of each row, the time column's values per block). k-fold: stratified by the
    label, seeded; fold i holds out block i. Time split: the column's sorted distinct values cut
    into n_folds + 1 runs; fold i trains on blocks <= i and holds out block i + 1."""
    n = table.num_rows
    if split.time_split is None:
        from sklearn.model_selection import StratifiedKFold

        if n < split.k_folds:
            raise FusionrecError(f"split.k_folds {split.k_folds}: only {n} training rows")
        counts = np.bincount(labels.astype(int), minlength=2)
        if counts.min() < split.k_folds:
            raise FusionrecError(
                f"split.k_folds {split.k_folds}: the label has {counts.min()} rows of its rarer class; every fold needs one"
            )
        block = np.empty(n, dtype=np.int64)
        splitter = StratifiedKFold(split.k_folds, shuffle=True, random_state=split.seed)
        for i, (_, held) in enumerate(splitter.split(np.zeros(n), labels.astype(int))):
            block[held] = i
        return "k_folds", block, []
    column = split.time_split.column
    values = table.column(column)
    distinct = pc.unique(values).sort().to_pylist()
    needed = split.time_split.n_folds + 1
    if len(distinct) < needed:
        raise FusionrecError(
            f"split.time_split: column {column!r} has {len(distinct)} distinct values; n_folds {split.time_split.n_folds} "
            f"needs at least {needed} (each fold holds out a later run of values)"
        )
    runs = np.array_split(np.arange(len(distinct)), needed)
    block_of_value = np.empty(len(distinct), dtype=np.int64)
    for b, members in enumerate(runs):
        block_of_value[members] = b
    index = pc.index_in(values, value_set=pa.array(distinct, values.type)).to_numpy(zero_copy_only=False)
    return "time_split", block_of_value[index.astype(np.int64)], [[distinct[i] for i in r] for r in runs]


def n_folds_of(kind: str, block: np.ndarray) -> int:
    return int(block.max()) + (1 if kind == "k_folds" else 0)


def fold_rows(kind: str, block: np.ndarray, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, held-out rows) of one fold."""
    if kind == "k_folds":
        return np.flatnonzero(block != fold), np.flatnonzero(block == fold)
    return np.flatnonzero(block <= fold), np.flatnonzero(block == fold + 1)


# ---------------------------------------------------------------- what a run was trained on
def _sha256_of_file(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def input_fingerprints(paths: list[str]) -> list[dict]:
    """Each training file's path, size, modification time and sha256: a run_dir resumes only on
    the same data (its fits, folds and typed table were made from it)."""
    out = []
    for path in paths:
        stat = os.stat(path)
        out.append({"path": path, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": _sha256_of_file(path)})
    return out


def check_same_inputs(recorded: list[dict], paths: list[str], run_dir: Path) -> None:
    """Raise naming the first training file that differs from what ``run_dir`` was trained on (a
    file whose size and time are unchanged is taken as unchanged; a touched one is compared by
    its sha256)."""
    fix = "use another run_dir for the new data, or delete this one to train again"
    before = [r["path"] for r in recorded]
    if before != paths:
        added, removed = sorted(set(paths) - set(before)), sorted(set(before) - set(paths))
        what = "; ".join(part for part in (f"new {added}" if added else "", f"gone {removed}" if removed else "") if part)
        raise FusionrecError(f"run_dir {str(run_dir)!r} was trained on other files: data.train_input_path now names "
                             f"{what or 'the same files in another order'}; {fix}")  # fmt: skip
    for record, path in zip(recorded, paths):
        stat = os.stat(path)
        if (stat.st_size, stat.st_mtime_ns) == (record["size"], record["mtime_ns"]):
            continue
        if stat.st_size != record["size"]:
            raise FusionrecError(f"run_dir {str(run_dir)!r} was trained on other data: {path} changed ({record['size']:,} "
                                 f"-> {stat.st_size:,} bytes); {fix}")  # fmt: skip
        if _sha256_of_file(path) != record["sha256"]:
            raise FusionrecError(f"run_dir {str(run_dir)!r} was trained on other data: {path} changed (same size, other "
                                 f"content than sha256 {record['sha256'][:12]}...); {fix}")  # fmt: skip


# ---------------------------------------------------------------- one fit
def _task_dir(run_dir: Path, name: str, fold) -> Path:
    return run_dir / "models" / name / (FULL if fold == FULL else f"fold_{fold}")


def run_fit(spec: PipelineSpec, base_dir: Path, run_dir: Path, name: str, fold, table: pa.Table | None = None,
            folds: dict | None = None, threads: int | None = None) -> dict:  # fmt: skip
    """Fit one (model, fold); write its directory and held-out scores; return its done record.
    A worker process passes neither ``table`` nor ``folds``: it reads them from the run directory."""
    if threads is not None:  # a worker process shares the cores with the others
        import numba
        import torch

        torch.set_num_threads(threads)
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    if table is None:
        table = pq.read_table(run_dir / "data" / "train.parquet")
    entry = spec.model(name)
    member = MEMBER_KINDS[entry.kind]
    directory = _task_dir(run_dir, name, fold)
    directory.mkdir(parents=True, exist_ok=True)
    ctx = FitContext(spec, base_dir, seed=spec.split.seed + (0 if fold == FULL else 1 + int(fold)))
    start = time.perf_counter()
    if fold == FULL:
        member.fit(entry, ctx, table, directory)
        held_out = np.zeros(0, dtype=np.int64)
    else:
        folds = folds or read_json(run_dir / "data" / "folds.json")
        fit_rows, held_out = fold_rows(folds["kind"], np.asarray(folds["block"], dtype=np.int64), int(fold))
        fitted = member.fit(entry, ctx, table.take(pa.array(fit_rows)), directory, save=False)
        scores = score_rows(fitted, Rows(table.take(pa.array(held_out)), spec.data.data_config), Counter())
        atomic_write_bytes(directory / "oof.json", json.dumps({"rows": held_out.tolist(), "scores": scores.tolist()}).encode())
    record = {"model": name, "fold": fold, "seconds": time.perf_counter() - start, "rows_held_out": int(len(held_out))}
    write_json(directory / "done.json", record)
    return record


def _done(run_dir: Path, name: str, fold) -> dict | None:
    path = _task_dir(run_dir, name, fold) / "done.json"
    if not path.exists():
        return None
    try:
        return read_json(path)
    except FusionrecError:
        return None  # a damaged record: the fit runs again


def _worker(spec_data: dict, base_dir: str, run_dir: str, name: str, fold, threads: int) -> dict:
    spec = PipelineSpec.model_validate(spec_data)
    return run_fit(spec, Path(base_dir), Path(run_dir), name, fold, threads=threads)


# ---------------------------------------------------------------- the run
class PipelineRun:
    def __init__(self, spec: PipelineSpec, base_dir: Path, run_dir: str | Path | None = None, console: Console | None = None):
        self.spec = spec
        self.base_dir = Path(base_dir)
        self.run_dir = Path(run_dir or spec.run_dir)
        self.console = console or Console(stderr=True)
        self.names = [m.name for m in spec.models]
        self.export_dir = Path(spec.export.export_dir) if spec.export.export_dir else self.run_dir / "export"

    @classmethod
    def from_config(cls, path: str | Path, run_dir: str | Path | None = None, console: Console | None = None) -> "PipelineRun":
        spec, base_dir = load_pipeline(path)
        return cls(spec, base_dir, run_dir, console)

    def _claim_run_dir(self) -> None:
        """A run directory belongs to one config: resuming under another would mix their fits."""
        resolved = self.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        path = self.run_dir / "spec.json"
        if path.exists():
            if read_json(path) != resolved:
                raise FusionrecError(
                    f"run_dir {str(self.run_dir)!r} holds a run of a different pipeline config; use another run_dir "
                    "(or delete this one) to start over"
                )
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(path, resolved)

    def _prepare_data(self) -> tuple[pa.Table, dict]:
        data_dir = self.run_dir / "data"
        table_path = data_dir / "train.parquet"
        inputs_path = data_dir / "inputs.json"
        paths = resolve_paths(self.spec.data.train_input_path, "data.train_input_path")
        if table_path.exists() and (data_dir / "read_report.json").exists() and (data_dir / "folds.json").exists():
            if inputs_path.exists():  # the fits of this run_dir were made from these files
                check_same_inputs(read_json(inputs_path), paths, self.run_dir)
            else:  # a run_dir of fusionrec before the inputs were recorded: from now on they are
                write_json(inputs_path, input_fingerprints(paths))
            return pq.read_table(table_path), read_json(data_dir / "read_report.json")
        fingerprints = input_fingerprints(paths)
        table, report = read_rows(self.spec, self.spec.data.train_input_path, "data.train_input_path")
        kind, block, values = make_blocks(self.spec.split, table, label_values(table, self.spec.data.label))
        data_dir.mkdir(parents=True, exist_ok=True)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        atomic_write_bytes(table_path, sink.getvalue().to_pybytes(), checksum=False)
        write_json(data_dir / "read_report.json", report)
        write_json(data_dir / "folds.json", {"kind": kind, "block": block.tolist(), "time_values": values})
        write_json(inputs_path, fingerprints)
        return table, report

    def tasks(self, n_folds: int) -> list[tuple[str, object]]:
        return [(name, fold) for name in self.names for fold in [*range(n_folds), FULL]]

    def train(self) -> dict:
        # every output place is checked before the first row is read (a bad export_dir used to
        # surface as a traceback after all the training)
        check_writable_dir(self.run_dir, "run_dir")
        check_writable_dir(self.export_dir.parent, "export.export_dir", given=self.export_dir)  # written beside, renamed in
        self._claim_run_dir()
        console = self.console
        table, read_report = self._prepare_data()
        folds = read_json(self.run_dir / "data" / "folds.json")
        block = np.asarray(folds["block"], dtype=np.int64)
        n_folds = n_folds_of(folds["kind"], block)
        console.print(f"pipeline: {table.num_rows:,} training rows, {len(self.names)} models x ({n_folds} folds + all rows), "
                      f"run_dir {self.run_dir}")  # fmt: skip
        records = {task: _done(self.run_dir, *task) for task in self.tasks(n_folds)}
        pending = [task for task, record in records.items() if record is None]
        if len(pending) < len(records):
            console.print(f"resuming: {len(records) - len(pending)} of {len(records)} fits already finished")
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=False) as progress:  # fmt: skip
            bar = progress.add_task("fits", total=len(records), completed=len(records) - len(pending))
            for task, record in self._execute(pending, table, folds, progress, bar):
                records[task] = record
        oof_rows, oof, y_oof = self._collect_oof(table, n_folds)
        fusion = fit_fusion(self.spec.fusion, self.names, oof, y_oof)
        write_json(self.run_dir / "fusion.json", fusion)
        result = self._evaluate(oof_rows, oof, y_oof, fusion, table, records, read_report, folds["kind"], n_folds)
        from fusionrec.pipeline.artifact import export_run

        export_run(self, self.export_dir)
        return result

    def _execute(self, pending, table, folds, progress, bar):
        n_jobs = min(self.spec.n_jobs, max(1, len(pending)))
        if n_jobs == 1:
            for name, fold in pending:
                progress.update(bar, description=f"fitting {name} / {'all rows' if fold == FULL else f'fold {fold}'}")
                record = run_fit(self.spec, self.base_dir, self.run_dir, name, fold, table, folds)
                progress.advance(bar)
                yield (name, fold), record
            return
        threads = max(1, (os.cpu_count() or 1) // n_jobs)
        spec_data = self.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        with ProcessPoolExecutor(n_jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(_worker, spec_data, str(self.base_dir), str(self.run_dir), name, fold, threads): (name, fold)
                       for name, fold in pending}  # fmt: skip
            progress.update(bar, description=f"fitting in {n_jobs} processes")
            remaining = set(futures)
            while remaining:
                finished, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                for future in finished:
                    record = future.result()  # a fit's error stops the run with that error
                    progress.advance(bar)
                    yield futures[future], record

    def _collect_oof(self, table: pa.Table, n_folds: int):
        label = self.spec.data.label
        y = label_values(table, label)
        columns = []
        rows = None
        for name in self.names:
            scores = np.full(table.num_rows, np.nan)
            covered = np.zeros(table.num_rows, dtype=bool)
            for fold in range(n_folds):
                oof = read_json(_task_dir(self.run_dir, name, fold) / "oof.json")
                held = np.asarray(oof["rows"], dtype=np.int64)
                scores[held] = oof["scores"]
                covered[held] = True
            rows = np.flatnonzero(covered) if rows is None else rows
            columns.append(scores[rows])
        oof = np.column_stack(columns)
        if not np.isfinite(oof).all():
            raise FusionrecError("out-of-fold scores hold NaN or inf; a model diverged (see its fold's training log)")
        out = pa.table({"row": rows, label: y[rows], **{name: oof[:, j] for j, name in enumerate(self.names)}})
        sink = pa.BufferOutputStream()
        pacsv.write_csv(out, sink)
        atomic_write_bytes(self.run_dir / "oof_predictions.csv", sink.getvalue().to_pybytes(), checksum=False)
        return rows, oof, y[rows]

    def _evaluate(self, oof_rows, oof, y_oof, fusion, table, records, read_report, split_kind, n_folds) -> dict:
        gauc_field = self.spec.eval.gauc_field
        groups = table.column(gauc_field).to_numpy(zero_copy_only=False)[oof_rows] if gauc_field else None
        fused_oof = apply_fusion(fusion, oof)
        result = {
            "rows": {"train": read_report, "out_of_fold": int(len(oof_rows))},
            "split": {"kind": split_kind, "n_folds": n_folds, "seed": self.spec.split.seed},
            "fusion": fusion,
            "out_of_fold": {**{name: binary_metrics(y_oof, oof[:, j], groups) for j, name in enumerate(self.names)},
                            "fusion": binary_metrics(y_oof, fused_oof, groups)},
            "seconds": {name: {str(fold): round(records[(name, fold)]["seconds"], 3) for fold in [*range(n_folds), FULL]}
                        for name in self.names},
        }  # fmt: skip
        if self.spec.data.eval_input_path:
            test, test_report = read_rows(self.spec, self.spec.data.eval_input_path, "data.eval_input_path")
            y_test = label_values(test, self.spec.data.label)
            counts: Counter = Counter()
            rows = Rows(test, self.spec.data.data_config)
            test_scores = np.column_stack([score_rows(load_member(m.kind, _task_dir(self.run_dir, m.name, FULL)), rows, counts)
                                           for m in self.spec.models])  # fmt: skip
            test_groups = test.column(gauc_field).to_numpy(zero_copy_only=False) if gauc_field else None
            fused_test = apply_fusion(fusion, test_scores)
            result["rows"]["test"] = test_report
            result["test"] = {**{name: binary_metrics(y_test, test_scores[:, j], test_groups) for j, name in enumerate(self.names)},
                              "fusion": binary_metrics(y_test, fused_test, test_groups)}  # fmt: skip
            result["test_feature_counts"] = dict(counts)
        write_json(self.run_dir / "eval_result.json", result)
        self._plots(oof, y_oof, fused_oof)
        self._print(result)
        return result

    def _plots(self, oof, y_oof, fused_oof) -> None:
        from fusionrec.pipeline.plots import plot_oof_correlation, plot_roc

        plot_oof_correlation(self.names, oof, self.run_dir / "oof_correlation.png")
        plot_roc(self.names, oof, y_oof, fused_oof, self.run_dir / "roc.png", "out of fold")

    def _print(self, result: dict) -> None:
        table = Table(title=f"pipeline {self.run_dir}")
        table.add_column("model")
        for column in ("oof AUC", "oof GAUC", "oof logloss", "test AUC", "test GAUC", "test logloss", "fit seconds"):
            table.add_column(column, justify="right")
        for name in [*self.names, "fusion"]:
            oof, test = result["out_of_fold"][name], result.get("test", {}).get(name, {})
            seconds = sum(result["seconds"][name].values()) if name in result["seconds"] else None

            def fmt(value):
                return "" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.4f}"

            table.add_row(name, fmt(oof["auc"]), fmt(oof.get("gauc")), fmt(oof["logloss"]), fmt(test.get("auc")),
                          fmt(test.get("gauc")), fmt(test.get("logloss")), "" if seconds is None else f"{seconds:.1f}")  # fmt: skip
        self.console.print(table)

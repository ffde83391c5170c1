"""Stage 1: CSVInput / ParquetInput -> typed, validated column batches -> tensors.

Files are read in blocks with pyarrow (typed and vectorized, never a Python loop per row),
so data larger than memory streams. Every column is read as text first so that an empty
field can take its ``default_val`` and a value that does not parse can be reported with its
file, line, column and value. With ``ignore_error: true`` such rows are skipped and counted
by reason instead. A label is never imputed.

CSV files are read as whole lines and split at the separator with Arrow kernels, so every
physical line is one row: a bad row is reported with its line number, a row with the wrong
number of fields or bytes that are not UTF-8 is rejected on its own, and blank lines are
counted. rows read = rows used + rows skipped, always (``ReadReport``); a pass that uses no
row is an error (``0 valid rows in ...``).
"""

from __future__ import annotations

import glob
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import torch

from fusionrec.ctr.config import DataConfig, InputField, reader_options
from fusionrec.ctr.tasks import BINARY, Task
from fusionrec.errors import FusionrecError

INT_PATTERN = r"^\s*[+-]?[0-9]+\s*$"
FLOAT_PATTERN = r"(?i)^\s*[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)(e[+-]?[0-9]+)?|inf|infinity|nan)\s*$"
BOOL_TRUE = ["true", "True", "TRUE", "1"]
BOOL_FALSE = ["false", "False", "FALSE", "0"]
INT32_RANGE = (-(2**31), 2**31 - 1)
FLOAT32_MAX = float(np.finfo(np.float32).max)  # models compute in float32: a larger value would become inf
READ_BLOCK_BYTES = 4 << 20
# The CSV reader splits lines itself (see TableReader._csv); pyarrow is asked for whole lines by
# giving it a delimiter that text files do not hold.
LINE_DELIMITERS = ("\x1f", "\x1e")
UTF8_BOM = b"\xef\xbb\xbf"


def resolve_paths(spec: str, what: str = "input path") -> list[str]:
    """Files, comma-separated lists and globs, in the order given (a glob's matches sorted)."""
    paths: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if any(ch in part for ch in "*?["):
            matches = sorted(glob.glob(part))
            if not matches:
                raise FusionrecError(f"{what} {part!r}: the pattern matches no file")
            paths.extend(matches)
        elif os.path.isdir(part):
            files = sorted(str(p) for p in Path(part).iterdir() if p.is_file() and not p.name.startswith("."))
            if not files:
                raise FusionrecError(f"{what} {part!r}: the directory holds no file")
            paths.extend(files)
        elif os.path.isfile(part):
            paths.append(part)
        else:
            raise FusionrecError(f"{what} {part!r}: no such file")
    if not paths:
        raise FusionrecError(f"{what} {spec!r}: names no file")
    return paths


@dataclass
class ReadReport:
    """What a pass over the input did with every line: rows used, rows skipped by reason,
    blank lines, empty fields that took their ``default_val``. rows_read = rows_used + rows_skipped."""

    n_rows: int = 0  # rows used
    skipped: Counter = field(default_factory=Counter)  # rows skipped (ignore_error / predict), by reason
    blank_lines: int = 0
    defaults_used: Counter = field(default_factory=Counter)  # per column: empty or null fields defaulted
    files: dict = field(default_factory=dict)  # per file: rows_used, rows_skipped, blank_lines
    features: dict = field(default_factory=dict)  # per feature: out_of_vocabulary, truncated (from the transform)
    rejected: list = field(default_factory=list)  # (file, line or row, reason, text) for predict's rejects
    # rows of a last global batch left out so that data-parallel processes take equal steps
    rows_unsharded: int = 0

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def file_counts(self, path: str) -> Counter:
        return self.files.setdefault(path, Counter(rows_used=0, rows_skipped=0, blank_lines=0))

    def add_feature_counts(self, counts: dict[str, int]) -> None:
        """Add the transform's ``<feature>.<kind>`` counts of one batch."""
        for key, value in counts.items():
            feature, kind = key.rsplit(".", 1)
            per_feature = self.features.setdefault(feature, Counter())
            per_feature[kind] += int(value)

    def feature_counts(self) -> dict:
        """Per feature, its non-zero counts (out_of_vocabulary, out_of_range, truncated)."""
        return {name: dict(c) for name, c in sorted(self.features.items()) if any(c.values())}

    def as_dict(self) -> dict:
        return {
            "rows_read": self.n_rows + self.n_skipped, "rows_used": self.n_rows, "rows_skipped": self.n_skipped,
            "skipped_by_reason": dict(self.skipped), "blank_lines": self.blank_lines,
            "defaults_used": dict(self.defaults_used),
            "features": self.feature_counts(),
            "files": {path: dict(c) for path, c in self.files.items()},
            **({"rows_unsharded": self.rows_unsharded} if self.rows_unsharded else {}),
        }  # fmt: skip

    def summary(self) -> str:
        """One line for the end of a job: what was skipped, defaulted and mapped out of range."""
        parts = [f"{self.n_rows:,} rows used"]
        if self.n_skipped:
            parts.append(f"{self.n_skipped:,} skipped {dict(self.skipped)}")
        if self.blank_lines:
            parts.append(f"{self.blank_lines:,} blank lines")
        if self.defaults_used:
            parts.append(f"default_val used {dict(self.defaults_used)}")
        features = self.feature_counts()
        if features:
            parts.append(f"features {features}")
        return "; ".join(parts)

    def no_valid_rows(self, spec: str) -> FusionrecError:
        """The error for a pass that used no row: ``0 valid rows in <spec>`` with what was skipped."""
        detail = f"{self.n_skipped} rows skipped {dict(self.skipped)}" if self.n_skipped else "no data rows"
        blank = f", {self.blank_lines} blank lines" if self.blank_lines else ""
        return FusionrecError(f"0 valid rows in {spec} ({detail}{blank})")


def reader_for(config, *, labels: bool = True, parallel_lists: list | None = None, **options) -> "TableReader":
    """The one way to read a config's input: a ``TableReader`` of ``config.data_config`` that
    knows what ``config.features`` need checked or parsed (``reader_options``), the parallel
    lists of its sequence groups and, with ``labels``, each label's task. ``config`` is a
    ``PipelineConfig`` (train, eval, predict, export) or anything with ``data_config`` and
    ``features`` (a fusion pipeline's data section, with its deep models' ``parallel_lists``).
    ``options`` go to ``TableReader`` (separator, optional, selected_cols, collect_rejects, fields)."""
    if parallel_lists is None:
        parallel_lists = config.parallel_lists() if hasattr(config, "parallel_lists") else []
    if labels and hasattr(config, "label_tasks"):
        options.setdefault("task", config.label_tasks())
    return TableReader(config.data_config, labels=labels, parallel_lists=parallel_lists,
                       **reader_options(config.features), **options)  # fmt: skip


class TableReader:
    """Reads input files into validated pyarrow Tables of typed columns (fields in config order).

    ``optional`` names fields a file may lack (predict's labels): an absent one becomes a
    column of nulls. ``selected_cols`` gives, for headerless CSV, the 0-based file column of
    each non-optional field (EasyRec's predict flag). ``task`` decides which label values are
    valid (``Task.label_rule``; binary by default): one task for every label field, or a task
    per label field (a multi-task model's ``PipelineConfig.label_tasks``).
    """

    def __init__(self, data_config: DataConfig, fields: list[InputField] | None = None, *, labels: bool = True,
                 separator: str | None = None, collect_rejects: bool = False, optional: tuple[str, ...] = (),
                 selected_cols: list[int] | None = None, parallel_lists: list[list[tuple[str, str]]] = (),
                 task: Task | dict[str, Task] = Task(BINARY), vectors: dict[str, tuple[int, str]] | None = None,
                 kv_maps: dict[str, tuple[str, str, bool]] | None = None,
                 number_lists: dict[str, tuple[str, str, int]] | None = None):  # fmt: skip
        self.config = data_config
        self.label_tasks = dict(task) if isinstance(task, dict) else {name: task for name in data_config.label_fields}
        # STRING fields of key<kv>value entries (LookupFeature maps, weighted TagFeatures: PipelineConfig.kv_maps)
        self.kv_maps = dict(kv_maps or {})
        # STRING fields of numbers joined by a separator (RawFeature sequences: PipelineConfig.number_lists)
        self.number_lists = dict(number_lists or {})  # field -> (separator, seq_multi_sep or "", numbers per position or 0)
        # STRING fields read as raw_input_dim numbers joined by a separator (PipelineConfig.vector_inputs)
        self.vectors = dict(vectors or {})
        self.fields = fields if fields is not None else list(data_config.input_fields)
        self.names = [f.input_name for f in self.fields]
        self.label_names = list(data_config.label_fields) if labels else []
        self.separator = separator or data_config.separator
        if len(self.separator) != 1:
            raise FusionrecError(f"separator {self.separator!r}: must be one character")
        self.ignore_error = data_config.ignore_error or collect_rejects
        self.collect_rejects = collect_rejects
        self.optional = tuple(optional)
        self.required = [n for n in self.names if n not in self.optional]
        if selected_cols is not None and len(selected_cols) != len(self.required):
            raise FusionrecError(
                f"selected_cols: {len(selected_cols)} column indices for {len(self.required)} input fields {self.required}"
            )
        self.selected_cols = selected_cols
        self.parallel_lists = [group for group in parallel_lists if all(name in self.names for name, _ in group)]
        self.report = ReadReport()

    # -- files ---------------------------------------------------------------------
    def iter_tables(self, paths: list[str]) -> Iterator[pa.Table]:
        """Typed tables of every file in turn; raises ``0 valid rows`` when a whole pass found none."""
        used_before = self.report.n_rows
        for path in paths:
            if self.config.is_parquet or path.endswith(".parquet"):
                yield from self._parquet(path)
            else:
                yield from self._csv(path)
        if self.report.n_rows == used_before:  # a whole pass found nothing to use: never train on nothing
            raise self.report.no_valid_rows(", ".join(paths))

    def read_text_table(self, table: pa.Table, source: str) -> pa.Table:
        """Typed rows of a table of text columns (a scoring request's rows), checked as file rows
        are: a bad value raises naming ``source``, its 1-based row, the column and the rule (or,
        with ignore_error, is counted and its row dropped). Columns that are not input fields are ignored."""
        missing = [n for n in self.required if n not in table.column_names]
        if missing:
            raise FusionrecError(f"{source}: no column {missing} (input fields {self.required}); it has {table.column_names}")
        text = pa.table({n: pc.cast(table.column(n), pa.string()) for n in self.names if n in table.column_names})
        where = np.arange(1, table.num_rows + 1, dtype=np.int64)
        return self._convert(text, source, where, "row", self.report.file_counts(source))

    def _csv(self, path: str) -> Iterator[pa.Table]:
        """Whole lines from pyarrow (typed as bytes), split at the separator with Arrow kernels.

        Each physical line is one row, so a bad row's line number is known without re-reading
        the file, a row with the wrong field count or bytes that are not UTF-8 is rejected on
        its own, and blank lines are counted.
        """
        delimiter = next(d for d in LINE_DELIMITERS if d != self.separator)
        try:
            stream = pa.input_stream(path, compression="detect")
        except OSError as error:
            raise FusionrecError(f"{path}: cannot read ({error})") from None
        try:
            reader = pacsv.open_csv(
                stream, read_options=pacsv.ReadOptions(column_names=["line"], block_size=READ_BLOCK_BYTES),
                parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char=False, ignore_empty_lines=False),
                convert_options=pacsv.ConvertOptions(column_types={"line": pa.binary()}, strings_can_be_null=False),
            )  # fmt: skip
        except (pa.ArrowInvalid, OSError) as error:
            stream.close()
            if "Empty CSV file" in str(error):
                self.report.file_counts(path)
                return
            raise FusionrecError(f"{path}: cannot read as CSV ({_one_line(error)})") from None
        counts = self.report.file_counts(path)
        try:
            layout: list[str | None] | None = None
            next_line = 1
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                except (pa.ArrowInvalid, OSError) as error:
                    raise FusionrecError(f"{path} near line {next_line}: cannot read ({_one_line(error)})") from None
                lines = batch.column(0)
                line_numbers = np.arange(next_line, next_line + len(lines), dtype=np.int64)
                next_line += len(lines)
                if len(lines) and line_numbers[0] == 1:
                    lines = _strip_bom(lines)
                if layout is None:
                    layout, lines, line_numbers = self._csv_layout(path, lines, line_numbers)
                    if layout is None:
                        continue
                table, where = self._split_lines(path, lines, line_numbers, layout, counts)
                if table is not None:
                    out = self._convert(table, path, where, "line", counts)
                    if out.num_rows:
                        yield out
        finally:
            reader.close()
            stream.close()

    def _csv_layout(self, path: str, lines: pa.Array, line_numbers: np.ndarray):
        """The field name of each file column (None: not read), from the header or the
        config; the header line is consumed. (None, ...) while no non-blank line was seen."""
        blank = pc.equal(pc.binary_length(lines), 0).to_numpy(zero_copy_only=False)
        first = int(np.argmin(blank)) if not blank.all() else -1
        if self.config.with_header:
            if first < 0:
                self.report.blank_lines += len(lines)
                self.report.file_counts(path)["blank_lines"] += len(lines)
                return None, lines, line_numbers
            if first > 0:
                self.report.blank_lines += first
                self.report.file_counts(path)["blank_lines"] += first
            text = _decode(lines[first].as_py(), f"{path} line {int(line_numbers[first])} (the header)")
            columns = [c.strip() for c in text.split(self.separator)]
            duplicates = sorted({c for c in columns if columns.count(c) > 1})
            if duplicates:
                raise FusionrecError(f"{path}: header names {duplicates} appear more than once")
            missing = [n for n in self.required if n not in columns]
            if missing:
                raise FusionrecError(f"{path}: the header has no column {missing} (input_fields {self.names}); header: {columns}")
            layout = [c if c in self.names else None for c in columns]
            return layout, lines.slice(first + 1), line_numbers[first + 1 :]
        if self.selected_cols is not None:
            n_columns = max(self.selected_cols) + 1
            if first >= 0:
                n_columns = max(n_columns, lines[first].as_py().count(self.separator.encode()) + 1)
            layout: list[str | None] = [None] * n_columns
            for name, index in zip(self.required, self.selected_cols):
                layout[index] = name
            return layout, lines, line_numbers
        if self.optional and first >= 0 and lines[first].as_py().count(self.separator.encode()) + 1 == len(self.required):
            return list(self.required), lines, line_numbers  # headerless and without the optional fields
        return list(self.names), lines, line_numbers

    def _split_lines(self, path, lines: pa.Array, line_numbers: np.ndarray, layout, counts):
        """(table of text columns named by ``layout``, line numbers), after counting blank lines
        and rejecting lines that are not UTF-8 or have the wrong number of fields."""
        keep = pc.not_equal(pc.binary_length(lines), 0).to_numpy(zero_copy_only=False)
        n_blank = int(len(lines) - keep.sum())
        self.report.blank_lines += n_blank
        counts["blank_lines"] += n_blank
        try:
            text = lines.cast(pa.string())
        except pa.ArrowInvalid:  # rare: find the lines that are not UTF-8, reject them, go on
            valid = np.array([_is_utf8(v) for v in lines.to_pylist()])
            decoded = lambda i: lines[int(i)].as_py().decode("utf-8", "replace")  # noqa: E731
            self._reject(path, ~valid & keep, line_numbers, "line", "line is not UTF-8 text", decoded, counts,
                         lambda i: f": bytes that are not UTF-8 text; row: {decoded(i)[:200]!r}")  # fmt: skip
            keep &= valid
            text = pc.if_else(pa.array(valid), lines, pa.scalar(b"", pa.binary())).cast(pa.string())
        parts = pc.split_pattern(text, self.separator)
        n_fields = np.diff(parts.offsets.to_numpy())  # (pc.list_value_length is ~400x slower here)
        width = len(layout)
        bad = keep & (n_fields != width)
        self._reject(path, bad, line_numbers, "line", f"wrong number of fields (expected {width})",
                     lambda i: text[int(i)].as_py(), counts,
                     lambda i: f": {n_fields[i]} fields, expected {width}; row: {text[int(i)].as_py()[:200]!r}")  # fmt: skip
        keep &= ~bad
        if not keep.any():
            return None, None
        rows = np.flatnonzero(keep)
        values = parts.flatten() if len(rows) == len(parts) else pc.list_flatten(parts.take(pa.array(rows)))
        # one take puts the values column by column (row-major -> column-major), then slices
        wanted = [j for j, name in enumerate(layout) if name is not None]
        order = (np.arange(len(rows), dtype=np.int64)[None, :] * width + np.asarray(wanted, dtype=np.int64)[:, None]).ravel()
        by_column = values.take(pa.array(order))
        columns = {layout[j]: by_column.slice(k * len(rows), len(rows)) for k, j in enumerate(wanted)}
        return pa.table(columns), line_numbers[rows]

    def _parquet(self, path: str) -> Iterator[pa.Table]:
        try:
            file = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as error:
            raise FusionrecError(f"{path}: cannot read as Parquet ({_one_line(error)})") from None
        schema = file.schema_arrow
        missing = [n for n in self.required if n not in schema.names]
        if missing:
            raise FusionrecError(f"{path}: no column {missing} (input_fields {self.names}); the file has {schema.names}")
        present = [f for f in self.fields if f.input_name in schema.names]
        for f in present:
            _check_parquet_type(path, f, schema.field(f.input_name).type, f.input_name in self.vectors)
        counts = self.report.file_counts(path)
        first_row = 0
        batches = file.iter_batches(batch_size=65536, columns=[f.input_name for f in present])
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError) as error:
                raise FusionrecError(f"{path} after row {first_row}: cannot read ({_one_line(error)}); the file is damaged") from None
            columns = {}
            for f in present:
                column = batch.column(f.input_name)
                if pa.types.is_dictionary(column.type):
                    column = column.dictionary_decode()
                if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
                    column = _binary_to_string(column, f"{path}, column {f.input_name!r}")
                if _is_number_list(column.type):  # a RawFeature's numbers as a list column: read as their text
                    column = pc.binary_join(pc.cast(column, pa.list_(pa.string())), self.vectors[f.input_name][1])
                columns[f.input_name] = pc.cast(column, pa.string())  # nulls stay null: they take default_val
            where = np.arange(first_row + 1, first_row + batch.num_rows + 1, dtype=np.int64)
            first_row += batch.num_rows
            out = self._convert(pa.table(columns), path, where, "row", counts)
            if out.num_rows:
                yield out

    # -- values --------------------------------------------------------------------
    def _convert(self, table: pa.Table, path: str, where: np.ndarray, unit: str, counts: Counter) -> pa.Table:
        """Text columns -> typed columns; bad rows raise (or are dropped and counted).
        ``where`` holds each row's line (CSV) or row (Parquet) number."""
        n = table.num_rows
        keep = np.ones(n, dtype=bool)
        typed = {}
        defaulted = {}
        for f in self.fields:
            name = f.input_name
            if name not in table.column_names:  # an optional field this file lacks
                typed[name] = pa.nulls(n, _ARROW_TYPES[f.input_type])
                continue
            text = table.column(name)
            if isinstance(text, pa.ChunkedArray):
                text = text.combine_chunks()
            is_label = name in self.label_names
            empty = pc.fill_null(pc.equal(pc.utf8_length(text), 0), True).to_numpy(zero_copy_only=False)
            if is_label:
                self._bad_rows(empty & keep, keep, text, path, where, unit, name,
                               "label is empty (labels are never imputed)", counts)  # fmt: skip
            elif empty.any():
                default = f.default_val if f.default_val is not None else ("" if f.input_type == "STRING" else "0")
                text = pc.if_else(pa.array(empty), pa.scalar(default), pc.fill_null(text, ""))
                if default:  # an empty STRING without default_val stays empty: nothing is imputed
                    defaulted[name] = empty
            typed[name] = self._typed(f, text, keep, path, where, unit, is_label, counts)
        for group in self.parallel_lists:
            self._check_parallel(group, typed, keep, path, where, unit, counts)
        for name, empty in defaulted.items():
            if (empty & keep).any():
                self.report.defaults_used[name] += int((empty & keep).sum())
        n_used = int(keep.sum())
        self.report.n_rows += n_used
        counts["rows_used"] += n_used
        if not keep.all():
            mask = pa.array(keep)
            typed = {k: pc.filter(v, mask) for k, v in typed.items()}
        return pa.table(typed)

    def _typed(self, f: InputField, text, keep, path, where, unit, is_label, counts):
        kind = f.input_type
        name = f.input_name

        def bad(rows, rule):
            self._bad_rows(rows & keep, keep, text, path, where, unit, name, rule, counts)

        if kind == "STRING":
            if name in self.vectors:
                return self._vector(text, *self.vectors[name], bad)
            if name in self.kv_maps:
                self._check_kv_map(text, *self.kv_maps[name], bad=bad)
            if name in self.number_lists:
                self._check_number_list(text, *self.number_lists[name], bad)
            return text
        if kind in ("INT32", "INT64"):
            ok = pc.match_substring_regex(text, INT_PATTERN).to_numpy(zero_copy_only=False)
            bad(~ok, f"is not an integer ({kind})")
            long = ok & (pc.utf8_length(pc.utf8_trim_whitespace(text)).to_numpy(zero_copy_only=False) >= 19)
            for row in np.flatnonzero(long):  # rare: only 19+ digit values are checked one by one
                digits = text[int(row)].as_py().strip()
                # more than 19 significant digits is out of range anyway (and Python refuses int() of 4,300+)
                if len(digits.lstrip("+-").lstrip("0")) > 19 or not -(2**63) <= int(digits) < 2**63:
                    ok[row] = False
            bad(~ok, "is outside the INT64 range")
            values = pc.cast(pc.if_else(pa.array(ok), pc.utf8_trim_whitespace(text), pa.scalar("0")), pa.int64())
            if kind == "INT32":
                v = values.to_numpy()
                bad((v < INT32_RANGE[0]) | (v > INT32_RANGE[1]), "is outside the INT32 range")
        elif kind in ("FLOAT", "DOUBLE"):
            ok = pc.match_substring_regex(text, FLOAT_PATTERN).to_numpy(zero_copy_only=False)
            bad(~ok, f"is not a number ({kind})")
            values = pc.cast(pc.if_else(pa.array(ok), pc.utf8_trim_whitespace(text), pa.scalar("0")), pa.float64())
            v = values.to_numpy(zero_copy_only=False)
            bad(~np.isfinite(v), "is not a finite number (inf, nan and overflow are refused)")
            with np.errstate(invalid="ignore"):
                bad(np.abs(v) > FLOAT32_MAX, f"is outside the float32 range (|x| <= {FLOAT32_MAX:.7g}) the models compute in")
        else:  # BOOL
            is_true = pc.is_in(text, pa.array(BOOL_TRUE)).to_numpy(zero_copy_only=False)
            is_false = pc.is_in(text, pa.array(BOOL_FALSE)).to_numpy(zero_copy_only=False)
            bad(~(is_true | is_false), "is not a boolean")
            values = pa.array(is_true.astype(np.int64))
        if is_label:
            v = values.to_numpy(zero_copy_only=False).astype(np.float64)
            task = self.label_tasks.get(name, Task(BINARY))
            bad(task.bad_labels(v), task.label_rule)
        return values

    @staticmethod
    def _vector(text, dim: int, separator: str, bad) -> pa.Array:
        """``dim`` numbers joined by ``separator`` per row -> a fixed-size list of float64 (a
        row of another count, or holding a value that is not a finite float32 number, is bad)."""
        n = len(text)
        parts = pc.split_pattern(pc.fill_null(text, ""), separator)
        lengths = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
        tokens = pc.list_flatten(parts)
        rows = pc.list_parent_indices(parts).to_numpy(zero_copy_only=False)
        is_number = pc.match_substring_regex(tokens, FLOAT_PATTERN).to_numpy(zero_copy_only=False)
        numbers = pc.cast(pc.if_else(pa.array(is_number), pc.utf8_trim_whitespace(tokens), pa.scalar("0")), pa.float64())
        numbers = numbers.to_numpy(zero_copy_only=False)
        with np.errstate(invalid="ignore"):
            valid = is_number & np.isfinite(numbers) & (np.abs(numbers) <= FLOAT32_MAX)
        bad(lengths != dim, f"does not hold {dim} numbers joined by {separator!r} (raw_input_dim {dim})")
        bad(_rows_with(n, rows, ~valid), f"holds a value that is not a finite number within the float32 range (|x| <= {FLOAT32_MAX:.7g})")
        matrix = np.zeros((n, dim), dtype=np.float64)
        fits = (lengths[rows] == dim) & valid
        offsets = np.r_[0, np.cumsum(lengths)[:-1]]
        matrix[rows[fits], (np.arange(len(tokens)) - offsets[rows])[fits]] = numbers[fits]
        return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), dim)

    @staticmethod
    def _check_number_list(text, separator: str, multi_separator: str, per_position: int, bad) -> None:
        """Every non-empty element (every value of a seq_multi_sep position) must be a decimal
        number ([+-]digits[.digits]) within the float32 range; with ``per_position``, a position
        holds at most that many (raw_input_dim: fewer are zeros, as EasyRec densifies them)."""
        text = pc.fill_null(text, "")
        if per_position:
            split = pc.split_pattern(text, separator)
            positions = pc.list_flatten(split)
            position_rows = pc.list_parent_indices(split).to_numpy(zero_copy_only=False)
            n_values = pc.add(pc.count_substring(positions, multi_separator), 1).to_numpy(zero_copy_only=False)
            bad(_rows_with(len(text), position_rows, n_values > per_position),
                f"holds a position of more than {per_position} numbers joined by {multi_separator!r} (raw_input_dim {per_position})")
        if multi_separator:
            text = pc.replace_substring(text, multi_separator, separator)
        parts = pc.split_pattern(text, separator)
        entries = pc.utf8_trim_whitespace(pc.list_flatten(parts))
        rows = pc.list_parent_indices(parts).to_numpy(zero_copy_only=False)
        empty = pc.equal(pc.utf8_length(entries), 0).to_numpy(zero_copy_only=False)
        decimal = pc.match_substring_regex(entries, r"^[+-]?(\d+\.?\d*|\.\d+)$").to_numpy(zero_copy_only=False)
        numbers = pc.cast(pc.if_else(pa.array(decimal), entries, pa.scalar("0")), pa.float64()).to_numpy(zero_copy_only=False)
        too_big = np.abs(numbers) > FLOAT32_MAX
        bad(_rows_with(len(text), rows, (~decimal | too_big) & ~empty),
            f"holds an element that is not a decimal number within the float32 range (elements joined by {separator!r})")

    @staticmethod
    def _check_kv_map(text, separator: str, kv_separator: str, weights: bool, bad) -> None:
        """Every non-empty entry must be key<kv_separator>value (one separator); a weight (a
        weighted TagFeature's value) must be a decimal number."""
        parts = pc.split_pattern(pc.fill_null(text, ""), separator)
        entries = pc.list_flatten(parts)
        rows = pc.list_parent_indices(parts).to_numpy(zero_copy_only=False)
        n_kv = pc.count_substring(entries, kv_separator).to_numpy(zero_copy_only=False)
        empty = pc.equal(pc.utf8_length(entries), 0).to_numpy(zero_copy_only=False)
        bad(_rows_with(len(text), rows, (n_kv != 1) & ~empty), f"holds an entry that is not key{kv_separator}value (entries joined by {separator!r})")
        if weights:
            pattern = "^[^" + re.escape(kv_separator) + "]*" + re.escape(kv_separator) + r"[+-]?(\d+\.?\d*|\.\d+)$"
            decimal = pc.match_substring_regex(entries, pattern).to_numpy(zero_copy_only=False)
            bad(_rows_with(len(text), rows, ~decimal & ~empty & (n_kv == 1)), f"holds a weight that is not a decimal number (key{kv_separator}0.5)")

    def _check_parallel(self, group, typed, keep, path, where, unit, counts) -> None:
        """Lists read as parallel (a seq_att_map's hist_seq) must have equal lengths in every
        row, counted before max_seq_len truncation (empty tokens do not count, as in features)."""
        first, first_sep = group[0]
        lengths = _token_counts(typed[first], first_sep)
        for name, separator in group[1:]:
            other = _token_counts(typed[name], separator)
            bad = (other != lengths) & keep
            if bad.any():
                rule = f"must be as long as {first} (the hist_seq lists of one seq_att_map are parallel)"
                self._reject(path, bad, where, unit, f"column {name}: value {rule}", lambda i: typed[name][int(i)].as_py(),
                             counts, lambda i: f", column {name!r}: {other[i]} values but {first!r} has {lengths[i]}; "
                             "the hist_seq lists of one seq_att_map are parallel")  # fmt: skip
                keep[bad] = False

    def _bad_rows(self, bad: np.ndarray, keep: np.ndarray, text, path, where, unit, column, rule, counts) -> None:
        if not bad.any():
            return
        self._reject(path, bad, where, unit, f"column {column}: value {rule}", lambda i: text[int(i)].as_py(), counts,
                     lambda i: f", column {column!r}: {text[int(i)].as_py()!r} {rule}")  # fmt: skip
        keep[bad] = False

    def _reject(self, path, bad: np.ndarray, where: np.ndarray, unit: str, reason: str, value_of, counts,
                detail) -> None:  # fmt: skip
        """Raise on the first bad row (``detail`` says what is wrong with it), or with
        ignore_error / in predict count them all by ``reason`` and keep them for the rejects file."""
        rows = np.flatnonzero(bad)
        if not len(rows):
            return
        if not self.ignore_error:
            row = int(rows[0])
            raise FusionrecError(f"{path} {unit} {int(where[row])}{detail(row)}")
        self.report.skipped[reason] += len(rows)
        counts["rows_skipped"] += len(rows)
        if self.collect_rejects:
            for row in rows:
                self.report.rejected.append((path, f"{unit} {int(where[row])}", reason, value_of(row)))


def _token_counts(text: pa.Array, separator: str) -> np.ndarray:
    """Non-empty tokens per row of ``separator``-joined lists."""
    parts = pc.split_pattern(text, separator)
    tokens = pc.list_flatten(parts)
    non_empty = pc.greater(pc.utf8_length(tokens), 0).to_numpy(zero_copy_only=False)
    rows = pc.list_parent_indices(parts).to_numpy(zero_copy_only=False)
    return np.bincount(rows[non_empty], minlength=len(text))


_ARROW_TYPES = {"STRING": pa.string(), "INT32": pa.int64(), "INT64": pa.int64(), "FLOAT": pa.float64(),
                "DOUBLE": pa.float64(), "BOOL": pa.int64()}  # fmt: skip


def _is_number_list(arrow_type: pa.DataType) -> bool:
    kinds = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
    return any(kind(arrow_type) for kind in kinds) and (pa.types.is_integer(arrow_type.value_type)
                                                        or pa.types.is_floating(arrow_type.value_type))  # fmt: skip


def _check_parquet_type(path: str, f: InputField, arrow_type: pa.DataType, vector: bool = False) -> None:
    """A Parquet column must hold what its input field declares: no silent float -> int. The
    STRING field of a RawFeature of several numbers (``vector``) may be a list of numbers."""
    t = arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type
    text = pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t)
    allowed = {
        "STRING": text or pa.types.is_integer(t) or (vector and _is_number_list(t)),
        "INT32": text or pa.types.is_integer(t),
        "INT64": text or pa.types.is_integer(t),
        "FLOAT": text or pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t),
        "DOUBLE": text or pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t),
        "BOOL": text or pa.types.is_integer(t) or pa.types.is_boolean(t),
    }[f.input_type]
    if not allowed:
        raise FusionrecError(
            f"{path}: column {f.input_name!r} is Parquet type {arrow_type}, but its input field is {f.input_type}; "
            "convert the column or change input_type"
        )


def _binary_to_string(column: pa.Array, where: str) -> pa.Array:
    try:
        return column.cast(pa.string())
    except pa.ArrowInvalid:
        row = next(i for i, v in enumerate(column.to_pylist()) if v is not None and not _is_utf8(v))
        raise FusionrecError(f"{where}, row {row + 1}: bytes that are not UTF-8 text") from None


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _decode(value: bytes, where: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as error:
        raise FusionrecError(f"{where}: byte {error.start} is not UTF-8 text") from None


def _strip_bom(lines: pa.Array) -> pa.Array:
    first = lines[0].as_py()
    if not first.startswith(UTF8_BOM):
        return lines
    return pa.concat_arrays([pa.array([first[len(UTF8_BOM) :]], pa.binary()), lines.slice(1)])


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300]


# ------------------------------------------------------------------------------ batches
def _rows_with(n_rows: int, token_rows: np.ndarray, token_is_bad: np.ndarray) -> np.ndarray:
    """Mask of the rows that hold at least one bad token (``token_rows``: each token's row)."""
    out = np.zeros(n_rows, dtype=bool)
    out[token_rows[token_is_bad]] = True
    return out


def table_to_columns(table: pa.Table, fields: list[InputField]) -> dict[str, torch.Tensor]:
    """Typed Arrow columns -> the tensors FeatureTransform takes (strings as bytes + offsets)."""
    out: dict[str, torch.Tensor] = {}
    for f in fields:
        if f.input_name not in table.column_names:
            continue
        column = table.column(f.input_name).combine_chunks()
        if len(column) and column.null_count == len(column):  # an optional field the file lacks (predict's label)
            continue
        if pa.types.is_fixed_size_list(column.type):  # raw_input_dim numbers per row (TableReader._vector)
            values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float64)
            out[f.input_name] = torch.from_numpy(values.reshape(len(column), column.type.list_size))
        elif f.input_type == "STRING":
            column = column.cast(pa.large_string()) if column.type != pa.large_string() else column
            _, offsets_buffer, data_buffer = column.buffers()
            offsets = np.frombuffer(offsets_buffer, dtype=np.int64)[column.offset : column.offset + len(column) + 1]
            data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
            start = int(offsets[0])
            out[f.input_name + ".bytes"] = torch.from_numpy(data[start : int(offsets[-1])].copy())
            out[f.input_name + ".offsets"] = torch.from_numpy(offsets - start)
        elif f.input_type in ("FLOAT", "DOUBLE"):
            out[f.input_name] = torch.from_numpy(column.to_numpy(zero_copy_only=False).astype(np.float64))
        else:
            out[f.input_name] = torch.from_numpy(column.to_numpy(zero_copy_only=False).astype(np.int64))
    return out


@dataclass
class Batch:
    columns: dict[str, torch.Tensor]
    labels: torch.Tensor | None  # the first label field's
    weights: torch.Tensor | None
    table: pa.Table
    label_columns: dict[str, torch.Tensor] = field(default_factory=dict)  # every label field's, by name

    def codes(self, name: str) -> torch.Tensor:
        """Column ``name`` as int64 codes, equal where the values are equal within this batch
        (a missing value is one more value): the sessions of EasyRec's JRC_LOSS."""
        column = self.table.column(name).combine_chunks().dictionary_encode(null_encoding="encode")
        return torch.from_numpy(column.indices.to_numpy(zero_copy_only=False).astype(np.int64))


def iter_batches(reader: TableReader, paths: list[str], batch_size: int, *, shuffle: bool, shuffle_rows: int,
                 seed: int, skip_batches: int = 0, shard: tuple[int, int] = (0, 1), even_shards: bool = False) -> Iterator[Batch]:  # fmt: skip
    """Batches of ``batch_size`` rows; with ``shuffle``, rows are drawn from a buffer of at
    least ``shuffle_rows`` rows (plus one read block) with a seeded generator. ``shard`` (rank,
    size): ``batch_size`` is each of ``size`` processes' and a batch holds rows rank, rank +
    size, ... of a global batch of size x batch_size rows, read in the same order by every
    process. ``even_shards``: every process gets as many rows (the last global batch drops its
    remainder of fewer than ``size`` rows, counted in ``reader.report.rows_unsharded``), so the
    processes take the same number of steps."""
    rank, size = shard
    batch_size *= size
    rng = np.random.default_rng(seed)
    fields = reader.fields
    label = reader.label_names[0] if reader.label_names else None
    weight = reader.config.sample_weight if label is not None else None
    pending: list[pa.Table] = []
    n_pending = 0
    n_emitted = 0

    def emit(table: pa.Table):
        nonlocal n_emitted
        n_emitted += 1
        if n_emitted <= skip_batches:
            return None
        if size > 1:
            n_rows = table.num_rows
            if even_shards and n_rows % size:
                reader.report.rows_unsharded += n_rows % size
                n_rows -= n_rows % size
            if n_rows <= rank:
                return None
            table = table.take(pa.array(np.arange(rank, n_rows, size)))
        label_columns = {name: torch.from_numpy(table.column(name).to_numpy().astype(np.float32)) for name in reader.label_names}
        weights = torch.from_numpy(table.column(weight).to_numpy().astype(np.float32)) if weight else None
        return Batch(table_to_columns(table, fields), label_columns.get(label), weights, table, label_columns)

    def drain(tables: list[pa.Table], final: bool):
        """Shuffle the buffer, emit its full batches (all of it when ``final``), return the rest."""
        buffer = pa.concat_tables(tables)
        if shuffle:
            buffer = buffer.take(pa.array(rng.permutation(buffer.num_rows)))
        n_out = buffer.num_rows if final else buffer.num_rows - buffer.num_rows % batch_size
        for start in range(0, n_out, batch_size):
            batch = emit(buffer.slice(start, min(batch_size, n_out - start)))
            if batch is not None:
                yield batch
        rest = buffer.slice(n_out)
        return [rest] if rest.num_rows else []

    threshold = max(batch_size, shuffle_rows if shuffle else batch_size)
    for table in reader.iter_tables(paths):
        pending.append(table)
        n_pending += table.num_rows
        if n_pending >= threshold:
            pending = yield from drain(pending, final=False)
            n_pending = sum(t.num_rows for t in pending)
    if n_pending:
        yield from drain(pending, final=True)

"""Stage 1: CSVInput / ParquetInput -> typed, validated column batches -> tensors.

Files are read in blocks with pyarrow (typed and vectorized, never a Python loop per row),
so data larger than memory streams. Every column is read as text first so that an empty
field can take its ``default_val`` and a value that does not parse can be reported with its
file, line, column and value. With ``ignore_error: true`` such rows are skipped and counted
by reason instead. A label is never imputed.

Line numbers are found only on the error path, by scanning the file (pyarrow's streaming
reader does not report them).
"""

from __future__ import annotations

import glob
import os
import queue
import threading
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

from fusionrec.ctr.config import DataConfig, InputField
from fusionrec.errors import FusionrecError

INT_PATTERN = r"^\s*[+-]?[0-9]+\s*$"
FLOAT_PATTERN = r"(?i)^\s*[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)(e[+-]?[0-9]+)?|inf|infinity|nan)\s*$"
BOOL_TRUE = ["true", "True", "TRUE", "1"]
BOOL_FALSE = ["false", "False", "FALSE", "0"]
INT32_RANGE = (-(2**31), 2**31 - 1)
READ_BLOCK_BYTES = 4 << 20


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
    """Rows read and rows skipped (ignore_error), by reason."""

    n_rows: int = 0
    skipped: Counter = field(default_factory=Counter)
    rejected: list = field(default_factory=list)  # (file, line or row, reason, text) for predict's rejects

    def as_dict(self) -> dict:
        return {"rows_read": self.n_rows, "rows_skipped": sum(self.skipped.values()), "skipped_by_reason": dict(self.skipped)}


class _Rejected(Exception):
    pass


class TableReader:
    """Reads input files into validated pyarrow Tables of typed columns (fields in config order)."""

    def __init__(self, data_config: DataConfig, fields: list[InputField] | None = None, *, labels: bool = True,
                 separator: str | None = None, collect_rejects: bool = False):  # fmt: skip
        self.config = data_config
        self.fields = fields if fields is not None else list(data_config.input_fields)
        self.names = [f.input_name for f in self.fields]
        self.label_names = list(data_config.label_fields) if labels else []
        self.separator = separator or data_config.separator
        self.ignore_error = data_config.ignore_error or collect_rejects
        self.collect_rejects = collect_rejects
        self.report = ReadReport()

    # -- files ---------------------------------------------------------------------
    def iter_tables(self, paths: list[str]) -> Iterator[pa.Table]:
        for path in paths:
            if self.config.input_type == "ParquetInput" or path.endswith(".parquet"):
                yield from self._parquet(path)
            else:
                yield from self._csv(path)

    def _csv(self, path: str) -> Iterator[pa.Table]:
        invalid: list[tuple[int, int, str]] = []

        def on_invalid(row) -> str:
            invalid.append((row.expected_columns, row.actual_columns, row.text))
            return "skip"

        header = self.config.with_header
        read_options = pacsv.ReadOptions(
            column_names=None if header else self.names, block_size=READ_BLOCK_BYTES
        )
        parse_options = pacsv.ParseOptions(delimiter=self.separator, invalid_row_handler=on_invalid, quote_char=False)
        try:
            reader = pacsv.open_csv(path, read_options=read_options, parse_options=parse_options,
                                    convert_options=pacsv.ConvertOptions(
                                        column_types={n: pa.string() for n in self.names},  # typed by us, below
                                        strings_can_be_null=False, quoted_strings_can_be_null=False))  # fmt: skip
        except pa.ArrowInvalid as error:
            if "Empty CSV file" in str(error):
                return
            raise FusionrecError(f"{path}: cannot read as CSV ({error})") from None
        except OSError as error:
            raise FusionrecError(f"{path}: cannot read ({error})") from None
        columns = reader.schema.names
        duplicates = sorted({c for c in columns if columns.count(c) > 1})
        if header and duplicates:
            raise FusionrecError(f"{path}: header names {duplicates} appear more than once")
        if header:
            missing = [n for n in self.names if n not in columns]
            if missing:
                raise FusionrecError(f"{path}: header has no column {missing[0]!r} (input_fields {self.names})")
        elif len(columns) != len(self.names):
            raise FusionrecError(f"{path}: {len(columns)} columns but {len(self.names)} input_fields")
        first_row = 0
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except pa.ArrowInvalid as error:
                raise FusionrecError(f"{path}: {error}") from None
            if invalid:
                self._structural(path, invalid, header)
                invalid.clear()
            table = pa.Table.from_batches([batch])
            table = table.select(self.names)
            out = self._convert(table, path, first_row, header)
            first_row += table.num_rows
            if out.num_rows:
                yield out

    def _structural(self, path: str, invalid, header: bool) -> None:
        for expected, actual, text in invalid:
            reason = f"wrong number of fields ({actual}, expected {expected})"
            if not self.ignore_error:
                line = _find_line(path, text)
                raise FusionrecError(
                    f"{path} line {line}: {actual} fields, expected {expected} (input_fields); row: {text[:200]!r}"
                )
            self.report.skipped[reason] += 1
            if self.collect_rejects:
                self.report.rejected.append((path, _find_line(path, text), reason, text))

    def _parquet(self, path: str) -> Iterator[pa.Table]:
        try:
            file = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as error:
            raise FusionrecError(f"{path}: cannot read as Parquet ({error})") from None
        missing = [n for n in self.names if n not in file.schema_arrow.names]
        if missing:
            raise FusionrecError(f"{path}: no column {missing[0]!r} (input_fields {self.names})")
        first_row = 0
        for batch in file.iter_batches(batch_size=65536, columns=self.names):
            table = pa.Table.from_batches([batch])
            columns = []
            for name in self.names:
                column = table.column(name)
                if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
                    column = pc.cast(column, pa.string())
                columns.append(pc.fill_null(column.cast(pa.string()), ""))
            out = self._convert(pa.table(columns, names=self.names), path, first_row, None)
            first_row += table.num_rows
            if out.num_rows:
                yield out

    # -- values --------------------------------------------------------------------
    def _convert(self, table: pa.Table, path: str, first_row: int, header: bool | None) -> pa.Table:
        """Text columns -> typed columns; bad rows raise (or are dropped and counted)."""
        n = table.num_rows
        keep = np.ones(n, dtype=bool)
        typed = {}
        for f in self.fields:
            text = table.column(f.input_name).combine_chunks()
            is_label = f.input_name in self.label_names
            empty = pc.equal(pc.utf8_length(text), 0).to_numpy(zero_copy_only=False)
            if is_label:
                self._bad_rows(empty & keep, keep, text, path, first_row, header, f.input_name,
                               "label is empty (labels are never imputed)")  # fmt: skip
            elif empty.any():
                default = f.default_val if f.default_val is not None else ("" if f.input_type == "STRING" else "0")
                text = pc.if_else(pa.array(empty), pa.scalar(default), text)
            typed[f.input_name] = self._typed(f, text, keep, path, first_row, header, is_label)
        self.report.n_rows += int(keep.sum())
        if not keep.all():
            mask = pa.array(keep)
            typed = {k: pc.filter(v, mask) for k, v in typed.items()}
        return pa.table(typed)

    def _typed(self, f: InputField, text, keep, path, first_row, header, is_label):
        kind = f.input_type
        name = f.input_name
        if kind == "STRING":
            return text
        if kind in ("INT32", "INT64"):
            ok = pc.match_substring_regex(text, INT_PATTERN).to_numpy(zero_copy_only=False)
            self._bad_rows(~ok & keep, keep, text, path, first_row, header, name, f"is not an integer ({kind})")
            long = ok & (pc.utf8_length(pc.utf8_trim_whitespace(text)).to_numpy(zero_copy_only=False) >= 19)
            for row in np.flatnonzero(long):  # rare: only 19+ digit values are checked one by one
                if not -(2**63) <= int(text[int(row)].as_py()) < 2**63:
                    ok[row] = False
            self._bad_rows(~ok & keep, keep, text, path, first_row, header, name, "is outside the INT64 range")
            values = pc.cast(pc.if_else(pa.array(ok), pc.utf8_trim_whitespace(text), pa.scalar("0")), pa.int64())
            if kind == "INT32":
                v = values.to_numpy()
                self._bad_rows(((v < INT32_RANGE[0]) | (v > INT32_RANGE[1])) & keep, keep, text, path, first_row,
                               header, name, "is outside the INT32 range")  # fmt: skip
        elif kind in ("FLOAT", "DOUBLE"):
            ok = pc.match_substring_regex(text, FLOAT_PATTERN).to_numpy(zero_copy_only=False)
            self._bad_rows(~ok & keep, keep, text, path, first_row, header, name, f"is not a number ({kind})")
            values = pc.cast(pc.if_else(pa.array(ok), pc.utf8_trim_whitespace(text), pa.scalar("0")), pa.float64())
            finite = np.isfinite(values.to_numpy(zero_copy_only=False))
            self._bad_rows(~finite & keep, keep, text, path, first_row, header, name,
                           "is not a finite number (inf, nan and overflow are refused)")  # fmt: skip
        else:  # BOOL
            is_true = pc.is_in(text, pa.array(BOOL_TRUE)).to_numpy(zero_copy_only=False)
            is_false = pc.is_in(text, pa.array(BOOL_FALSE)).to_numpy(zero_copy_only=False)
            self._bad_rows(~(is_true | is_false) & keep, keep, text, path, first_row, header, name, "is not a boolean")
            values = pa.array(is_true.astype(np.int64))
        if is_label:
            v = values.to_numpy(zero_copy_only=False).astype(np.float64)
            self._bad_rows(~((v >= 0) & (v <= 1)) & keep, keep, text, path, first_row, header, name,
                           "is not a binary label (0 or 1, or a probability in [0, 1])")  # fmt: skip
        return values

    def _bad_rows(self, bad: np.ndarray, keep: np.ndarray, text, path, first_row, header, column, rule) -> None:
        if not bad.any():
            return
        rows = np.flatnonzero(bad)
        reason = f"column {column}: value {rule}"
        if not self.ignore_error:
            row = int(rows[0])
            value = text[row].as_py()
            where = _row_location(path, first_row + row, header, self.separator, len(self.names))
            raise FusionrecError(f"{path} {where}, column {column!r}: {value!r} {rule}")
        self.report.skipped[reason] += len(rows)
        if self.collect_rejects:
            for row in rows:
                where = _row_location(path, first_row + int(row), header, self.separator, len(self.names))
                self.report.rejected.append((path, where, reason, text[int(row)].as_py()))
        keep[rows] = False


def _find_line(path: str, text: str) -> int | str:
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if line.rstrip("\r\n") == text:
                return number
    return "?"


def _row_location(path: str, row: int, header: bool | None, separator: str, n_fields: int) -> str:
    """'line N' of the row-th well-formed data row of a CSV file, or 'row N' of a Parquet file."""
    if header is None:
        return f"row {row + 1}"
    seen = -1
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if header and number == 1:
                continue
            if line.rstrip("\r\n").count(separator) + 1 == n_fields:
                seen += 1
                if seen == row:
                    return f"line {number}"
    return f"data row {row + 1}"


# ------------------------------------------------------------------------------ batches
def table_to_columns(table: pa.Table, fields: list[InputField]) -> dict[str, torch.Tensor]:
    """Typed Arrow columns -> the tensors FeatureTransform takes (strings as bytes + offsets)."""
    out: dict[str, torch.Tensor] = {}
    for f in fields:
        if f.input_name not in table.column_names:
            continue
        column = table.column(f.input_name).combine_chunks()
        if f.input_type == "STRING":
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
    labels: torch.Tensor | None
    weights: torch.Tensor | None
    table: pa.Table


def iter_batches(reader: TableReader, paths: list[str], batch_size: int, *, shuffle: bool, shuffle_rows: int,
                 seed: int, skip_batches: int = 0) -> Iterator[Batch]:  # fmt: skip
    """Batches of ``batch_size`` rows; with ``shuffle``, rows are drawn from a buffer of at
    least ``shuffle_rows`` rows (plus one read block) with a seeded generator."""
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
        labels = torch.from_numpy(table.column(label).to_numpy().astype(np.float32)) if label else None
        weights = torch.from_numpy(table.column(weight).to_numpy().astype(np.float32)) if weight else None
        return Batch(table_to_columns(table, fields), labels, weights, table)

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


class Prefetcher:
    """Runs a batch iterator on a background thread, ``depth`` batches ahead of the consumer."""

    _DONE = object()

    def __init__(self, iterator: Iterator, depth: int):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(iterator,), daemon=True)
        self._thread.start()

    def _run(self, iterator) -> None:
        try:
            for item in iterator:
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._queue.put(self._DONE)
        except BaseException as error:  # handed to the consumer, raised there
            self._queue.put(error)

    def __iter__(self):
        while True:
            item = self._queue.get()
            if item is self._DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        while not self._queue.empty():
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break

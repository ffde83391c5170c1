"""Request bodies of ``fusionrec serve`` into text tables: JSON and CSV, every malformed body a
``RequestError`` (a 4xx naming what is wrong), never another exception.

What a hostile but well-formed body can hold and how each is answered:

- numbers of more than ``MAX_NUMBER_DIGITS`` digits (Python refuses to convert integers of
  more than 4,300 digits to text at all), ``NaN`` / ``Infinity`` (not JSON, though Python's
  parser accepts them) and 1e400 (a float that parses to inf): 422 naming the value;
- JSON nested deeper than the parser's recursion limit: 400;
- strings with a lone surrogate (``"\\ud800"``: valid JSON escapes, but no UTF-8 text): 422
  naming the row and the column (or the ``id`` / ``request_id``);
- a row's ``id`` and the ``request_id`` are echoed, so they must be JSON scalars: 422 otherwise.
"""

from __future__ import annotations

import json
import math

import pyarrow as pa
import pyarrow.csv as pacsv

ID_KEY = "id"
REQUEST_KEYS = ("rows", "model_scores", "request_id")
MAX_NUMBER_DIGITS = 100  # an int64 has 19 digits; beyond 4,300 Python cannot even print one


class RequestError(Exception):
    """A client error: its HTTP status, its kind (the error counter's label) and what was wrong."""

    def __init__(self, status: int, kind: str, detail: str):
        super().__init__(detail)
        self.status, self.kind, self.detail = status, kind, detail


class ParsedRequest:
    """A request's rows as a text table, each row's id, and its options."""

    def __init__(self, table: pa.Table, ids: list, model_scores: bool = False, request_id=None):
        self.table = table
        self.ids = ids
        self.model_scores = model_scores
        self.request_id = request_id


# ---------------------------------------------------------------- JSON
def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise RequestError(422, "bad_value", f"a number of {len(text.lstrip('-')):,} digits ({text[:20]}...); numbers "
                                             f"have at most {MAX_NUMBER_DIGITS} digits (send a long id as a string)")  # fmt: skip
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise RequestError(422, "bad_value", f"{text[:40]} is beyond the float range (it would read as {value})")
    return value


def _parse_constant(name: str):
    raise RequestError(422, "bad_value", f"{name} is not a JSON number; send null for a missing value")


def _document(body: bytes):
    try:
        return json.loads(body, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
    except RecursionError:
        raise RequestError(400, "bad_json", "the body nests arrays or objects too deeply to parse; a request is "
                                            '{"rows": [{field: value, ...}, ...]}') from None  # fmt: skip
    except (ValueError, UnicodeDecodeError) as error:  # JSONDecodeError is a ValueError
        raise RequestError(400, "bad_json", f"the body is not valid JSON: {str(error)[:200]}") from None


def _echoable(value, where: str):
    """``value`` when it can be written back as JSON text (a scalar of UTF-8 text), else a 422."""
    if value is None or isinstance(value, (bool, int, float)):  # the parse hooks refused huge and non-finite numbers
        return value
    if isinstance(value, str):
        _check_utf8(value, where)
        return value
    raise RequestError(422, "bad_request", f"{where}: a {type(value).__name__}; it is echoed back, so give a string, "
                                           "a number or null")  # fmt: skip


def _check_utf8(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise RequestError(422, "bad_value", f"{where}: {text[max(0, error.start - 10): error.end + 10]!r} holds "
                                             f"{text[error.start]!r}, a lone UTF-16 surrogate, which is not text") from None  # fmt: skip


def _text(value, row: int, column: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return value
    raise RequestError(422, "bad_value", f"row {row}, column {column!r}: a {type(value).__name__} is not a field value "
                                         "(give numbers, strings, booleans or null; a list field as one string joined by "
                                         "its separator)")  # fmt: skip


def _string_column(values: list, column: str) -> pa.Array:
    try:
        return pa.array(values, pa.string())
    except UnicodeEncodeError:  # find the row only when there is one (the common case pays nothing)
        for row, value in enumerate(values, start=1):
            if value is not None:
                _check_utf8(value, f"row {row}, column {column!r}")
        raise


def rows_from_json(body: bytes, required: list[str], optional: list[str], max_rows: int) -> ParsedRequest:
    """The text table, ids and options of a JSON body: ``{"rows": [...], ...}`` or a bare list of rows."""
    document = _document(body)
    options = {}
    if isinstance(document, dict):
        unknown = sorted(set(document) - set(REQUEST_KEYS))
        if unknown:
            shown = [_echoable(k, "a request key") for k in unknown[:5]]
            raise RequestError(422, "bad_request", f"unknown keys {shown}; a request has {list(REQUEST_KEYS)}")
        if "rows" not in document:
            raise RequestError(422, "bad_request", 'no "rows": send {"rows": [{field: value, ...}, ...]}')
        rows = document["rows"]
        if not isinstance(document.get("model_scores", False), bool):
            raise RequestError(422, "bad_request", '"model_scores" must be true or false')
        options = {"model_scores": document.get("model_scores", False),
                   "request_id": _echoable(document.get("request_id"), '"request_id"')}  # fmt: skip
    else:
        rows = document
    if not isinstance(rows, list):
        raise RequestError(422, "bad_request", f'"rows" must be a list of objects, got {type(rows).__name__}')
    if len(rows) > max_rows:
        raise RequestError(413, "too_many_rows", f"{len(rows)} rows; this server takes at most {max_rows} per request (max_rows)")
    ids = []
    for i, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise RequestError(422, "bad_row", f"row {i}: must be an object of field: value, got {type(row).__name__}")
        missing = [name for name in required if name not in row]
        if missing:
            raise RequestError(422, "bad_row", f"row {i}: no field {missing} (every input field is given; null takes its default_val)")
        ids.append(_echoable(row.get(ID_KEY), f"row {i}, {ID_KEY!r}"))
    # column by column: a column of strings (and nulls), the common case, is taken as it is;
    # only a column holding other values converts value by value (a profile of 100-row
    # requests spent a tenth of the request in the per-value conversion)
    columns: dict[str, list] = {}
    for name in required + optional:
        values = [row.get(name) for row in rows]
        if not all(type(value) is str or value is None for value in values):
            values = [_text(value, i, name) for i, value in enumerate(values, start=1)]
        columns[name] = values
    table = pa.table({name: _string_column(values, name) for name, values in columns.items()})
    return ParsedRequest(table, ids, **options)


# ---------------------------------------------------------------- CSV
def rows_from_csv(body: bytes, required: list[str], max_rows: int) -> ParsedRequest:
    """The text table and ids of a CSV body with a header (an ``id`` column is echoed)."""
    if not body.strip():
        raise RequestError(400, "bad_csv", "the CSV body is empty; send a header line and rows")
    header = body.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace").lstrip("\ufeff")
    # every column as text, as the file reader reads it: type inference would turn "007" into 7
    as_text = {name.strip('"'): pa.string() for name in header.split(",")}
    try:
        table = pacsv.read_csv(pa.py_buffer(body),
                               convert_options=pacsv.ConvertOptions(column_types=as_text, strings_can_be_null=False),
                               parse_options=pacsv.ParseOptions(newlines_in_values=False))  # fmt: skip
    except (pa.ArrowException, UnicodeDecodeError) as error:
        raise RequestError(400, "bad_csv", f"the body is not CSV with a header: {str(error).splitlines()[0][:200]}") from None
    names = table.column_names
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RequestError(422, "bad_csv", f"the header names {duplicates[:5]} more than once")
    missing = [n for n in required if n not in names]
    if missing:
        raise RequestError(422, "bad_csv", f"the header has no column {missing}; input fields are {required}")
    if table.num_rows > max_rows:
        raise RequestError(413, "too_many_rows", f"{table.num_rows} rows; this server takes at most {max_rows} per request (max_rows)")
    ids = table.column(ID_KEY).to_pylist() if ID_KEY in names else [None] * table.num_rows
    text = pa.table({n: table.column(n) for n in names if n != ID_KEY})
    return ParsedRequest(text, ids)


def parse_body(body: bytes, content_type: str, required: list[str], optional: list[str], max_rows: int) -> ParsedRequest:
    if content_type in ("application/json", ""):
        return rows_from_json(body, required, optional, max_rows)
    if content_type in ("text/csv", "application/csv"):
        return rows_from_csv(body, required, max_rows)
    raise RequestError(415, "unsupported_media_type", f"Content-Type {content_type[:100]!r}: send application/json or text/csv")

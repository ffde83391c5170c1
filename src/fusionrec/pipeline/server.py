"""``fusionrec serve``: an HTTP scoring server for a pipeline export (FastAPI on uvicorn).

Why these: FastAPI + uvicorn is the most used, best kept asyncio stack for Python model
servers; uvicorn runs ``--workers N`` processes, each loading the export once; the scoring
itself (torch, numba) runs on a thread so the event loop keeps answering /health and
/metrics while a batch is scored. Metrics are Prometheus text from prometheus_client (its
multi-process mode when there are several workers).

Endpoints
    POST /predict   JSON ``{"rows": [{field: value, ...}, ...], "model_scores": false}`` (or a bare list
                    of rows), or a CSV body with a header (Content-Type text/csv). Answers
                    ``{"scores": [...], "ids": [...]}`` in input order: a row's ``id`` key (CSV:
                    column) is echoed, null where absent; ``request_id`` is echoed too.
    GET /health     ``{"status": "ok"}`` once the model is loaded.
    GET /metadata   models, fusion, input schema, versions.
    GET /metrics    requests, rows, latency histogram, errors by kind.

Every bad request is a 4xx whose ``detail`` names the row, the column and the rule (a
value the model's reader refuses), or the limit it broke: 400 not JSON / not CSV, 413 body
or rows over the limit, 415 another content type, 422 a row or value that breaks a rule,
408 scoring took longer than the request time limit. A 500 means a fusionrec bug.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.csv as pacsv
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field

from fusionrec.errors import FusionrecError

SETTINGS_ENV = "FUSIONREC_SERVE_SETTINGS"
ID_KEY = "id"


class ServerSettings(BaseModel):
    saved_model_dir: str
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1)
    max_rows: int = Field(10_000, ge=1)
    timeout_seconds: float = Field(30.0, gt=0)
    scoring_threads: int = Field(1, ge=1, le=64)  # requests scored at once per worker
    compute_threads: int | None = Field(None, ge=1, le=256)  # torch / numba threads per worker (default: cores / workers)


class RequestError(Exception):
    """A client error: its HTTP status, its kind (the error counter's label) and what was wrong."""

    def __init__(self, status: int, kind: str, detail: str):
        super().__init__(detail)
        self.status, self.kind, self.detail = status, kind, detail


# ---------------------------------------------------------------- request bodies -> text tables
def _text(value, row: int, column: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RequestError(422, "bad_value", f"row {row}, column {column!r}: {value!r} is not a finite number")
        return repr(value)
    if isinstance(value, str):
        return value
    raise RequestError(422, "bad_value", f"row {row}, column {column!r}: a {type(value).__name__} is not a field value "
                                         "(give numbers, strings, booleans or null; a list field as one string joined by "
                                         "its separator)")  # fmt: skip


def rows_from_json(body: bytes, required: list[str], optional: list[str], max_rows: int) -> tuple[pa.Table, list, dict]:
    """(text table of the input fields, each row's id, request options) of a JSON body."""
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RequestError(400, "bad_json", f"the body is not valid JSON: {error}") from None
    options = {}
    if isinstance(document, dict):
        unknown = sorted(set(document) - {"rows", "model_scores", "request_id"})
        if unknown:
            raise RequestError(422, "bad_request", f"unknown keys {unknown}; a request has rows, model_scores, request_id")
        if "rows" not in document:
            raise RequestError(422, "bad_request", 'no "rows": send {"rows": [{field: value, ...}, ...]}')
        rows = document["rows"]
        if not isinstance(document.get("model_scores", False), bool):
            raise RequestError(422, "bad_request", '"model_scores" must be true or false')
        options = {"model_scores": document.get("model_scores", False), "request_id": document.get("request_id")}
    else:
        rows = document
    if not isinstance(rows, list):
        raise RequestError(422, "bad_request", f'"rows" must be a list of objects, got {type(rows).__name__}')
    if len(rows) > max_rows:
        raise RequestError(413, "too_many_rows", f"{len(rows)} rows; this server takes at most {max_rows} per request (max_rows)")
    columns: dict[str, list] = {name: [] for name in required + optional}
    ids = []
    for i, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise RequestError(422, "bad_row", f"row {i}: must be an object of field: value, got {type(row).__name__}")
        missing = [name for name in required if name not in row]
        if missing:
            raise RequestError(422, "bad_row", f"row {i}: no field {missing} (every input field is given; null takes its default_val)")
        ids.append(row.get(ID_KEY))
        for name in columns:
            columns[name].append(_text(row.get(name), i, name))
    return pa.table({name: pa.array(values, pa.string()) for name, values in columns.items()}), ids, options


def rows_from_csv(body: bytes, required: list[str], max_rows: int) -> tuple[pa.Table, list, dict]:
    """(text table, ids, options) of a CSV body with a header (an ``id`` column is echoed)."""
    if not body.strip():
        raise RequestError(400, "bad_csv", "the CSV body is empty; send a header line and rows")
    header = body.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace").lstrip("\ufeff")
    # every column as text, as the file reader reads it: type inference would turn "007" into 7
    as_text = {name.strip('"'): pa.string() for name in header.split(",")}
    try:
        table = pacsv.read_csv(pa.py_buffer(body),
                               convert_options=pacsv.ConvertOptions(column_types=as_text, strings_can_be_null=False),
                               parse_options=pacsv.ParseOptions(newlines_in_values=False))  # fmt: skip
    except (pa.ArrowInvalid, UnicodeDecodeError) as error:
        raise RequestError(400, "bad_csv", f"the body is not CSV with a header: {str(error).splitlines()[0]}") from None
    names = table.column_names
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RequestError(422, "bad_csv", f"the header names {duplicates} more than once")
    missing = [n for n in required if n not in names]
    if missing:
        raise RequestError(422, "bad_csv", f"the header has no column {missing}; input fields are {required}")
    if table.num_rows > max_rows:
        raise RequestError(413, "too_many_rows", f"{table.num_rows} rows; this server takes at most {max_rows} per request (max_rows)")
    ids = table.column(ID_KEY).to_pylist() if ID_KEY in names else [None] * table.num_rows
    text = pa.table({n: table.column(n) for n in names if n != ID_KEY})
    return text, ids, {}


# ---------------------------------------------------------------- the app
def create_app(settings: ServerSettings):
    from fusionrec.pipeline.artifact import PipelineScorer
    from fusionrec.pipeline.serve_metrics import ServerMetrics

    if settings.compute_threads is not None:  # workers share the cores: more threads than cores only contend
        import numba
        import torch

        torch.set_num_threads(settings.compute_threads)
        numba.set_num_threads(min(settings.compute_threads, numba.config.NUMBA_NUM_THREADS))
    scorer = PipelineScorer(settings.saved_model_dir)  # once per worker process
    required = scorer.required
    optional = list(scorer.optional)
    metadata = scorer.metadata()
    metrics = ServerMetrics()
    pool = ThreadPoolExecutor(settings.scoring_threads, thread_name_prefix="score")
    app = FastAPI(title="fusionrec pipeline server", docs_url=None, redoc_url=None, openapi_url=None)

    def parse_and_score(body: bytes, content_type: str) -> dict:
        """Runs on the scoring thread: parsing a large body would hold the event loop (and /health) too."""
        if content_type in ("application/json", ""):
            text, ids, options = rows_from_json(body, required, optional, settings.max_rows)
        elif content_type in ("text/csv", "application/csv"):
            text, ids, options = rows_from_csv(body, required, settings.max_rows)
        else:
            raise RequestError(415, "unsupported_media_type", f"Content-Type {content_type!r}: send application/json or text/csv")
        reader = scorer.request_reader()  # a fresh reader per request: its report is this request's
        scores, fused = scorer.score(reader.read_text_table(text, "request"))
        answer = {"scores": fused.tolist()}
        if options.get("model_scores"):
            answer["model_scores"] = {name: scores[:, j].tolist() for j, name in enumerate(scorer.names)}
        answer["ids"] = ids
        if options.get("request_id") is not None:
            answer["request_id"] = options["request_id"]
        return answer

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise RequestError(400, "bad_request", f"Content-Length {declared!r} is not a number")
            if int(declared) > settings.max_body_bytes:
                raise RequestError(413, "body_too_large", f"the body has {int(declared)} bytes; the limit is {settings.max_body_bytes} (max_body_bytes)")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > settings.max_body_bytes:
                raise RequestError(413, "body_too_large", f"the body exceeds {settings.max_body_bytes} bytes (max_body_bytes)")
            chunks.append(chunk)
        return b"".join(chunks)

    @app.post("/predict")
    async def predict(request: Request):
        start = time.perf_counter()
        try:
            body = await read_body(request)
            content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
            future = asyncio.get_running_loop().run_in_executor(pool, parse_and_score, body, content_type)
            try:
                answer = await asyncio.wait_for(asyncio.shield(future), settings.timeout_seconds)
            except asyncio.TimeoutError:
                raise RequestError(408, "timeout", f"the request took longer than {settings.timeout_seconds} s "
                                                   "(timeout_seconds); send fewer rows per request") from None  # fmt: skip
            metrics.observe(time.perf_counter() - start, len(answer["scores"]))
            return JSONResponse(answer)
        except RequestError as error:
            metrics.error(error.kind)
            return JSONResponse({"error": error.kind, "detail": error.detail}, status_code=error.status)
        except FusionrecError as error:  # the reader's rule for a value: names the row and the column
            metrics.error("bad_value")
            return JSONResponse({"error": "bad_value", "detail": str(error)}, status_code=422)
        except Exception as error:  # a fusionrec bug: say so, keep serving
            metrics.error("internal")
            return JSONResponse({"error": "internal", "detail": f"{type(error).__name__}: {error}"}, status_code=500)

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": scorer.names}

    @app.get("/metadata")
    async def get_metadata():
        return metadata

    @app.get("/metrics")
    async def get_metrics():
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    @app.exception_handler(404)
    async def not_found(request, exc):
        metrics.error("not_found")
        return PlainTextResponse(f"no endpoint {request.url.path}; POST /predict, GET /health /metadata /metrics", 404)

    return app


def app_from_env():
    """uvicorn's factory in each worker process: the settings come from the environment."""
    raw = os.environ.get(SETTINGS_ENV)
    if not raw:
        raise FusionrecError(f"{SETTINGS_ENV} is not set; start the server with `fusionrec serve`")
    return create_app(ServerSettings.model_validate_json(raw))


def serve(settings: ServerSettings, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    import uvicorn

    from fusionrec.pipeline.artifact import PipelineScorer

    if workers < 1:
        raise FusionrecError(f"--workers {workers}: must be at least 1")
    if not 0 < port < 65536:
        raise FusionrecError(f"--port {port}: must be in 1..65535")
    PipelineScorer(settings.saved_model_dir)  # a broken export fails here, with its error, before any worker starts
    if settings.compute_threads is None:
        settings = settings.model_copy(update={"compute_threads": max(1, (os.cpu_count() or 1) // workers)})
    os.environ[SETTINGS_ENV] = settings.model_dump_json()
    if workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="fusionrec-metrics-")
    uvicorn.run("fusionrec.pipeline.server:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level="warning", limit_concurrency=256, timeout_keep_alive=5)  # fmt: skip

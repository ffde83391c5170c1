"""``fusionrec serve``: the HTTP scoring app of a pipeline export, a ``fusionrec ctr export``
directory or a ``fusionrec gbdt`` model file (``scorers``), on FastAPI and uvicorn.

Why these: FastAPI + uvicorn is the most used, best kept asyncio stack for Python model
servers; each worker process (``serve_process``) loads the export once; the scoring itself
(torch, numba) runs on a thread so the event loop keeps answering /health and /metrics while
a batch is scored. Metrics are Prometheus text from prometheus_client (its multi-process mode
when there are several workers).

Endpoints
    POST /predict   JSON ``{"rows": [{field: value, ...}, ...], "model_scores": false}`` (or a bare list
                    of rows), or a CSV body with a header (Content-Type text/csv). Answers
                    ``{"scores": [...], "ids": [...]}`` in input order: a row's ``id`` key (CSV:
                    column) is echoed, null where absent; ``request_id`` is echoed too.
    GET /health     ``{"status": "ok", "export_digest": ..., "worker": pid}`` once the model is loaded.
    GET /metadata   models, fusion, input schema, versions, the export's digest.
    GET /metrics    requests, rows, latency histogram, errors by kind.

Every bad request is a 4xx whose ``detail`` names the row, the column and the rule (a value
the model's reader refuses), or the limit it broke (``serve_requests`` lists the hostile
cases): 400 not JSON / not CSV, 413 body or rows over the limit, 415 another content type,
422 a row or value that breaks a rule, 408 the body was not sent within
``body_timeout_seconds`` or the answer not ready within ``timeout_seconds``; 503 with
``Retry-After`` when ``max_pending`` requests are already admitted. A 500 means a fusionrec
bug (its traceback goes to the server's log, not to the client).

Time limits stop work, not only the wait for it: a request's scoring runs as a
``ScoringJob`` that checks its deadline before parsing, after parsing and between chunks of
``SCORE_CHUNK_ROWS`` rows, so a request answered 408 stops within one chunk and a queued one
never starts. Rejected bodies are not kept: no exception that could reach a body crosses the
scoring thread or outlives its handler (a traceback's frames would hold the body until the
garbage collector's next full pass).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import queue
import threading
import time

import numpy as np
import pyarrow as pa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect

from fusionrec.errors import FusionrecError
from fusionrec.pipeline.serve_requests import ParsedRequest, RequestError, parse_body

SCORE_CHUNK_ROWS = 1024  # rows scored between two deadline checks (predict's default batch too)
MAX_BATCH_JOBS = 32  # requests a scoring thread answers with one pass of the model
CLOSE = {"Connection": "close"}  # the connection ends after the answer
logger = logging.getLogger("fusionrec.serve")


class ServerSettings(BaseModel):
    saved_model_dir: str
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1)
    max_rows: int = Field(10_000, ge=1)
    timeout_seconds: float = Field(30.0, gt=0)  # from the request's arrival to its answer
    body_timeout_seconds: float = Field(10.0, gt=0)  # to receive the whole body
    header_timeout_seconds: float = Field(10.0, gt=0)  # from a connection (or its last answer) to a request's headers
    max_pending: int = Field(8, ge=1)  # requests admitted (scoring or waiting) per worker; more get 503
    max_connections: int = Field(256, ge=1)  # open connections per worker; more are closed at once
    scoring_threads: int = Field(1, ge=1, le=64)  # requests scored at once per worker
    compute_threads: int | None = Field(None, ge=1, le=256)  # torch / numba threads per worker (default: cores / workers)
    allow_missing_checksums: bool = False  # load an export whose files lack their sidecars
    export_digest: str | None = None  # the export pinned at start: a worker that finds another refuses to serve


class ScoringJob:
    """One request's work on a scoring thread. The event loop cancels it when its time is up;
    the job stops at its next check (``check``) and, queued, never starts."""

    def __init__(self, body: bytes, content_type: str, deadline: float, timeout_seconds: float):
        self.body: bytes | None = body
        self.content_type = content_type
        self.deadline = deadline  # time.monotonic()
        self.timeout_seconds = timeout_seconds
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def take_body(self) -> bytes:
        body, self.body = self.body, None
        return body

    def check(self) -> None:
        if self.cancelled or time.monotonic() > self.deadline:
            raise RequestError(408, "timeout", _timeout_detail(self.timeout_seconds))


def _timeout_detail(timeout_seconds: float) -> str:
    return f"the request took longer than {timeout_seconds} s (timeout_seconds); send fewer rows per request"


def _error(kind: str, detail: str) -> dict:
    return {"error": kind, "detail": detail}


class JobRunner:
    """Runs ``ScoringJob``s on a scoring thread against one loaded export: each job's (status,
    answer). It never raises, so no exception (whose frames reach the body) is kept by the
    futures between the thread and the event loop.

    ``run_batch`` answers the jobs that waited together with one pass of the model where it can
    (dynamic batching): their text tables are typed and scored as one table of up to
    ``SCORE_CHUNK_ROWS`` rows, then the scores are split back. A model's per-call cost (the
    TorchScript interpreter's per-operation overhead, the reader's per-column kernels) is a large
    part of a 100-row request: in-process, one costs 9.8 ms, four together 6.0 ms each. A group whose
    combined typing fails (a bad value) or drops rows (``ignore_error``) is typed job by job, so
    each error still names its own request's row."""

    def __init__(self, scorer, max_rows: int):
        self.scorer = scorer
        self.required = scorer.required
        self.optional = list(scorer.optional)
        self.max_rows = max_rows

    def run_batch(self, jobs: list[ScoringJob]) -> list[tuple[int, dict]]:
        results: list[tuple[int, dict] | None] = [None] * len(jobs)
        parsed = {}
        for i, job in enumerate(jobs):
            outcome = self._guarded(lambda job=job: self._parse(job))
            if isinstance(outcome, ParsedRequest):
                parsed[i] = outcome
            else:
                results[i] = outcome
        for group in self._groups(parsed):
            typed = self._guarded(lambda group=group: self._typed_together([parsed[i] for i in group]))
            if isinstance(typed, list):  # one typed table per job of the group
                members = [(jobs[i], parsed[i]) for i in group]
                outcome = self._guarded(lambda members=members, typed=typed: self._score_together(members, typed))
                for k, i in enumerate(group):
                    results[i] = outcome[k] if isinstance(outcome, list) else outcome
            else:  # typed job by job: each error names its own request's row
                for i in group:
                    results[i] = self._guarded(lambda i=i: (200, self._score_one(jobs[i], parsed[i])))
        return results

    def _guarded(self, work):
        """``work()``, or the (status, error answer) it raised."""
        try:
            return work()
        except RequestError as error:
            return error.status, _error(error.kind, error.detail)
        except FusionrecError as error:  # the reader's rule for a value: names the row and the column
            return 422, _error("bad_value", str(error))
        except Exception as error:  # a fusionrec bug: logged with its traceback; the client gets no paths
            logger.exception("POST /predict failed")
            return 500, _error("internal", f"a fusionrec bug ({type(error).__name__}); the server log has its traceback")

    def _parse(self, job: ScoringJob) -> ParsedRequest:
        job.check()
        parsed = parse_body(job.take_body(), job.content_type, self.required, self.optional, self.max_rows)
        job.check()
        return parsed

    @staticmethod
    def _groups(parsed: dict[int, ParsedRequest]) -> list[list[int]]:
        """Jobs scored together: the same columns, at most SCORE_CHUNK_ROWS rows in all (a
        larger request is a group of its own)."""
        groups: list[list[int]] = []
        open_groups: dict[tuple, tuple[list[int], int]] = {}
        for i, request in parsed.items():
            key = tuple(request.table.column_names)
            n_rows = request.table.num_rows
            members, total = open_groups.get(key, ([], 0))
            if members and total + n_rows > SCORE_CHUNK_ROWS:
                members, total = [], 0
            if not members:
                groups.append(members)
            members.append(i)
            open_groups[key] = (members, total + n_rows)
        return groups

    def _typed_together(self, requests: list[ParsedRequest]) -> list[pa.Table] | None:
        """Each request's typed table, typed as one table; None when that fails or drops rows."""
        if len(requests) == 1:
            return None
        tables = [r.table for r in requests]
        try:
            typed = self.scorer.request_reader().read_text_table(pa.concat_tables(tables), "request")
        except FusionrecError:
            return None
        if typed.num_rows != sum(t.num_rows for t in tables):
            return None
        out, start = [], 0
        for table in tables:
            out.append(typed.slice(start, table.num_rows))
            start += table.num_rows
        return out

    def _score_together(self, members: list[tuple[ScoringJob, ParsedRequest]], typed: list[pa.Table]) -> list[tuple[int, dict]]:
        """Each job's (status, answer) from one pass of the model; a job whose time ran out gets its 408."""
        results: list[tuple[int, dict] | None] = []
        for job, _ in members:
            try:
                job.check()
                results.append(None)
            except RequestError as error:
                results.append((error.status, _error(error.kind, error.detail)))
        live = [k for k, result in enumerate(results) if result is None]
        if live:
            scores, fused = self.scorer.score(pa.concat_tables([typed[k] for k in live]))
            start = 0
            for k in live:
                stop = start + typed[k].num_rows
                results[k] = (200, self._answer(members[k][1], (scores[start:stop], fused[start:stop])))
                start = stop
        return results

    def _score_one(self, job: ScoringJob, parsed: ParsedRequest) -> dict:
        scorer = self.scorer
        typed = scorer.request_reader().read_text_table(parsed.table, "request")  # a fresh reader: its report is this request's
        scores, fused = np.zeros((0, len(scorer.names))), np.zeros(0)
        if typed.num_rows:
            parts = []
            for start in range(0, typed.num_rows, SCORE_CHUNK_ROWS):
                job.check()
                parts.append(scorer.score(typed.slice(start, SCORE_CHUNK_ROWS)))
            scores, fused = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        return self._answer(parsed, (scores, fused))

    def _answer(self, parsed: ParsedRequest, scored: tuple[np.ndarray, np.ndarray]) -> dict:
        scores, fused = scored
        answer = {"scores": fused.tolist()}
        if parsed.model_scores:
            answer["model_scores"] = {name: scores[:, j].tolist() for j, name in enumerate(self.scorer.names)}
        answer["ids"] = parsed.ids
        if parsed.request_id is not None:
            answer["request_id"] = parsed.request_id
        return answer


class BatchingPool:
    """``n_threads`` scoring threads over one queue: a thread takes the job at the head and every
    job waiting behind it (at most ``MAX_BATCH_JOBS``) and answers them with ``run_batch``. No
    job waits for company: a thread that finds one job scores it at once."""

    def __init__(self, runner: JobRunner, n_threads: int):
        self.runner = runner
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.threads = [threading.Thread(target=self._serve, name=f"score-{k}", daemon=True) for k in range(n_threads)]
        for thread in self.threads:
            thread.start()

    def submit(self, job: ScoringJob) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self.jobs.put((job, future))
        return future

    def _serve(self) -> None:
        while True:
            batch = [self.jobs.get()]
            while len(batch) < MAX_BATCH_JOBS:
                try:
                    batch.append(self.jobs.get_nowait())
                except queue.Empty:
                    break
            live = [(job, future) for job, future in batch if future.set_running_or_notify_cancel()]
            results = self.runner.run_batch([job for job, _ in live])
            for (_, future), result in zip(live, results):
                future.set_result(result)
            del batch, live, results  # no finished job (nor its body) is kept until the next batch


# ---------------------------------------------------------------- the app
def create_app(settings: ServerSettings):
    from fusionrec.pipeline.scorers import open_scorer
    from fusionrec.pipeline.serve_metrics import ServerMetrics

    if settings.compute_threads is not None:  # workers share the cores: more threads than cores only contend
        import numba
        import torch

        torch.set_num_threads(settings.compute_threads)
        numba.set_num_threads(min(settings.compute_threads, numba.config.NUMBA_NUM_THREADS))
    scorer = open_scorer(settings.saved_model_dir, require_checksums=not settings.allow_missing_checksums,
                         expected_digest=settings.export_digest)  # once per worker process  # fmt: skip
    run_job = JobRunner(scorer, settings.max_rows)
    metadata = scorer.metadata()
    metrics = ServerMetrics()
    pool = BatchingPool(run_job, settings.scoring_threads)
    admitted: set[ScoringJob] = set()  # jobs admitted, not finished and not abandoned (an abandoned one costs
    # nothing more once its thread reaches a check, so it does not keep the next request out)
    app = FastAPI(title="fusionrec pipeline server", docs_url=None, redoc_url=None, openapi_url=None)

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise RequestError(400, "bad_request", f"Content-Length {declared[:40]!r} is not a number")
            if len(declared) > 18 or int(declared) > settings.max_body_bytes:
                raise RequestError(413, "body_too_large", f"the body has {declared} bytes; the limit is "
                                                          f"{settings.max_body_bytes} (max_body_bytes)")  # fmt: skip
        chunks, size = [], 0
        stream = request.stream()
        try:
            async for chunk in stream:
                size += len(chunk)
                if size > settings.max_body_bytes:
                    raise RequestError(413, "body_too_large", f"the body exceeds {settings.max_body_bytes} bytes (max_body_bytes)")
                chunks.append(chunk)
        finally:  # a generator left half-read is closed only when the loop's finalizer gets to it: its request and
            await stream.aclose()  # the chunks it read would wait with it
        return b"".join(chunks)

    async def answer(request: Request, arrived: float) -> tuple[int, dict, dict]:
        """(status, JSON answer, extra headers) of one POST /predict."""
        try:
            async with asyncio.timeout(settings.body_timeout_seconds):
                body = await read_body(request)
        except TimeoutError:
            return 408, _error("body_timeout", f"the body did not arrive within {settings.body_timeout_seconds} s "
                                               "(body_timeout_seconds)"), CLOSE  # fmt: skip
        except RequestError as error:
            # a 413's unread rest is drained by uvicorn and discarded (a client still sending its body then reads
            # the answer instead of a reset), for at most header_timeout_seconds (the protocol's next-request limit)
            return error.status, _error(error.kind, error.detail), CLOSE if error.status == 400 else {}
        except ClientDisconnect:  # nobody reads the answer; counted
            return 400, _error("client_disconnected", "the client closed the connection before the body ended"), CLOSE
        if len(admitted) >= settings.max_pending:
            return 503, _error("overloaded", f"{len(admitted)} requests are being scored or wait (max_pending); retry "
                                             "after a second"), {"Retry-After": "1"}  # fmt: skip
        content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        job = ScoringJob(body, content_type, arrived + settings.timeout_seconds, settings.timeout_seconds)
        del body
        admitted.add(job)
        future = asyncio.wrap_future(pool.submit(job))
        future.add_done_callback(lambda _: admitted.discard(job))
        try:
            async with asyncio.timeout(max(0.0, job.deadline - time.monotonic())):
                status, payload = await asyncio.shield(future)
        except TimeoutError:
            job.cancel()  # the thread stops at its next check; a queued job never starts
            admitted.discard(job)
            return 408, _error("timeout", _timeout_detail(settings.timeout_seconds)), {}
        return status, payload, {}

    @app.post("/predict")
    async def predict(request: Request):
        arrived = time.monotonic()
        status, payload, headers = await answer(request, arrived)
        if status == 200:
            metrics.observe(time.monotonic() - arrived, len(payload["scores"]))
        else:
            metrics.error(payload["error"])
        return JSONResponse(payload, status_code=status, headers=headers)

    health = {"status": "ok", "models": scorer.names, "export_digest": scorer.digest, "worker": os.getpid()}

    @app.get("/health")
    async def get_health():
        return health

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
        return PlainTextResponse(f"no endpoint {request.url.path[:200]}; POST /predict, GET /health /metadata /metrics", 404)

    return app

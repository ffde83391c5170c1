"""fusionrec serve under hostile input and faults: every malformed request is a 4xx, rejected
bodies are not kept, timed-out work stops, slow clients are cut off, one model across workers,
and an export that cannot be checked is refused."""

import asyncio
import gc
import http.client
import json
import os
import select
import shutil
import signal
import socket
import threading
import time
import tracemalloc

import httpx2 as httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusionrec._atomic import atomic_write_bytes
from fusionrec.errors import FusionrecError
from fusionrec.pipeline.artifact import PipelineScorer
from fusionrec.pipeline.server import ServerSettings, create_app

from .helpers import ServerProcess, free_port, json_rows, request


@pytest.fixture(scope="module")
def row(trained_pipeline):
    return json_rows(trained_pipeline["test"], 1)[0]


@pytest.fixture(scope="module")
def client(trained_pipeline):
    app = create_app(ServerSettings(saved_model_dir=str(trained_pipeline["export"]), max_body_bytes=2_000_000, max_rows=50))
    return TestClient(app, raise_server_exceptions=False)


def hostile_documents(row: dict) -> list[tuple[str, bytes, int, str]]:
    """(name, body, status, a part of the detail): what the server parses but could not answer before."""
    plain = json.dumps({"rows": [row], "request_id": 1})
    huge = "9" * 5000
    return [
        ("5,000-digit value", plain.replace(f'"price": {row["price"]}', f'"price": {huge}').encode(), 422, "5,000 digits"),
        ("5,000-digit request_id", plain.replace('"request_id": 1', f'"request_id": -{huge}').encode(), 422, "5,000 digits"),
        ("lone surrogate value", json.dumps({"rows": [{**row, "user_id": "a\ud800"}]}).encode(), 422, "row 1, column 'user_id'"),
        ("lone surrogate request_id", json.dumps({"rows": [row], "request_id": "\udfff"}).encode(), 422, '"request_id"'),
        ("lone surrogate id", json.dumps({"rows": [row, {**row, "id": "\ud800"}]}).encode(), 422, "row 2, 'id'"),
        ("lone surrogate key", json.dumps({"rows": [row], "\ud800": 1}).encode(), 422, "a request key"),
        ("NaN id", json.dumps({"rows": [{**row, "id": float("nan")}]}).encode(), 422, "NaN is not a JSON number"),
        ("Infinity request_id", json.dumps({"rows": [row], "request_id": float("inf")}).encode(), 422, "Infinity"),
        ("-Infinity value", json.dumps({"rows": [{**row, "price": float("-inf")}]}).encode(), 422, "-Infinity"),
        ("1e400", plain.replace('"request_id": 1', '"request_id": 1e400').encode(), 422, "beyond the float range"),
        ("5,000 digits as a string in an integer column", json.dumps({"rows": [{**row, "price": huge}]}).encode(), 422,
         "column 'price'"),
        ("nested 990 deep", ('{"rows": [], "request_id": ' + "[" * 990 + "]" * 990 + "}").encode(), 400, "too deeply"),
        ("nested 100,000 deep", ("[" * 100_000 + "]" * 100_000).encode(), 400, "too deeply"),
        ("object as id", json.dumps({"rows": [{**row, "id": {"a": 1}}]}).encode(), 422, "row 1, 'id': a dict"),
        ("list as request_id", json.dumps({"rows": [row], "request_id": [1]}).encode(), 422, '"request_id": a list'),
    ]


def test_hostile_documents_get_a_4xx_naming_what_is_wrong(client, row):
    for name, body, status, detail in hostile_documents(row):
        response = client.post("/predict", content=body, headers={"content-type": "application/json"})
        assert response.status_code == status, (name, response.text)
        assert detail in response.json()["detail"], (name, response.text)
    names = [n for n in row if n != "id"]  # a CSV body: every value is text, so the reader meets the 5,000 digits
    csv_body = ",".join(names) + "\n" + ",".join("9" * 5000 if n == "price" else str(row[n]) for n in names)
    response = client.post("/predict", content=csv_body.encode(), headers={"content-type": "text/csv"})
    assert response.status_code == 422 and "outside the INT64 range" in response.json()["detail"]
    big = client.post("/predict", content=b"{}", headers={"content-type": "application/json", "content-length": "9" * 5000})
    assert big.status_code in (400, 413)  # the HTTP layer or the app: never a 500
    assert client.post("/predict", json={"rows": [{**row, "id": 2**70}], "request_id": 2**70}).json()["request_id"] == 2**70


JSON_SCALARS = st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.floats() | st.text(max_size=20) | st.sampled_from(
    ["\ud800", "x\udfffy", "", "1|2||", "-0", "1e400", "9" * 5000, "-" + "1" * 30]
)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                           max_leaves=8)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["price", "user_id", "id", "request_id", "model_scores", "rows", "extra"]), value=JSON_VALUES,
       bare=st.booleans())  # fmt: skip
def test_random_documents_get_no_5xx(client, row, key, value, bare):
    """Any JSON value (NaN, surrogates, huge numbers and nesting included) in any place of a request."""
    if key in ("request_id", "model_scores", "rows", "extra"):
        document = {"rows": [row], key: value}
    else:
        document = [{**row, key: value}] if bare else {"rows": [{**row, key: value}]}
    body = json.dumps(document, allow_nan=True, ensure_ascii=True).encode()
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.json()["detail"]


async def asgi_post(app, body: bytes, content_type: bytes, *, chunked: bool = False) -> int:
    """POST /predict straight through the ASGI interface (no test client, whose transport keeps
    reference cycles of its own): the answer's status."""
    headers = [(b"content-type", content_type)] + ([] if chunked else [(b"content-length", str(len(body)).encode())])
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "path": "/predict",
             "raw_path": b"/predict", "query_string": b"", "root_path": "", "scheme": "http", "server": ("test", 80),
             "client": ("test", 1), "headers": headers}  # fmt: skip
    pieces = [body[i : i + 65536] for i in range(0, len(body), 65536)] or [b""]
    messages = [{"type": "http.request", "body": piece, "more_body": i < len(pieces) - 1} for i, piece in enumerate(pieces)]
    statuses = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, receive, send)
    return statuses[0]


def test_rejected_bodies_are_not_kept_even_without_the_garbage_collector(trained_pipeline, row):
    """No reference cycle or half-read stream holds a rejected body: with the collector off, 250
    rejected requests of 1-2.6 MB (400, 413 streamed, 422 from the parser and from the reader,
    415) leave the traced memory where it was."""
    app = create_app(ServerSettings(saved_model_dir=str(trained_pipeline["export"]), max_body_bytes=2_000_000, max_rows=50))
    pad = "x" * 1_000_000
    cases = [
        (b"{" + pad.encode(), b"application/json", False, 400),
        (json.dumps({"rows": [{**row, "price": "cheap", "user_id": pad}]}).encode(), b"application/json", False, 422),
        (json.dumps({"rows": [{**row, "id": [pad]}]}).encode(), b"application/json", False, 422),
        (pad.encode(), b"text/plain", False, 415),
        (b"[" * 2_600_000, b"application/json", True, 413),  # read up to the 2 MB limit
    ]

    async def reject_all(times: int) -> None:
        for _ in range(times):
            for body, content_type, chunked, status in cases:
                assert await asgi_post(app, body, content_type, chunked=chunked) == status

    async def measure() -> int:
        await reject_all(1)  # first-use allocations are not a leak
        gc.collect()
        gc.disable()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            await reject_all(50)
            return tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
            gc.enable()

    grown = asyncio.run(measure())
    assert grown < 2_000_000, f"{grown:,} bytes kept after 250 rejected requests of 1-2.6 MB"


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


@pytest.fixture(scope="module")
def guarded_server(trained_pipeline):
    """One worker with small limits: 250 kB bodies, 1 s for headers and for a body, 20 connections."""
    flags = ("--max_body_bytes", "250000", "--header_timeout_seconds", "1", "--body_timeout_seconds", "1", "--max_connections", "20")
    with ServerProcess(trained_pipeline["export"], "--workers", "1", *flags) as server:
        yield server


def test_memory_stays_flat_over_1000_rejected_requests(guarded_server, row):
    """A real server process: 1,000 rejected requests of 0.2-0.3 MB (413 declared and streamed,
    422, 400) move its resident memory by a few MB, not by the bodies' 250 MB."""
    server = guarded_server
    pid = json.loads(request(server.url + "/health")[1])["worker"]
    pad = "x" * 200_000
    kinds = [
        (b"x" * 300_000, "application/json"),  # 413 from Content-Length: drained, not kept
        (json.dumps({"rows": [{**row, "user_id": pad, "price": "cheap"}]}).encode(), "application/json"),  # 422
        (b"[" + pad.encode(), "application/json"),  # 400
        (b"a," + pad.encode() + b"\n1", "text/csv"),  # 400: a row of fewer fields than the header
    ]
    keep_alive = KeepAliveClient(server.port)

    def send(i):
        if i % 5 == 4:  # chunked, over the limit: read up to it, then 413
            return keep_alive.post(iter([b" " * 50_000] * 6), "application/json")
        return keep_alive.post(*kinds[i % 5])

    for i in range(50):  # warm-up
        assert send(i) in (400, 413, 422)
    before = rss_mb(pid)
    for i in range(1000):
        assert send(i) in (400, 413, 422)
    after = rss_mb(pid)
    keep_alive.close()
    assert request(server.url + "/predict", {"rows": [row]})[0] == 200
    assert after - before < 20, f"resident memory {before:.0f} MB -> {after:.0f} MB over 1,000 rejected requests"


class KeepAliveClient:
    """POST /predict over one kept-alive connection with Nagle's algorithm off (a client that
    writes headers and body apart otherwise waits 40 ms per request for the server's delayed ACK)."""

    def __init__(self, port: int):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, body, content_type: str) -> int:
        if self.connection.sock is None:
            self.connection.connect()
            self.connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        chunked = not isinstance(body, bytes)
        headers = {"Content-Type": content_type, **({"Transfer-Encoding": "chunked"} if chunked else {})}
        self.connection.request("POST", "/predict", body=body, headers=headers, encode_chunked=chunked)
        response = self.connection.getresponse()
        response.read()
        if response.will_close:
            self.connection.close()
        return response.status

    def close(self) -> None:
        self.connection.close()


def post_in_threads(url: str, bodies: list[bytes]) -> list[tuple[int, dict, float]]:
    results = []

    def post(body):
        started = time.monotonic()
        with httpx.Client(timeout=60) as http:
            response = http.post(url + "/predict", content=body, headers={"content-type": "application/json"})
        results.append((response.status_code, dict(response.headers), time.monotonic() - started))

    threads = [threading.Thread(target=post, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_after_an_overload_burst_a_one_row_request_answers_within_a_second(trained_pipeline, row):
    """20 concurrent 10,000-row requests (0.3 s of scoring each) against a 1 s limit and 4
    admitted at once: each gets its answer, a 408 or a 503 with Retry-After (never another 5xx);
    the abandoned work stops, so a one-row request sent when the burst is over answers at once
    (before, the abandoned requests went on scoring one after another)."""
    rows = (json_rows(trained_pipeline["test"], 600) * 17)[:10_000]
    with ServerProcess(trained_pipeline["export"], "--workers", "1", "--timeout_seconds", "1", "--max_pending", "4") as server:
        results = post_in_threads(server.url, [json.dumps({"rows": rows}).encode()] * 20)
        burst_over = time.monotonic()
        status, body = request(server.url + "/predict", {"rows": [row]})
        answered = time.monotonic() - burst_over
        statuses = sorted(code for code, _, _ in results)
        assert set(statuses) <= {200, 408, 503} and 503 in statuses and statuses.count(503) <= 16, statuses
        assert all(headers.get("retry-after") == "1" for code, headers, _ in results if code == 503)
        assert status == 200 and len(json.loads(body)["scores"]) == 1
        assert answered < 1.0, f"a one-row request took {answered:.2f} s after the burst"


def test_slow_clients_are_cut_off_and_connections_capped(guarded_server, row):
    server = guarded_server
    # 30 idle connections: those over the cap are closed at once, the rest after the header limit
    sockets = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(30)]
    time.sleep(0.5)
    assert sum(map(_is_closed, sockets)) >= 10  # over the cap
    time.sleep(1.5)
    assert all(map(_is_closed, sockets))  # nothing stays open past the header time limit
    # headers sent, half the body: a 408 after the body time limit, and the connection ends
    half = socket.create_connection(("127.0.0.1", server.port))
    half.settimeout(5)
    half.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"rows\": [")
    started = time.monotonic()
    answer = _read_all(half)
    assert answer.startswith(b"HTTP/1.1 408") and b"body_timeout_seconds" in answer, answer[:300]
    assert time.monotonic() - started < 3.0
    # headers trickled a byte at a time never finish: cut at the header limit
    trickle = socket.create_connection(("127.0.0.1", server.port))
    started = time.monotonic()
    with pytest.raises(OSError):
        for byte in b"POST /predict HTTP/1.1\r\nHost: x\r\n" * 10:
            trickle.sendall(bytes([byte]))
            time.sleep(0.05)
    assert time.monotonic() - started < 3.0
    for s in sockets + [half, trickle]:
        s.close()
    assert request(server.url + "/predict", {"rows": [row]})[0] == 200


def _is_closed(sock: socket.socket) -> bool:
    """The server closed its end (an empty read; a reset counts too); nothing is consumed."""
    if not select.select([sock], [], [], 0)[0]:
        return False  # nothing to read: open and quiet
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    except OSError:
        pass
    return b"".join(chunks)


def _health_by_worker(url: str, n_workers: int, seconds: float = 30.0) -> dict:
    """/health of each worker (the kernel hands connections to the workers at random)."""
    seen = {}
    deadline = time.monotonic() + seconds
    while len(seen) < n_workers and time.monotonic() < deadline:
        try:
            status, body = request(url + "/health")
        except OSError:
            continue
        if status == 200:
            health = json.loads(body)
            seen[health["worker"]] = health
    return seen


def _rewrite_fusion(export) -> None:
    """A re-export's rewrite in place: another fusion, with a valid sidecar."""
    path = export / "fusion.json"
    fusion = json.loads(path.read_text())
    fusion["intercept"] = fusion.get("intercept", 0.0) + 5.0
    atomic_write_bytes(path, json.dumps(fusion).encode())


def test_workers_serve_one_model_and_the_server_exits_when_none_can(trained_pipeline, row, tmp_path):
    export = tmp_path / "export"
    shutil.copytree(trained_pipeline["export"], export)
    with ServerProcess(export, "--workers", "2") as server:
        workers = _health_by_worker(server.url, 2)
        assert len(workers) == 2 and len({h["export_digest"] for h in workers.values()}) == 1
        digest = next(iter(workers.values()))["export_digest"]
        assert json.loads(request(server.url + "/metadata")[1])["export_digest"] == digest
        before = json.loads(request(server.url + "/predict", {"rows": [row]})[1])["scores"]
        _rewrite_fusion(export)
        assert PipelineScorer(export).digest != digest  # the directory now holds another export
        victim, survivor = sorted(workers)
        os.kill(victim, signal.SIGKILL)  # its replacement finds the other export and refuses
        server.wait_for_output("not restarted, 1 left")
        for _ in range(20):  # every answer comes from the survivor, with the pinned model
            health = json.loads(request(server.url + "/health")[1])
            assert (health["worker"], health["export_digest"]) == (survivor, digest)
            assert json.loads(request(server.url + "/predict", {"rows": [row]})[1])["scores"] == before
        os.kill(survivor, signal.SIGKILL)
        code = server.process.wait(timeout=30)
        server.stop()  # the output read to its end
        output = server.output
    assert code == 2, output
    assert "no worker can serve the export pinned at start" in output and "holds another export" in output, output
    with pytest.raises(OSError):  # the port is closed, not left open with nobody to answer
        socket.create_connection(("127.0.0.1", server.port), timeout=2)


def test_an_export_file_without_its_sidecar_is_refused(trained_pipeline, tmp_path, capsys):
    from fusionrec.cli import main
    from fusionrec.ctr.export import load_export

    export = tmp_path / "export"
    shutil.copytree(trained_pipeline["export"], export)
    model = export / "models" / "wide_and_deep" / "export" / "model.pt"
    tampered = bytearray(model.read_bytes())
    (model.parent / "model.pt.sha256").unlink()
    model.write_bytes(bytes(tampered))
    with pytest.raises(FusionrecError, match=r"model\.pt: no model\.pt\.sha256 beside it.*--allow_missing_checksums"):
        PipelineScorer(export)
    with pytest.raises(FusionrecError, match=r"no model\.pt\.sha256"):
        load_export(model.parent)
    assert PipelineScorer(export, require_checksums=False).names == ["trees", "wide_and_deep", "leaf_wide_and_deep"]
    load_export(model.parent, require_checksums=False)
    assert main(["serve", "--saved_model_dir", str(export)]) == 2
    assert "no model.pt.sha256" in capsys.readouterr().err
    (export / "fusion.json.sha256").unlink()  # the top-level files too
    with pytest.raises(FusionrecError, match=r"fusion\.json: no fusion\.json\.sha256"):
        PipelineScorer(export)


def test_a_manifest_cannot_point_outside_the_export(trained_pipeline, tmp_path):
    export = tmp_path / "export"
    shutil.copytree(trained_pipeline["export"], export)
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["models"][0]["files"].append("../../../etc/passwd")
    atomic_write_bytes(export / "manifest.json", json.dumps(manifest).encode())
    with pytest.raises(FusionrecError, match=r"lists file '\.\./\.\./\.\./etc/passwd', which is not a path inside the export"):
        PipelineScorer(export)


def test_serve_flags_are_checked(trained_pipeline, capsys):
    from fusionrec.cli import main

    assert main(["serve", "--saved_model_dir", str(trained_pipeline["export"]), "--max_pending", "0"]) == 2
    assert "--max_pending 0: Input should be greater than or equal to 1" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--saved_model_dir", str(trained_pipeline["export"]), "--port", str(port)]) == 2
    assert f"--port {port}: cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_scores_do_not_depend_on_the_chunking(trained_pipeline, client):
    """Scoring in chunks of 1,024 rows (the deadline checks) gives the rows' scores of one pass."""
    rows = (json_rows(trained_pipeline["test"], 600) * 4)[:2100]
    app = create_app(ServerSettings(saved_model_dir=str(trained_pipeline["export"])))
    chunked = TestClient(app).post("/predict", json={"rows": rows}).json()["scores"]
    whole = [TestClient(app).post("/predict", json={"rows": rows[i : i + 700]}).json()["scores"] for i in range(0, 2100, 700)]
    np.testing.assert_allclose(chunked, np.concatenate(whole), rtol=1e-6)  # float32 deep models: batch shapes move the last bits


def test_the_header_limit_never_cuts_a_request_under_way():
    """Two pipelined requests in one write: the second starts when the first is answered and
    takes longer than the header limit; it is answered, not cut off (the limit is for headers
    that have not come, and the protocol is uvicorn's with the guard, on a stub app)."""
    import uvicorn

    from fusionrec.pipeline.serve_process import _guarded_protocol

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        if scope["path"] == "/slow":
            await asyncio.sleep(1.0)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    port = free_port()
    protocol = _guarded_protocol(ServerSettings(saved_model_dir="unused", header_timeout_seconds=0.4))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=protocol, lifespan="off", log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\nGET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            received = b""
            while received.count(b"HTTP/1.1 200") < 2:
                chunk = conn.recv(4096)
                assert chunk, f"the connection was closed with {received!r}"
                received += chunk
            started = time.monotonic()
            assert _read_all(conn).count(b"ok") + received.count(b"ok") == 2  # the rest, to the server's close:
            assert 0.2 < time.monotonic() - started < 2.0  # kept alive after both answers until the header limit
    finally:
        server.should_exit = True
        thread.join(timeout=10)

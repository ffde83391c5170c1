"""``fusionrec serve``'s processes: one listening socket, N worker processes that each load the
export and run uvicorn on that socket, and a supervisor that keeps them to one model.

Why not uvicorn's own ``--workers``: its supervisor respawns a dead worker, which loads
whatever the export directory holds *now*; with an export rewritten in place, two workers
then served two models. Here the supervisor pins the export at start (``export_digest``:
every file's sha256), a worker loads the export only if it has that digest (and checks it
again after loading), and:

- a worker that dies after it started serving is replaced by one that must load the same export;
- a worker that cannot load it exits with ``WORKER_REFUSED`` and is not replaced;
- when no worker is left the supervisor closes the port and ``serve`` raises
  ``FusionrecError`` with the last worker's reason (the CLI exits with status 2).

Each worker also guards its connections (``GuardedH11Protocol``): a cap on open connections
(``max_connections``, more are closed at once) and a limit on the time a request's headers
may take (``header_timeout_seconds``, from the connection or from the last answer): slow or
half-sent requests cannot hold the worker's sockets. The body's own limit is the app's
(``body_timeout_seconds``).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sys
import tempfile
import threading
import time

from uvicorn.protocols.http.h11_impl import H11Protocol

from fusionrec.errors import FusionrecError
from fusionrec.pipeline.server import ServerSettings

WORKER_REFUSED = 3  # a worker's exit status when it cannot load the pinned export
POLL_SECONDS = 0.2  # how often the supervisor looks at its workers
STOP_SECONDS = 10.0  # a worker's time to finish its requests when the server stops
BACKLOG = 2048


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a connection cap and a header time limit (class attributes
    set per worker by ``_guarded_protocol``)."""

    max_connections = 256
    header_timeout_seconds = 10.0

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._header_timer = None
        if len(self.connections) > self.max_connections:
            transport.close()  # over the cap: closed before anything is read
            return
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._cycle_armed = self.cycle
        self._header_timer = self.loop.call_later(self.header_timeout_seconds, self._headers_too_slow)

    def _disarm(self) -> None:
        if getattr(self, "_header_timer", None) is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _awaiting_headers(self) -> bool:
        """No request is under way: the connection is new, or its last request was answered."""
        return self.cycle is None or self.cycle.response_complete

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.cycle is self._cycle_armed and self._awaiting_headers() and not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._header_timer is not None and self.cycle is not self._cycle_armed:
            self._disarm()  # a request's headers arrived

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may already start a pipelined request (a new cycle)
        if not self.transport.is_closing() and self._awaiting_headers():
            self._arm()  # the next request's headers must come in time too

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)


def _guarded_protocol(settings: ServerSettings) -> type:
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"max_connections": settings.max_connections,
                                                              "header_timeout_seconds": settings.header_timeout_seconds})  # fmt: skip


def _exit_with_parent(parent: int) -> None:
    """A worker whose supervisor was killed stops too (it would hold the port with nobody watching)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)
            return


def _worker_main(settings_json: str, sock: socket.socket, ready, reasons, parent: int) -> None:
    """A worker process: load the pinned export, then serve the shared socket until told to stop."""
    import uvicorn

    from fusionrec.pipeline.server import create_app

    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    settings = ServerSettings.model_validate_json(settings_json)
    try:
        app = create_app(settings)
    except FusionrecError as error:
        message = f"worker {os.getpid()}: {error}"
        print(f"fusionrec serve: {message}", file=sys.stderr, flush=True)
        reasons.put(message)
        sys.exit(WORKER_REFUSED)
    config = uvicorn.Config(app, http=_guarded_protocol(settings), log_level="warning", lifespan="off",
                            timeout_keep_alive=5, limit_concurrency=settings.max_connections + settings.max_pending,
                            timeout_graceful_shutdown=int(STOP_SECONDS))  # fmt: skip
    ready.set()
    uvicorn.Server(config).run(sockets=[sock])


def _listen(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, _ = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)[0]
    except socket.gaierror as error:
        raise FusionrecError(f"--host {host!r}: not an address of this machine ({error.strerror})") from None
    # proto IPPROTO_TCP, not 0: asyncio turns Nagle's algorithm off only on sockets that say TCP (with 0 every
    # answer on a kept-alive connection waited 40 ms for the client's delayed ACK)
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as error:
        sock.close()
        raise FusionrecError(f"--port {port}: cannot listen on {host}:{port} ({error.strerror})") from None
    sock.set_inheritable(True)
    return sock


class _Worker:
    def __init__(self, context, settings_json: str, sock: socket.socket, reasons):
        self.ready = context.Event()
        self.process = context.Process(target=_worker_main, args=(settings_json, sock, self.ready, reasons, os.getpid()),
                                       name="fusionrec-serve-worker", daemon=False)  # fmt: skip
        self.process.start()


class Supervisor:
    """Starts ``n_workers`` on ``sock``, replaces those that die after serving, drops those that
    cannot load the pinned export, and ends (``FusionrecError``) when none is left."""

    def __init__(self, settings: ServerSettings, sock: socket.socket, n_workers: int):
        self.settings_json = settings.model_dump_json()
        self.digest = settings.export_digest
        self.sock = sock
        self.n_workers = n_workers
        self.context = multiprocessing.get_context("spawn")  # torch and numba threads do not survive a fork
        self.reasons = self.context.SimpleQueue()
        self.workers: list[_Worker] = []
        self.stopping = threading.Event()

    @staticmethod
    def _say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def _start(self) -> None:
        self.workers.append(_Worker(self.context, self.settings_json, self.sock, self.reasons))

    def _stop(self, signum, frame) -> None:
        self.stopping.set()

    def run(self, address: str) -> None:
        previous = {s: signal.signal(s, self._stop) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        announced = False
        last_reason = None
        try:
            for _ in range(self.n_workers):
                self._start()
            while not self.stopping.wait(POLL_SECONDS):
                while not self.reasons.empty():
                    last_reason = self.reasons.get()
                if not announced and any(w.ready.is_set() for w in self.workers):
                    announced = True
                    self._say(f"fusionrec serve: {address}, {self.n_workers} worker(s), export sha256 "
                                       f"{self.digest[:16]}")  # fmt: skip
                for worker in list(self.workers):
                    if worker.process.is_alive():
                        continue
                    worker.process.join()
                    self.workers.remove(worker)
                    code = worker.process.exitcode
                    if worker.ready.is_set() and code != WORKER_REFUSED:
                        self._say(f"fusionrec serve: worker {worker.process.pid} ended (exit status {code}); "
                                           "starting another, which must load the same export")  # fmt: skip
                        self._start()
                    else:
                        self._say(f"fusionrec serve: worker {worker.process.pid} could not serve the export "
                                           f"pinned at start (exit status {code}); not restarted, {len(self.workers)} "
                                           "left")  # fmt: skip
                if not self.workers:
                    while not self.reasons.empty():
                        last_reason = self.reasons.get()
                    raise FusionrecError(f"no worker can serve the export pinned at start (sha256 {self.digest[:16]}); "
                                         f"the last said: {last_reason or 'nothing (it was killed while loading)'}")  # fmt: skip
        finally:
            self._stop_workers()
            self.sock.close()
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _stop_workers(self) -> None:
        for worker in self.workers:
            if worker.process.is_alive():
                worker.process.terminate()  # SIGTERM: uvicorn finishes the requests under way
        deadline = time.monotonic() + STOP_SECONDS + 2
        for worker in self.workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def serve(settings: ServerSettings, *, host: str = "127.0.0.1", port: int = 8000, workers: int | None = None) -> None:
    """Serve a pipeline export until SIGTERM / SIGINT; raises ``FusionrecError`` if it cannot
    start, or when no worker can serve the export pinned at start. ``workers`` None: one per
    core this process may run on, each with one compute thread (a request's operations are too
    small to split over threads; processes answer requests side by side)."""
    from fusionrec.pipeline.scorers import pinned_digest

    if workers is None:
        workers = available_cores()
    if workers < 1:
        raise FusionrecError(f"--workers {workers}: must be at least 1")
    if not 0 < port < 65536:
        raise FusionrecError(f"--port {port}: must be in 1..65535")
    # the export is pinned by its digest (every file read and checked against its sidecar: a damaged or
    # missing file fails here); the supervisor loads no model (no torch): the workers do, and a model
    # that cannot be loaded ends the server with the worker's error
    digest = pinned_digest(settings.saved_model_dir, require_checksums=not settings.allow_missing_checksums)
    update = {"export_digest": digest}
    if settings.compute_threads is None:
        update["compute_threads"] = max(1, available_cores() // workers)
    settings = settings.model_copy(update=update)
    if workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="fusionrec-metrics-")
    sock = _listen(host, port)
    shown = f"[{host}]" if ":" in host else host
    Supervisor(settings, sock, workers).run(f"http://{shown}:{port}")

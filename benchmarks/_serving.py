"""Load on an HTTP scoring server, shared by the serving benchmarks: a free port, waiting for
/health, and concurrent clients posting JSON bodies back to back."""

from __future__ import annotations

import http.client
import socket
import subprocess
import threading
import time

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port: int, process: subprocess.Popen | None = None, seconds: float = 180) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"the server exited ({process.returncode}) before answering /health")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"the server on port {port} did not answer /health within {seconds} s")


def load(port: int, bodies: list[bytes], n_clients: int, n_requests: int, n_warm: int) -> tuple[np.ndarray, float, list[int]]:
    """(latencies in s, wall seconds, non-200 statuses) of ``n_clients`` threads, each on its
    own keep-alive connection posting bodies back to back, after ``n_warm`` untimed requests
    (every worker's first ones compile numba and TorchScript paths)."""
    latencies: list[float] = []
    failures: list[int] = []
    lock = threading.Lock()
    per_client = n_requests // n_clients

    def client(k: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for i in range(per_client):
            body = bodies[(k * per_client + i) % len(bodies)]
            start = time.perf_counter()
            connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            with lock:
                latencies.append(time.perf_counter() - start)
                if response.status != 200:
                    failures.append(response.status)

    for body in (bodies * (n_warm // max(len(bodies), 1) + 1))[:n_warm]:
        warm = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        warm.request("POST", "/predict", body, {"Content-Type": "application/json"})
        warm.getresponse().read()
        warm.close()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(n_clients)]
    wall = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return np.asarray(latencies), time.perf_counter() - wall, failures

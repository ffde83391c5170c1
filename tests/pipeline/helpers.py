"""Small pipeline configs on generated taobao click logs, written as YAML for a test."""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import yaml

from fusionrec.datasets import TAOBAO_COLUMNS, make_taobao

STRING_FIELDS = [c for c in TAOBAO_COLUMNS if c not in ("clk", "buy", "price")]
DATA_CONFIG = {
    "input_fields": [{"input_name": "clk", "input_type": "INT32"}, {"input_name": "buy", "input_type": "INT32"}]
    + [{"input_name": c, "input_type": "STRING"} for c in STRING_FIELDS]
    + [{"input_name": "price", "input_type": "INT32"}],
    "label_fields": ["clk"],
    "batch_size": 256,
    "num_epochs": 1,
}
FEATURES = [
    {"input_names": ["user_id"], "feature_type": "IdFeature", "embedding_dim": 8, "hash_bucket_size": 5000},
    {"input_names": ["adgroup_id"], "feature_type": "IdFeature", "embedding_dim": 8, "hash_bucket_size": 5000},
    {"input_names": ["cate_id"], "feature_type": "IdFeature", "embedding_dim": 8, "hash_bucket_size": 500},
    {"input_names": ["brand"], "feature_type": "IdFeature", "embedding_dim": 8, "hash_bucket_size": 5000},
    {"input_names": ["age_level"], "feature_type": "IdFeature", "embedding_dim": 8, "hash_bucket_size": 20},
    {"input_names": ["pid"], "feature_type": "IdFeature", "embedding_dim": 8, "hash_bucket_size": 10},
    {"input_names": ["price"], "feature_type": "IdFeature", "embedding_dim": 8, "num_buckets": 50},
    {"input_names": ["tag_category_list"], "feature_type": "TagFeature", "embedding_dim": 8, "hash_bucket_size": 500,
     "separator": "|"},
]
WIDE_AND_DEEP = {
    "model_config": {
        "model_class": "WideAndDeep",
        "feature_groups": [
            {"group_name": "wide", "wide_deep": "WIDE", "feature_names": ["user_id", "adgroup_id", "age_level", "pid", "price"]},
            {"group_name": "deep", "wide_deep": "DEEP",
             "feature_names": ["user_id", "adgroup_id", "cate_id", "brand", "age_level", "pid", "price", "tag_category_list"]},
        ],
        "wide_and_deep": {"wide_output_dim": 4, "dnn": {"hidden_units": [16, 8]}},
    },
    "train_config": {"num_steps": 6, "save_checkpoints_steps": 100,
                     "optimizer_config": [{"adam_optimizer": {"learning_rate": {"constant_learning_rate": {"learning_rate": 0.01}}}}]},
}
TREES = {"params": {"max_depth": 3, "eta": 0.3}, "num_boost_round": 8}


def make_logs(directory: Path, n_train: int = 3000, n_test: int = 1000, seed: int = 0, *, days: int = 0) -> tuple[Path, Path]:
    """Headerless taobao logs; with ``days`` a last column ``ds`` (train rows spread over that many days)."""
    directory.mkdir(parents=True, exist_ok=True)
    train, test = directory / "train.csv", directory / "test.csv"
    for path, n, s in ((train, n_train, seed), (test, n_test, seed + 1)):
        table = make_taobao(n, s, n_users=800, n_ads=400).table
        if days:
            day = np.arange(n) * days // n if path == train else np.full(n, days)
            table = table.append_column("ds", pa.array([f"2026-11-{10 + d:02d}" for d in day]))
        pacsv.write_csv(table, path, write_options=pacsv.WriteOptions(include_header=False, quoting_style="none"))
    return train, test


NAMES = [f["input_name"] for f in DATA_CONFIG["input_fields"]]


def json_rows(path, n):
    table = pacsv.read_csv(path, read_options=pacsv.ReadOptions(column_names=NAMES),
                           convert_options=pacsv.ConvertOptions(column_types={n: "string" for n in NAMES}, strings_can_be_null=False))  # fmt: skip
    rows = table.slice(0, n).to_pylist()
    for i, row in enumerate(rows):
        row["id"] = f"r{i}"
        row["price"] = int(row["price"])  # a JSON number
        del row["clk"]
    return rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url, body=None, content_type="application/json", method=None):
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": content_type}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class ServerProcess:
    """`fusionrec serve` as a user starts it, on a free port, in its own process group;
    ``with`` waits for /health and stops the group (SIGTERM) at the end."""

    def __init__(self, export, *flags: str, wait: bool = True):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen([sys.executable, "-m", "fusionrec.cli", "serve", "--saved_model_dir", str(export),
                                         "--port", str(self.port), *flags],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        self.lines: list[str] = []  # what the server printed, read as it comes (a full pipe would block it)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if wait:
            self.wait_healthy()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.decode(errors="replace"))

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_output(self, text: str, seconds: float = 30.0) -> None:
        deadline = time.time() + seconds
        while text not in self.output:
            if time.time() > deadline:
                raise AssertionError(f"the server did not print {text!r} within {seconds} s: {self.output[-2000:]}")
            time.sleep(0.05)

    def wait_healthy(self, seconds: float = 90.0) -> None:
        deadline = time.time() + seconds
        while time.time() < deadline:
            try:
                if request(self.url + "/health")[0] == 200:
                    return
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"server did not start: {self.output[-2000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._reader.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def with_field(document: dict, name: str, input_type: str) -> dict:
    document["data"]["data_config"]["input_fields"].append({"input_name": name, "input_type": input_type})
    return document


def pipeline_dict(train: Path, test: Path | None, run_dir: Path, *, models=None, fusion=None, **extra) -> dict:
    data = {"train_input_path": str(train), "data_config": copy.deepcopy(DATA_CONFIG), "feature_configs": copy.deepcopy(FEATURES)}
    if test is not None:
        data["eval_input_path"] = str(test)
    models = models if models is not None else [
        {"name": "trees", "gbdt": copy.deepcopy(TREES)},
        {"name": "shallow_trees", "gbdt": {"params": {"max_depth": 1, "eta": 0.3}, "num_boost_round": 10}},
    ]
    return {"run_dir": str(run_dir), "data": data, "split": {"k_folds": 3}, "models": models,
            "fusion": fusion or {"stacking": {}}, "eval": {"gauc_field": "user_id"}, **extra}


def write_yaml(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path

"""fusionrec.ctr Wide&Deep against DeepCTR-Torch's WDL, same generated data, one invocation.

    python benchmarks/ctr_vs_peers.py [--train-rows 400000] [--test-rows 100000] [--markdown docs/benchmarks.md]

Data: fusionrec.datasets.make_taobao (the document's taobao schema, a known click model),
written as CSV. Both libraries train one epoch of the same architecture: a linear (wide) part
over every id and list feature, and a DNN [128, 64, 32] (ReLU, no batch norm, no dropout) over
16-dimensional embeddings of the same features (the two history lists mean-pooled); Adam with
learning rate 0.001, batch 4096, shuffled, no regularization, 2 threads. Throughput counts the
whole job from the CSV file: reading, parsing, id encoding and training. Each library runs in
its own child process, so its peak memory (VmHWM) is its own. The oracle AUC scores the test
rows with their true click probabilities.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ID_FEATURES = [("pid", 10), ("adgroup_id", 100000), ("cate_id", 10000), ("campaign_id", 100000), ("customer", 100000),
               ("brand", 100000), ("user_id", 100000), ("cms_segid", 100), ("cms_group_id", 100),
               ("final_gender_code", 10), ("age_level", 10), ("pvalue_level", 10), ("shopping_level", 10),
               ("occupation", 10), ("new_user_class_level", 10)]  # fmt: skip
LIST_FEATURES = [("tag_category_list", 10000), ("tag_brand_list", 100000)]
MAX_LEN = 25


def peak_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def fusionrec_config(train: str, test: str, model_dir: str) -> dict:
    from fusionrec.datasets import TAOBAO_COLUMNS

    kinds = {"clk": "INT32", "buy": "INT32", "price": "INT32"}
    features = [{"input_names": [n], "feature_type": "IdFeature", "embedding_dim": 16, "hash_bucket_size": b} for n, b in ID_FEATURES]
    features += [{"input_names": [n], "feature_type": "SequenceFeature", "embedding_dim": 16, "hash_bucket_size": b,
                  "separator": "|", "max_seq_len": MAX_LEN, "combiner": "mean"} for n, b in LIST_FEATURES]  # fmt: skip
    features.append({"input_names": ["price"], "feature_type": "IdFeature", "embedding_dim": 16, "num_buckets": 50})
    names = [f["input_names"][0] for f in features]
    return {
        "train_input_path": train, "eval_input_path": test, "model_dir": model_dir,
        "train_config": {"optimizer_config": [{"adam_optimizer": {"learning_rate": {"constant_learning_rate": {"learning_rate": 0.001}}}}],
                         "num_steps": 0, "save_checkpoints_steps": 10**9, "log_step_count_steps": 10**9,
                         "intra_op_parallelism_threads": 2},
        "eval_config": {"metrics_set": [{"auc": {}}]},
        "data_config": {"input_fields": [{"input_name": c, "input_type": kinds.get(c, "STRING")} for c in TAOBAO_COLUMNS],
                        "label_fields": ["clk"], "batch_size": 4096, "num_epochs": 1, "shuffle": True,
                        "shuffle_buffer_size": 100000},
        "feature_config": {"features": features},
        "model_config": {"model_class": "WideAndDeep",
                         "feature_groups": [{"group_name": "wide", "feature_names": names, "wide_deep": "WIDE"},
                                            {"group_name": "deep", "feature_names": names, "wide_deep": "DEEP"}],
                         "wide_and_deep": {"wide_output_dim": 1, "dnn": {"hidden_units": [128, 64, 32], "use_bn": False},
                                           "l2_regularization": 0.0},
                         "embedding_regularization": 0.0},
    }  # fmt: skip


def run_fusionrec(data_dir: Path) -> dict:
    from fusionrec.ctr.config import config_from_dict
    from fusionrec.ctr.trainer import Trainer

    with tempfile.TemporaryDirectory() as model_dir:
        config = config_from_dict(fusionrec_config(str(data_dir / "train.csv"), str(data_dir / "test.csv"), model_dir))
        trainer = Trainer(config)
        start = time.perf_counter()
        report = trainer.train(progress=False, evaluate_at_checkpoints=False)
        # train() evaluates at the end; take the training time from its own clock
        elapsed = report["examples"] / report["examples_per_sec"]
        return {"library": "fusionrec", "examples_per_sec": report["examples_per_sec"], "train_s": elapsed,
                "wall_s_with_eval": time.perf_counter() - start, "test_auc": report["eval"]["auc"],
                "peak_mem_mb": peak_mb()}  # fmt: skip


def run_deepctr(data_dir: Path) -> dict:
    import pandas as pd
    import torch
    from deepctr_torch.inputs import SparseFeat, VarLenSparseFeat, get_feature_names
    from deepctr_torch.models import WDL
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import LabelEncoder

    from fusionrec.datasets import TAOBAO_COLUMNS

    torch.set_num_threads(2)
    start = time.perf_counter()
    train = pd.read_csv(data_dir / "train.csv", header=None, names=TAOBAO_COLUMNS, dtype=str, keep_default_na=False)
    test = pd.read_csv(data_dir / "test.csv", header=None, names=TAOBAO_COLUMNS, dtype=str, keep_default_na=False)
    both = pd.concat([train, test], ignore_index=True)
    inputs, columns = {}, []
    for name, _ in ID_FEATURES:
        codes = LabelEncoder().fit_transform(both[name])
        inputs[name] = codes
        columns.append(SparseFeat(name, int(codes.max()) + 1, embedding_dim=16))
    price = both["price"].astype(np.int64).to_numpy()  # EasyRec's num_buckets: 50 rule, as fusionrec applies it
    inputs["price"] = np.where((price >= 0) & (price < 50), price, 0)
    columns.append(SparseFeat("price", 50, embedding_dim=16))
    for name, _ in LIST_FEATURES:  # as DeepCTR's movielens example: a key2index dict, then pad_sequences
        key2index: dict[str, int] = {}

        def encode(text: str, key2index: dict[str, int] = key2index) -> list[int]:
            return [key2index.setdefault(t, len(key2index) + 1) for t in text.split("|") if t][-MAX_LEN:]

        lists = [encode(text) for text in both[name]]
        padded = np.zeros((len(lists), MAX_LEN), dtype=np.int64)
        for i, row in enumerate(lists):
            padded[i, : len(row)] = row
        inputs[name] = padded
        columns.append(VarLenSparseFeat(SparseFeat(name, len(key2index) + 1, embedding_dim=16), MAX_LEN, combiner="mean"))
    n_train = len(train)
    labels = both["clk"].astype(np.float32).to_numpy()
    names = get_feature_names(columns)
    x_train = {n: inputs[n][:n_train] for n in names}
    x_test = {n: inputs[n][n_train:] for n in names}
    model = WDL(columns, columns, dnn_hidden_units=(128, 64, 32), l2_reg_linear=0, l2_reg_embedding=0, l2_reg_dnn=0,
                dnn_use_bn=False, task="binary", device="cpu")  # fmt: skip
    model.compile(torch.optim.Adam(model.parameters(), lr=0.001), "binary_crossentropy")
    model.fit(x_train, labels[:n_train], batch_size=4096, epochs=1, verbose=0, shuffle=True)
    elapsed = time.perf_counter() - start
    proba = model.predict(x_test, batch_size=4096).ravel()
    return {"library": "deepctr-torch", "examples_per_sec": n_train / elapsed, "train_s": elapsed,
            "test_auc": float(roc_auc_score(labels[n_train:], proba)), "peak_mem_mb": peak_mb()}  # fmt: skip


def run_child(library: str, data_dir: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, __file__, "--child", library, "--data", str(data_dir)], capture_output=True,
                          text=True, env=env, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{library} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-rows", type=int, default=400_000)
    parser.add_argument("--test-rows", type=int, default=100_000)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        runner = run_fusionrec if args.child == "fusionrec" else run_deepctr
        print(json.dumps(runner(Path(args.data))))
        return
    from rich.console import Console
    from rich.table import Table
    from sklearn.metrics import roc_auc_score

    from fusionrec.datasets import make_taobao

    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        make_taobao(args.train_rows, seed=0, path=data_dir / "train.csv")
        test = make_taobao(args.test_rows, seed=1, path=data_dir / "test.csv")
        oracle = float(roc_auc_score(test.table.column("clk").to_numpy(), test.click_proba))
        results = [run_child(lib, data_dir) for lib in ("fusionrec", "deepctr-torch")]
    ours, peer = results
    headers = ["library", "examples/s", "throughput ratio", "train s", "test AUC", "AUC diff", "oracle AUC", "peak MB", "mem ratio"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    table = Table(title=f"Wide&Deep, {args.train_rows:,} generated taobao rows, 1 epoch, batch 4096, 2 threads")
    for h in headers:
        table.add_column(h)
    for r in results:
        cells = [r["library"], f"{r['examples_per_sec']:,.0f}", f"{r['examples_per_sec'] / peer['examples_per_sec']:.2f}x",
                 f"{r['train_s']:.1f}", f"{r['test_auc']:.4f}", f"{r['test_auc'] - peer['test_auc']:+.4f}", f"{oracle:.4f}",
                 f"{r['peak_mem_mb']:.0f}", f"{r['peak_mem_mb'] / peer['peak_mem_mb']:.2f}x"]  # fmt: skip
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    console.print(table)
    if args.markdown:
        from _report import write_markdown_block

        write_markdown_block(args.markdown, "ctr_vs_peers", "ctr_vs_peers.py", lines)

if __name__ == "__main__":
    main()

"""fusionrec.ctr Wide&Deep against DeepCTR-Torch's WDL, same generated data, one invocation.

    python benchmarks/ctr_vs_peers.py [--train-rows 400000] [--test-rows 100000] [--markdown docs/benchmarks.md]

Data: fusionrec.datasets.make_taobao (the taobao schema of Bubbliiiing's EasyRec Wide&Deep tutorial, a known click model),
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


# ---------------------------------------------------------------- the W&D + DIN suite
TAOBAO_CONFIG = ROOT / "examples" / "ctr" / "taobao_wide_and_deep.config"
DIN_MAX_LEN = 25  # make_taobao's histories hold at most 24 values: nothing is truncated


def run_fusionrec_din(data_dir: Path) -> dict:
    """EasyRec's taobao config as users run it; only the paths and the epoch count change."""
    from fusionrec.ctr.config import load_config
    from fusionrec.ctr.trainer import Trainer

    with tempfile.TemporaryDirectory() as model_dir:
        edits = {"train_input_path": str(data_dir / "train.csv"), "eval_input_path": str(data_dir / "test.csv"),
                 "model_dir": model_dir, "train_config.num_steps": 0, "data_config.num_epochs": 1,
                 "train_config.save_checkpoints_steps": 10**9, "train_config.log_step_count_steps": 10**9,
                 "train_config.intra_op_parallelism_threads": 2}  # fmt: skip
        start = time.perf_counter()
        trainer = Trainer(load_config(TAOBAO_CONFIG, json.dumps(edits)))
        report = trainer.train(progress=False, evaluate_at_checkpoints=False)
        elapsed = time.perf_counter() - start  # reading, training, saving and evaluating
    return {"library": "fusionrec (EasyRec config)", "examples_per_sec": report["examples"] / elapsed, "train_s": elapsed,
            "test_auc": report["eval"]["auc"], "peak_mem_mb": peak_mb()}  # fmt: skip


def _encode_taobao(data_dir: Path):
    """Both CSV files as int64 tensors: ids factorized and taken modulo the config's bucket
    sizes (as its hashing would), history lists padded to DIN_MAX_LEN with a mask."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    from fusionrec.datasets import TAOBAO_COLUMNS

    read = lambda name: pacsv.read_csv(data_dir / name, read_options=pacsv.ReadOptions(column_names=TAOBAO_COLUMNS),  # noqa: E731
                                       convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in TAOBAO_COLUMNS},
                                                                            strings_can_be_null=False))  # fmt: skip
    both = pa.concat_tables([read("train.csv"), read("test.csv")])
    n = both.num_rows

    def codes_of(values: np.ndarray) -> np.ndarray:
        """Brand and category ids are numbers, shared by the key columns and the history
        lists (DeepCTR's DIN looks both up in one table); other ids are factorized."""
        if all(v.isdigit() or v == "" for v in values[:1000]):
            text = pa.array(values, pa.string())
            return pc.cast(pc.if_else(pc.equal(text, ""), "0", text), pa.int64()).to_numpy()
        return np.asarray(pd.factorize(values)[0], dtype=np.int64)

    ids = {}
    for name, bucket in ID_FEATURES:
        ids[name] = codes_of(both.column(name).to_numpy(zero_copy_only=False)) % bucket
    price = both.column("price").cast(pa.int64()).to_numpy()
    ids["price"] = np.where((price >= 0) & (price < 50), price, 0)
    lists = {}
    for name, bucket in LIST_FEATURES:
        parts = pc.split_pattern(both.column(name).combine_chunks(), "|")
        tokens = parts.flatten().to_numpy(zero_copy_only=False)
        offsets = parts.offsets.to_numpy()
        row = np.repeat(np.arange(n), np.diff(offsets))
        keep = tokens != ""
        codes = codes_of(tokens) % bucket
        position = np.arange(len(tokens)) - offsets[row]
        padded = np.zeros((n, DIN_MAX_LEN), dtype=np.int64)
        mask = np.zeros((n, DIN_MAX_LEN), dtype=bool)
        padded[row[keep], position[keep]] = codes[keep]
        mask[row[keep], position[keep]] = True
        lists[name] = (padded, mask)
    labels = both.column("clk").cast(pa.float32()).to_numpy()
    return ids, lists, labels


def run_lean_din(data_dir: Path) -> dict:
    """The same W&D + DIN architecture written plainly in PyTorch over pre-encoded tensors:
    no config, no reader thread, no TorchScript-able feature code. What the machine allows."""
    import torch
    from sklearn.metrics import roc_auc_score
    from torch import nn

    torch.set_num_threads(2)
    torch.manual_seed(0)
    start = time.perf_counter()
    ids, lists, labels = _encode_taobao(data_dir)
    n_train = len(labels) - sum(1 for _ in open(data_dir / "test.csv"))
    names = [n for n, _ in ID_FEATURES] + ["price"]
    buckets = dict(ID_FEATURES, price=50)

    def mlp(dims, bn=True, act=nn.ReLU):
        layers = []
        for a, b in zip(dims, dims[1:]):
            layers += [nn.Linear(a, b, bias=not bn)] + ([nn.BatchNorm1d(b)] if bn else []) + [act()]
        return nn.Sequential(*layers)

    class LeanWideDeepDIN(nn.Module):
        def __init__(self):
            super().__init__()
            self.wide = nn.ModuleDict({n: nn.Embedding(buckets[n], 16, sparse=True) for n in names})
            self.deep = nn.ModuleDict({n: nn.Embedding(buckets[n], 16, sparse=True) for n in names})
            self.hist = nn.ModuleDict({n: nn.Embedding(b, 16, sparse=True) for n, b in LIST_FEATURES})
            for table in self.wide.values():
                nn.init.zeros_(table.weight)
            for table in list(self.deep.values()) + list(self.hist.values()):
                nn.init.normal_(table.weight, std=0.01)
            # EasyRec's default seq_dnn [128, 64, 32, 1]: batch norm and ReLU on every layer, the score too
            self.attention = mlp([128, 128, 64, 32, 1])
            self.dnn = mlp([16 * len(names) + 64, 128, 64, 32])
            self.final = mlp([16 + 32, 128, 64])
            self.head = nn.Linear(64, 1)

        def forward(self, x, hist, mask):
            wide = sum(self.wide[n](x[n]) for n in names)
            deep = [self.deep[n](x[n]) for n in names]
            query = torch.cat([self.deep["brand"](x["brand"]), self.deep["cate_id"](x["cate_id"])], dim=1)
            keys = torch.cat([self.hist["tag_brand_list"](hist["tag_brand_list"]),
                              self.hist["tag_category_list"](hist["tag_category_list"])], dim=2)  # fmt: skip
            keys = keys * mask.unsqueeze(2)  # padded history embeddings are zeros, as EasyRec's
            q = query.unsqueeze(1).expand_as(keys)
            scores = self.attention(torch.cat([q, keys, q - keys, q * keys], dim=2).flatten(0, 1))
            scores = scores.view(mask.shape).masked_fill(~mask, -1e9)
            weights = torch.softmax(scores, dim=1) * mask
            din = torch.cat([torch.bmm(weights.unsqueeze(1), keys).squeeze(1), query], dim=1)  # [attended, candidate]
            deep_out = self.dnn(torch.cat(deep + [din], dim=1))
            return self.head(self.final(torch.cat([wide, deep_out], dim=1))).squeeze(1)

    model = LeanWideDeepDIN()
    tables = [m.weight for m in model.modules() if isinstance(m, nn.Embedding)]
    dense = [p for p in model.parameters() if all(p is not t for t in tables)]
    linear = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    adam, sparse_adam = torch.optim.Adam(dense, lr=0.001), torch.optim.SparseAdam(tables, lr=0.001)
    x_all = {n: torch.from_numpy(v) for n, v in ids.items()}
    hist_all = {n: torch.from_numpy(lists[n][0]) for n in lists}
    mask_all = torch.from_numpy(lists["tag_brand_list"][1])
    y_all = torch.from_numpy(labels)
    order = torch.randperm(n_train)
    model.train()
    for begin in range(0, n_train, 4096):  # the config's batch size, one shuffled epoch
        rows = order[begin : begin + 4096]
        x = {n: v[rows] for n, v in x_all.items()}
        logits = model(x, {n: v[rows] for n, v in hist_all.items()}, mask_all[rows])
        loss = nn.functional.binary_cross_entropy_with_logits(logits, y_all[rows])
        loss = loss + 1e-5 * 0.5 * sum(w.pow(2).sum() for w in linear)  # l2_regularization
        looked_up = sum(nn.functional.embedding(torch.unique(x[n]), model.deep[n].weight, sparse=True).pow(2).sum()
                        for n in names)  # embedding_regularization, on the rows the batch uses  # fmt: skip
        loss = loss + 1e-5 * 0.5 * looked_up
        adam.zero_grad()
        sparse_adam.zero_grad()
        loss.backward()
        adam.step()
        sparse_adam.step()
    model.eval()
    with torch.no_grad():
        proba = torch.cat([torch.sigmoid(model({n: v[b : b + 8192] for n, v in x_all.items()},
                                               {n: v[b : b + 8192] for n, v in hist_all.items()}, mask_all[b : b + 8192]))
                           for b in range(n_train, len(labels), 8192)]).numpy()  # fmt: skip
    elapsed = time.perf_counter() - start
    return {"library": "lean PyTorch loop", "examples_per_sec": n_train / elapsed, "train_s": elapsed,
            "test_auc": float(roc_auc_score(labels[n_train:], proba)), "peak_mem_mb": peak_mb()}  # fmt: skip


def run_deepctr_din(data_dir: Path) -> dict:
    """DeepCTR-Torch's DIN over the same ids and the two history lists (no wide part: its DIN has none)."""
    import torch
    from deepctr_torch.inputs import SparseFeat, VarLenSparseFeat
    from deepctr_torch.models import DIN
    from sklearn.metrics import roc_auc_score

    torch.set_num_threads(2)
    start = time.perf_counter()
    ids, lists, labels = _encode_taobao(data_dir)
    n_train = len(labels) - sum(1 for _ in open(data_dir / "test.csv"))
    buckets = dict(ID_FEATURES, price=50)
    # DeepCTR's DIN looks a history up in its key's table: brand ids and tag_brand_list
    # tokens must share one id space (they do in make_taobao), 0 being padding
    hist_of = {"brand": "tag_brand_list", "cate_id": "tag_category_list"}
    x = {n: v + 1 if n in hist_of else v for n, v in ids.items()}
    sizes = {n: buckets[n] + (1 if n in hist_of else 0) for n in ids}
    for key, hist in hist_of.items():
        padded, mask = lists[hist]
        x["hist_" + key] = np.where(mask, padded % buckets[key] + 1, 0)
    x["seq_length"] = lists["tag_brand_list"][1].sum(axis=1)
    columns = [SparseFeat(n, sizes[n], embedding_dim=16) for n in ids]
    columns += [VarLenSparseFeat(SparseFeat("hist_" + k, sizes[k], embedding_dim=16, embedding_name=k), DIN_MAX_LEN,
                                 length_name="seq_length") for k in hist_of]  # fmt: skip
    model = DIN(columns, list(hist_of), dnn_hidden_units=(128, 64, 32), att_hidden_size=(64, 32),
                att_activation="sigmoid", task="binary", device="cpu")  # fmt: skip
    model.compile(torch.optim.Adam(model.parameters(), lr=0.001), "binary_crossentropy")
    train = {n: v[:n_train] for n, v in x.items()}
    model.fit(train, labels[:n_train], batch_size=4096, epochs=1, verbose=0, shuffle=True)
    proba = model.predict({n: v[n_train:] for n, v in x.items()}, batch_size=8192).ravel()
    elapsed = time.perf_counter() - start
    return {"library": "deepctr-torch DIN", "examples_per_sec": n_train / elapsed, "train_s": elapsed,
            "test_auc": float(roc_auc_score(labels[n_train:], proba)), "peak_mem_mb": peak_mb()}  # fmt: skip


RUNNERS = {"fusionrec": run_fusionrec, "deepctr-torch": run_deepctr, "fusionrec-din": run_fusionrec_din,
           "lean-din": run_lean_din, "deepctr-din": run_deepctr_din}  # fmt: skip


def run_child(library: str, data_dir: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, __file__, "--child", library, "--data", str(data_dir)], capture_output=True,
                          text=True, env=env, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{library} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _table(console, title: str, results: list[dict], reference: dict, oracle: float) -> list[str]:
    """Print a rich table; return the same rows as markdown. Ratios are against ``reference``."""
    from rich.table import Table

    headers = ["library", "examples/s", "throughput ratio", "s", "test AUC", "AUC diff", "oracle AUC", "peak MB", "mem ratio"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    table = Table(title=title)
    for h in headers:
        table.add_column(h)
    for r in results:
        cells = [r["library"], f"{r['examples_per_sec']:,.0f}", f"{r['examples_per_sec'] / reference['examples_per_sec']:.2f}x",
                 f"{r['train_s']:.1f}", f"{r['test_auc']:.4f}", f"{r['test_auc'] - reference['test_auc']:+.4f}", f"{oracle:.4f}",
                 f"{r['peak_mem_mb']:.0f}", f"{r['peak_mem_mb'] / reference['peak_mem_mb']:.2f}x"]  # fmt: skip
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    console.print(table)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-rows", type=int, default=400_000)
    parser.add_argument("--test-rows", type=int, default=100_000)
    parser.add_argument("--suite", choices=["wdl", "din", "all"], default="all",
                        help="wdl: Wide&Deep against DeepCTR-Torch's WDL; din: EasyRec's taobao W&D + DIN config "
                        "against a lean PyTorch loop and DeepCTR-Torch's DIN")  # fmt: skip
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(RUNNERS[args.child](Path(args.data))))
        return
    from rich.console import Console
    from sklearn.metrics import roc_auc_score

    from fusionrec.datasets import make_taobao

    console = Console()
    blocks = {}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        make_taobao(args.train_rows, seed=0, path=data_dir / "train.csv")
        test = make_taobao(args.test_rows, seed=1, path=data_dir / "test.csv")
        oracle = float(roc_auc_score(test.table.column("clk").to_numpy(), test.click_proba))
        if args.suite in ("wdl", "all"):
            results = [run_child(lib, data_dir) for lib in ("fusionrec", "deepctr-torch")]
            blocks["ctr_vs_peers"] = _table(
                console, f"Wide&Deep, {args.train_rows:,} generated taobao rows, 1 epoch, batch 4096, 2 threads",
                results, results[1], oracle)  # fmt: skip
        if args.suite in ("din", "all"):
            results = [run_child(lib, data_dir) for lib in ("fusionrec-din", "lean-din", "deepctr-din")]
            blocks["ctr_din_vs_lean"] = _table(
                console, f"EasyRec's taobao W&D + DIN config, {args.train_rows:,} rows, 1 epoch, batch 4096, 2 threads: "
                "reading, training and evaluating", results, results[1], oracle)  # fmt: skip
    if args.markdown:
        from _report import write_markdown_block

        for name, lines in blocks.items():
            write_markdown_block(args.markdown, name, "ctr_vs_peers.py", lines)


if __name__ == "__main__":
    main()

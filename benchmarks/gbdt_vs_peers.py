"""fusionrec.gbdt against xgboost (hist) and LightGBM, same data, one invocation.

    python benchmarks/gbdt_vs_peers.py [--rows 1000000] [--rounds 200] [--markdown docs/benchmarks.md]

Data (a): make_classification(1M x 50, n_informative=20, random_state=0) as float32 with
10 % of the values set missing, 80/20 split. Data (b): ../shared/data/lightgbm/binary.
Each library runs in its own child process so that its peak memory can be measured:
training memory = peak RSS minus RSS after the data is loaded. fusionrec's numba
compile (or cache load) time is measured on a tiny warm-up fit and reported apart.
Settings: 2 threads, learning rate 0.1, max_bin 256, no early stopping; depthwise depth 6
against xgboost, lossguide 63 leaves against LightGBM.
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

sys.path.insert(0, str(Path(__file__).parent))
from _report import auc, peak_mb, rss_mb  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def child(library: str, policy: str, data_dir: str, rounds: int) -> dict:
    """Runs in a fresh process: load, construct, train, evaluate, predict; report as JSON."""
    X_train = np.load(Path(data_dir) / "X_train.npy")
    y_train = np.load(Path(data_dir) / "y_train.npy")
    X_test = np.load(Path(data_dir) / "X_test.npy")
    y_test = np.load(Path(data_dir) / "y_test.npy")
    X_all = np.load(Path(data_dir) / "X_all.npy", mmap_mode="r") if (Path(data_dir) / "X_all.npy").exists() else None
    common = {"learning_rate": 0.1, "max_bin": 256}
    result = {"library": library, "policy": policy}
    if library == "fusionrec":
        from fusionrec.gbdt import Dataset, train

        params = {**common, "objective": "binary:logistic", "n_jobs": 2}
        params.update({"max_depth": 6} if policy == "depthwise" else {"grow_policy": "lossguide", "max_leaves": 63, "max_depth": 0})
        start = time.perf_counter()
        train(params, Dataset(X_train[:2000], y_train[:2000]), 2).predict(X_test[:100])
        result["compile_s"] = time.perf_counter() - start
        base = rss_mb()
        start = time.perf_counter()
        dtrain = Dataset(X_train, y_train, max_bin=256)
        result["construct_s"] = time.perf_counter() - start
        start = time.perf_counter()
        booster = train(params, dtrain, rounds)
        result["train_s"] = time.perf_counter() - start
        result["train_mem_mb"] = peak_mb() - base
        predict = lambda X: booster.predict(X)  # noqa: E731
    elif library == "xgboost":
        import xgboost as xgb

        params = {**common, "objective": "binary:logistic", "tree_method": "hist", "nthread": 2}
        params.update({"max_depth": 6} if policy == "depthwise" else {"grow_policy": "lossguide", "max_leaves": 63, "max_depth": 0})
        base = rss_mb()
        start = time.perf_counter()
        dtrain = xgb.QuantileDMatrix(X_train, y_train, max_bin=256, nthread=2)
        result["construct_s"] = time.perf_counter() - start
        start = time.perf_counter()
        booster = xgb.train(params, dtrain, rounds)
        result["train_s"] = time.perf_counter() - start
        result["train_mem_mb"] = peak_mb() - base
        predict = lambda X: booster.inplace_predict(X)  # noqa: E731
    else:
        import lightgbm as lgb

        params = {**common, "objective": "binary", "num_threads": 2, "verbose": -1, "max_bin": 255}
        params.update({"max_depth": 6, "num_leaves": 64} if policy == "depthwise" else {"num_leaves": 63})
        base = rss_mb()
        start = time.perf_counter()
        dtrain = lgb.Dataset(X_train, y_train, params={"max_bin": 255, "verbose": -1}).construct()
        result["construct_s"] = time.perf_counter() - start
        start = time.perf_counter()
        booster = lgb.train(params, dtrain, rounds)
        result["train_s"] = time.perf_counter() - start
        result["train_mem_mb"] = peak_mb() - base
        predict = lambda X: booster.predict(X, num_threads=2)  # noqa: E731
    result["test_auc"] = auc(y_test, predict(X_test))
    if X_all is not None:
        X_all = np.ascontiguousarray(X_all)
        predict(X_all[:1000])
        start = time.perf_counter()
        predict(X_all)
        result["predict_rows_per_s"] = X_all.shape[0] / (time.perf_counter() - start)
    result["peak_mem_mb"] = peak_mb()
    return result


def make_synthetic(rows: int, out: Path) -> None:
    from sklearn.datasets import make_classification

    X, y = make_classification(rows, 50, n_informative=20, random_state=0)
    X = X.astype(np.float32)
    X[np.random.default_rng(0).random(X.shape) < 0.1] = np.nan
    cut = int(rows * 0.8)
    np.save(out / "X_train.npy", X[:cut])
    np.save(out / "y_train.npy", y[:cut].astype(np.float64))
    np.save(out / "X_test.npy", X[cut:])
    np.save(out / "y_test.npy", y[cut:].astype(np.float64))
    np.save(out / "X_all.npy", X)


def make_lightgbm_binary(out: Path) -> bool:
    train_path, test_path = SHARED / "lightgbm" / "binary.train", SHARED / "lightgbm" / "binary.test"
    if not train_path.exists():
        return False
    train_data = np.loadtxt(train_path, delimiter="\t")
    test_data = np.loadtxt(test_path, delimiter="\t")
    np.save(out / "X_train.npy", train_data[:, 1:].astype(np.float32))
    np.save(out / "y_train.npy", train_data[:, 0])
    np.save(out / "X_test.npy", test_data[:, 1:].astype(np.float32))
    np.save(out / "y_test.npy", test_data[:, 0])
    return True


def run_child(library, policy, data_dir, rounds) -> dict:
    command = [sys.executable, __file__, "--child", library, "--policy", policy, "--data", str(data_dir), "--rounds", str(rounds)]
    env = {**os.environ, "OMP_NUM_THREADS": "2", "NUMBA_NUM_THREADS": "2"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{library} {policy} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--markdown", type=Path, help="also write the table (markdown) to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--policy", default="depthwise", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.policy, args.data, args.rounds)))
        return

    from rich.console import Console
    from rich.table import Table

    console = Console()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        synthetic = Path(tmp) / "synthetic"
        synthetic.mkdir()
        with console.status(f"generating {args.rows:,} x 50 synthetic rows"):
            make_synthetic(args.rows, synthetic)
        binary = Path(tmp) / "binary"
        binary.mkdir()
        data_sets = [(f"synthetic {args.rows:,}x50", synthetic)]
        if make_lightgbm_binary(binary):
            data_sets.append(("lightgbm/binary", binary))
        for data_name, data_dir in data_sets:
            for policy, peer in (("depthwise", "xgboost"), ("lossguide", "lightgbm")):
                for library in ("fusionrec", peer):
                    with console.status(f"{data_name}: {library} {policy}"):
                        result = run_child(library, policy, data_dir, args.rounds)
                    result["data"] = data_name
                    rows.append(result)
                    console.print(f"{data_name} {library} {policy}: {json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()})}")
    table = Table(title=f"fusionrec.gbdt vs peers ({args.rounds} rounds, 2 threads)")
    headers = ["data", "policy", "library", "construct s", "train s", "total s", "total ratio", "test AUC", "AUC diff",
               "train mem MB", "mem ratio", "predict rows/s", "predict ratio", "numba compile s"]  # fmt: skip
    for h in headers:
        table.add_column(h)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for data_name in dict.fromkeys(r["data"] for r in rows):
        for policy in ("depthwise", "lossguide"):
            ours = next(r for r in rows if r["data"] == data_name and r["policy"] == policy and r["library"] == "fusionrec")
            peer = next(r for r in rows if r["data"] == data_name and r["policy"] == policy and r["library"] != "fusionrec")
            for r in (ours, peer):
                total = r["construct_s"] + r["train_s"]
                peer_total = peer["construct_s"] + peer["train_s"]
                cells = [
                    data_name, policy, r["library"], f"{r['construct_s']:.2f}", f"{r['train_s']:.2f}", f"{total:.2f}",
                    f"{total / peer_total:.2f}x", f"{r['test_auc']:.4f}", f"{r['test_auc'] - peer['test_auc']:+.4f}",
                    f"{r['train_mem_mb']:.0f}", f"{r['train_mem_mb'] / max(peer['train_mem_mb'], 1e-9):.2f}x",
                    f"{r.get('predict_rows_per_s', float('nan')):,.0f}",
                    f"{r.get('predict_rows_per_s', float('nan')) / peer.get('predict_rows_per_s', float('nan')):.2f}x",
                    f"{r['compile_s']:.1f}" if "compile_s" in r else "",
                ]  # fmt: skip
                table.add_row(*cells)
                lines.append("| " + " | ".join(cells) + " |")
    console.print(table)
    if args.markdown:
        from _report import write_markdown_block

        write_markdown_block(args.markdown, "gbdt_vs_peers", "gbdt_vs_peers.py", lines)

if __name__ == "__main__":
    main()

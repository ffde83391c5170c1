"""Out-of-core boosted trees: fusionrec's ExternalDataset against in-memory training and
xgboost's external memory, on generated Parquet files.

The data: ``--rows`` x ``--features`` float32 (a tenth of the values missing, a quarter of the
features integer-valued) in Parquet files of 500,000 rows, a binary label from a logistic model
of 10 features with interactions; a separate test file. Each run is its own process, so its
peak RSS (VmHWM) is its own:

- fusionrec in memory: the files read into one float32 matrix, ``Dataset``, ``train``;
- fusionrec out of core: ``ExternalDataset(paths, label_column=...)`` (bin edges from merged
  sketches, lz4 pages in a temporary directory), ``train``; ``page_rows`` and
  ``max_pages_in_flight`` bound the codes in memory;
- xgboost hist in memory (``QuantileDMatrix``) and with ``ExtMemQuantileDMatrix`` over a
  ``DataIter`` of the same files.

Each reports wall seconds (reading and binning included, and training alone), peak RSS, and
the test AUC; ratios are to fusionrec in memory.

    python benchmarks/gbdt_out_of_core.py [--rows 10000000] [--features 50] [--rounds 50] [--depth 6]
                                          [--work DIR] [--markdown docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _report import auc, write_markdown_block  # noqa: E402

ROWS_PER_FILE = 500_000
LABEL = "label"


def generate(work: Path, n_rows: int, n_features: int, seed: int = 0) -> tuple[list[Path], Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    coef = rng.normal(size=10)

    def chunk(n: int) -> "pa.Table":
        X = rng.normal(size=(n, n_features)).astype(np.float32)
        X[:, : n_features // 4] = np.round(X[:, : n_features // 4] * 3)
        logit = X[:, :10] @ coef + 0.8 * X[:, 0] * X[:, 1] - 0.5 * np.abs(X[:, 2]) + rng.logistic(size=n)
        X[rng.random(X.shape) < 0.1] = np.nan
        columns = {f"f{j}": X[:, j] for j in range(n_features)}
        columns[LABEL] = (logit > 0).astype(np.float32)
        return pa.table(columns)

    paths = []
    for i, start in enumerate(range(0, n_rows, ROWS_PER_FILE)):
        path = work / f"train-{i:04d}.parquet"
        if not path.exists():
            pq.write_table(chunk(min(ROWS_PER_FILE, n_rows - start)), path)
        paths.append(path)
    test = work / "test.parquet"
    if not test.exists():
        pq.write_table(chunk(200_000), test)
    return paths, test


def read_matrix(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow.parquet as pq

    tables = [pq.read_table(p) for p in paths]
    names = [n for n in tables[0].schema.names if n != LABEL]
    X = np.empty((sum(t.num_rows for t in tables), len(names)), np.float32)
    y = np.empty(X.shape[0], np.float32)
    row = 0
    for table in tables:
        for j, name in enumerate(names):
            X[row : row + table.num_rows, j] = table.column(name).to_numpy(zero_copy_only=False)
        y[row : row + table.num_rows] = table.column(LABEL).to_numpy(zero_copy_only=False)
        row += table.num_rows
        del table
    return X, y


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(mode: str, paths: list[Path], test: Path, rounds: int, depth: int, work: Path) -> dict:
    params = {"objective": "binary:logistic", "max_depth": depth, "eta": 0.1, "max_bin": 256, "tree_method": "hist",
              "nthread": 2, "n_jobs": 2}  # fmt: skip
    X_test, y_test = read_matrix([test])
    start = time.perf_counter()
    if mode.startswith("fusionrec"):
        from fusionrec.gbdt.dataset import Dataset
        from fusionrec.gbdt.outofcore.external import ExternalDataset
        from fusionrec.gbdt.training import train

        fusion_params = {k: v for k, v in params.items() if k != "nthread"}
        if mode == "fusionrec-memory":
            X, y = read_matrix(paths)
            dtrain = Dataset(X, y, max_bin=256)
            del X
        else:
            dtrain = ExternalDataset(paths, label_column=LABEL, max_bin=256, cache_dirs=work / "pages", page_rows=1 << 17,
                                     max_pages_in_flight=2)  # fmt: skip
        loaded = time.perf_counter()
        booster = train(fusion_params, dtrain, rounds)
        trained = time.perf_counter()
        proba = booster.predict(X_test)
        if mode == "fusionrec-pages":
            dtrain.close()
    else:
        import xgboost as xgb

        xgb_params = {k: v for k, v in params.items() if k != "n_jobs"}
        if mode == "xgboost-memory":
            X, y = read_matrix(paths)
            dtrain = xgb.QuantileDMatrix(X, y, max_bin=256)
            del X
        else:

            class Files(xgb.DataIter):
                def __init__(self):
                    self.i = 0
                    super().__init__(cache_prefix=str(work / "xgb-cache"))

                def next(self, input_data) -> bool:
                    if self.i == len(paths):
                        return False
                    X, y = read_matrix([paths[self.i]])
                    input_data(data=X, label=y)
                    self.i += 1
                    return True

                def reset(self) -> None:
                    self.i = 0

            dtrain = xgb.ExtMemQuantileDMatrix(Files(), max_bin=256)
        loaded = time.perf_counter()
        booster = xgb.train(xgb_params, dtrain, rounds)
        trained = time.perf_counter()
        proba = booster.predict(xgb.DMatrix(X_test))
    return {"mode": mode, "load_s": loaded - start, "train_s": trained - loaded, "total_s": trained - start,
            "peak_mb": peak_rss_mb(), "auc": auc(y_test, proba)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--modes", default="fusionrec-memory,fusionrec-pages,xgboost-memory,xgboost-extmem")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="gbdt_ooc_"))
    work.mkdir(parents=True, exist_ok=True)
    paths, test = generate(work, args.rows, args.features)
    if args.child:
        print(json.dumps(child(args.child, paths, test, args.rounds, args.depth, work)))
        return
    results = {}
    for mode in args.modes.split(","):
        argv = [sys.executable, __file__, "--child", mode, "--rows", str(args.rows), "--features", str(args.features),
                "--rounds", str(args.rounds), "--depth", str(args.depth), "--work", str(work)]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{mode} failed:\n{done.stderr[-4000:]}")
        results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
        print(results[mode], flush=True)
    base = results.get("fusionrec-memory")
    lines = [
        f"{args.rows:,} rows x {args.features} float32 features in Parquet files of {ROWS_PER_FILE:,} rows; {args.rounds} "
        f"rounds, depth {args.depth}, max_bin 256, 2 threads; test AUC on 200,000 other rows. Each run a process of its own.",
        "",
        "| run | read + bin s | train s | total s | peak RSS MB | test AUC | total / fusionrec in memory | peak / fusionrec in memory |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, r in results.items():
        ratio_t = f"{r['total_s'] / base['total_s']:.2f}" if base else "-"
        ratio_m = f"{r['peak_mb'] / base['peak_mb']:.2f}" if base else "-"
        lines.append(f"| {mode} | {r['load_s']:.1f} | {r['train_s']:.1f} | {r['total_s']:.1f} | {r['peak_mb']:,.0f} | "
                     f"{r['auc']:.4f} | {ratio_t} | {ratio_m} |")  # fmt: skip
    print("\n".join(lines))
    if args.markdown:
        write_markdown_block(args.markdown, "gbdt_out_of_core", "gbdt_out_of_core.py", lines)


if __name__ == "__main__":
    main()

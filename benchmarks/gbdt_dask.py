"""Boosted trees on Dask: fusionrec.gbdt.dask on 1 and 2 workers of a LocalCluster, beside
xgboost.dask on the same clusters and fusionrec.gbdt.train on one machine.

The data: ``--rows`` x 28 float32 (Higgs-like: a tenth missing, some integer-valued), a
binary label from a logistic model with interactions, as a dask array of ``--chunk``-row
partitions (persisted on the workers before the clock starts); a test set of 200,000 rows.
The clusters: 1 worker x 2 threads, and 2 workers x 1 thread (this machine has 2 cores).

Times include building the distributed data (sketches and binning: ``DaskDataset`` /
``DaskQuantileDMatrix``). Agreement: every fusionrec model's trees against the 2-worker
model's, and against ``fusionrec.gbdt.train`` on a ``Dataset`` with the 2-worker model's cuts
(equal tree structures, largest leaf-value and prediction difference).

    python benchmarks/gbdt_dask.py [--rows 2000000] [--chunk 250000] [--rounds 100] [--depth 6]
                                   [--markdown docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _report import auc, write_markdown_block  # noqa: E402


def generate(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    coef = np.random.default_rng(99).normal(size=12)
    X = rng.normal(size=(n, 28)).astype(np.float32)
    X[:, :6] = np.round(X[:, :6] * 2)
    logit = X[:, :12] @ coef + 0.8 * X[:, 0] * X[:, 1] - 0.6 * np.abs(X[:, 2] * X[:, 7]) + rng.logistic(size=n)
    X[rng.random(X.shape) < 0.1] = np.nan
    return X, (logit > 0).astype(np.float32)


def same_structure(a, b) -> bool:
    return len(a.trees) == len(b.trees) and all(
        np.array_equal(x.feature, y.feature) and np.array_equal(x.split_bin, y.split_bin) and np.array_equal(x.left, y.left)
        for x, y in zip(a.trees, b.trees)
    )


def leaf_difference(a, b) -> float:
    return max(float(np.max(np.abs(x.value - y.value))) for x, y in zip(a.trees, b.trees))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--chunk", type=int, default=250_000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()

    import dask.array as da
    import xgboost as xgb
    import xgboost.dask  # noqa: F401
    from distributed import Client, LocalCluster

    from fusionrec.gbdt import Dataset, train
    from fusionrec.gbdt import dask as fgd

    X, y = generate(args.rows, 0)
    X_test, y_test = generate(200_000, 1)
    params = {"objective": "binary:logistic", "max_depth": args.depth, "eta": 0.1, "max_bin": 256}
    results: dict[str, dict] = {}
    models = {}
    for n_workers in (1, 2):
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=2 // n_workers, processes=True, dashboard_address=None)
        client = Client(cluster)
        dX = da.from_array(X, chunks=(args.chunk, X.shape[1])).persist()
        dy = da.from_array(y, chunks=args.chunk).persist()
        client.wait_for_workers(n_workers)
        # fusionrec: warm the workers' kernels on a small set first (numba compiles once per process)
        small = fgd.DaskDataset(client, dX[:20_000], dy[:20_000])
        fgd.train(client, params, small, 2)
        start = time.perf_counter()
        dtrain = fgd.DaskDataset(client, dX, dy)
        dtrain.cuts  # the sketches, merged (otherwise done by train)
        built = time.perf_counter()
        booster = fgd.train(client, params, dtrain, args.rounds)["booster"]
        done = time.perf_counter()
        models[n_workers] = booster
        name = f"fusionrec.gbdt.dask, {n_workers} worker{'s' if n_workers > 1 else ''}"
        results[name] = {"build_s": built - start, "train_s": done - built, "auc": auc(y_test, booster.predict(X_test))}
        print(name, results[name], flush=True)
        del dtrain
        # xgboost.dask on the same cluster and partitions
        start = time.perf_counter()
        dmatrix = xgb.dask.DaskQuantileDMatrix(client, dX, dy, max_bin=256)
        built = time.perf_counter()
        out = xgb.dask.train(client, {**params, "tree_method": "hist"}, dmatrix, args.rounds)
        done = time.perf_counter()
        name = f"xgboost.dask, {n_workers} worker{'s' if n_workers > 1 else ''}"
        results[name] = {"build_s": built - start, "train_s": done - built,
                         "auc": auc(y_test, out["booster"].predict(xgb.DMatrix(X_test)))}  # fmt: skip
        print(name, results[name], flush=True)
        client.close()
        cluster.close()

    start = time.perf_counter()
    dtrain = Dataset(X, y, max_bin=256)
    built = time.perf_counter()
    single = train({**params, "n_jobs": 2}, dtrain, args.rounds)
    done = time.perf_counter()
    results["fusionrec.gbdt.train, one process (own cuts)"] = {"build_s": built - start, "train_s": done - built,
                                                               "auc": auc(y_test, single.predict(X_test))}  # fmt: skip
    same_cuts = train({**params, "n_jobs": 2}, Dataset(X, y, reference=models[2]), args.rounds)
    agreement = [
        f"- 2 workers vs 1 worker: tree structures equal **{same_structure(models[2], models[1])}**, largest leaf-value "
        f"difference {leaf_difference(models[2], models[1]):.1e}, largest prediction difference "
        f"{np.max(np.abs(models[2].predict(X_test) - models[1].predict(X_test))):.1e}.",
        f"- 2 workers vs `fusionrec.gbdt.train` on a Dataset with the same cuts: tree structures equal "
        f"**{same_structure(models[2], same_cuts)}**, largest leaf-value difference {leaf_difference(models[2], same_cuts):.1e}, "
        f"largest prediction difference {np.max(np.abs(models[2].predict(X_test) - same_cuts.predict(X_test))):.1e}.",
    ]  # fmt: skip
    lines = [
        f"{args.rows:,} rows x 28 float32 features (a tenth missing) in dask partitions of {args.chunk:,} rows; "
        f"{args.rounds} rounds, depth {args.depth}, max_bin 256; LocalCluster of 1 worker x 2 threads and of 2 workers "
        "x 1 thread on this 2-core machine; test AUC on 200,000 other rows. Build = the distributed data set (sketch + "
        "bin); ratios are train + build time to xgboost.dask's on the same cluster.",
        "",
        "| run | build s | train s | total s | test AUC | total / xgboost.dask's |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        total = r["build_s"] + r["train_s"]
        peer = next((results[k] for k in results if k.startswith("xgboost.dask") and k.split(", ")[1] == name.split(", ")[1]), None)
        ratio = f"{total / (peer['build_s'] + peer['train_s']):.2f}" if peer and not name.startswith("xgboost") else "-"
        lines.append(f"| {name} | {r['build_s']:.1f} | {r['train_s']:.1f} | {total:.1f} | {r['auc']:.4f} | {ratio} |")
    lines += ["", *agreement]
    print("\n".join(lines))
    if args.markdown:
        write_markdown_block(args.markdown, "gbdt_dask", "gbdt_dask.py", lines)


if __name__ == "__main__":
    main()

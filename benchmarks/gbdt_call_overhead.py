"""What a restructuring of the tree engine costs per call: fusionrec here against the fusionrec
of another src directory (a checkout of an earlier commit), in the same invocation.

    python benchmarks/gbdt_call_overhead.py --before-src /path/to/earlier/checkout/src [--reps 7]

Three measurements, each the best of ``--reps``, each version in a process of its own:
- small: 200 rounds of depth 6 on 2,000 x 10 (regression): thousands of small nodes, where a
  kernel call's fixed cost (numba's dispatch and argument unboxing) is a visible share;
- large: 60 rounds of depth 6 on 200,000 x 40 with 10% missing (binary), 2 threads;
- predict and SHAP of that model on its 200,000 (20,000 for SHAP) rows.
The models of both versions must predict the same (the script checks it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

CHILD = r"""
import json, sys, time
import numpy as np
from fusionrec.gbdt import Dataset, train

reps = int(sys.argv[1])
out = {}
rng = np.random.default_rng(0)
X = rng.normal(size=(2000, 10)).astype(np.float32)
y = X[:, 0] + X[:, 1] * X[:, 2] + rng.normal(size=2000) * 0.1
d = Dataset(X, y)
params = {"max_depth": 6, "eta": 0.1, "n_jobs": 2}
train(params, d, 5)  # compile
out["small_train_s"] = min(_t for _t in [(lambda t0: (train(params, d, 200), time.perf_counter() - t0)[1])(time.perf_counter()) for _ in range(reps)])
X = rng.normal(size=(200_000, 40)).astype(np.float32)
X[rng.random(X.shape) < 0.1] = np.nan
z = np.nan_to_num(X)
y = (z[:, 0] + z[:, 1] * z[:, 2] + rng.normal(size=200_000) > 0).astype(float)
d = Dataset(X, y)
params = {"objective": "binary:logistic", "max_depth": 6, "eta": 0.1, "n_jobs": 2}
train(params, d, 5)
times = {"large_train_s": [], "predict_s": [], "shap_s": []}
for _ in range(reps):
    t0 = time.perf_counter(); booster = train(params, d, 60); times["large_train_s"].append(time.perf_counter() - t0)
    t0 = time.perf_counter(); p = booster.predict(X); times["predict_s"].append(time.perf_counter() - t0)
    t0 = time.perf_counter(); booster.predict(X[:20000], pred_contribs=True); times["shap_s"].append(time.perf_counter() - t0)
out.update({k: min(v) for k, v in times.items()})
out["prediction_sum"] = float(p.sum())
print(json.dumps(out))
"""


def run(src: Path, reps: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run([sys.executable, "-c", CHILD, str(reps)], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before-src", type=Path, required=True, help="the src directory of the fusionrec to compare with")
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    before = run(args.before_src.resolve(), args.reps)
    now = run(SRC, args.reps)
    if abs(before["prediction_sum"] - now["prediction_sum"]) > 1e-6 * max(1.0, abs(before["prediction_sum"])):
        print(f"the two versions predict differently: {before['prediction_sum']} vs {now['prediction_sum']}")
        return 1
    print("| measurement | before (s) | now (s) | now / before |")
    print("|---|---:|---:|---:|")
    for key in ("small_train_s", "large_train_s", "predict_s", "shap_s"):
        print(f"| {key} | {before[key]:.3f} | {now[key]:.3f} | {now[key] / before[key]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

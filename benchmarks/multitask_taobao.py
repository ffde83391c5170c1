"""Multi-task models against single-task models on make_taobao's clk and buy.

ESMM (examples/ctr/taobao_esmm.yaml) and MMoE (examples/ctr/taobao_mmoe.yaml), unchanged but
for paths and epochs, against a single-task DNN over the same features trained on clk alone
and one trained on buy alone (SimpleMultiTask with one tower: [256, 128] then [128, 64], the
widths of MMoE's expert and tower). Every model reads the same rows, in the same order, with
the same optimizer. Test AUCs on a later day of the same world (3% new users / ads), with the
paired bootstrap standard error of each difference to its single-task model, in each of
``--worlds`` make_taobao worlds (other users, ads and click model), and the mean difference
over the worlds with its standard error.

    python benchmarks/multitask_taobao.py [--train_rows 300000] [--test_rows 100000] [--epochs 3] [--worlds 3]
                                          [--work DIR] [--markdown docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _report import auc, write_markdown_block  # noqa: E402

from fusionrec.ctr.config import config_from_dict  # noqa: E402
from fusionrec.ctr.trainer import Trainer  # noqa: E402
from fusionrec.datasets import make_taobao  # noqa: E402

EXAMPLES = ROOT / "examples" / "ctr"
N_BOOTSTRAP = 200


def single_task(label: str) -> dict:
    data = yaml.safe_load((EXAMPLES / "taobao_mmoe.yaml").read_text())
    groups = data["model_config"]["feature_groups"]
    tower = {"tower_name": label, "label_name": label, "dnn": {"hidden_units": [256, 128, 128, 64]},
             "metrics_set": [{"auc": {}}]}  # fmt: skip
    data["model_config"] = {"model_class": "SimpleMultiTask", "feature_groups": groups, "embedding_regularization": 1e-5,
                            "simple_multi_task": {"task_towers": [tower], "l2_regularization": 1e-5}}  # fmt: skip
    return data


def run(name: str, data: dict, work: Path, epochs: int) -> tuple[dict, float]:
    data = copy.deepcopy(data)
    data.update(train_input_path=str(work / "train.csv"), eval_input_path=str(work / "test.csv"),
                model_dir=str(work / name))  # fmt: skip
    data["train_config"]["num_steps"] = 0
    data["train_config"]["save_checkpoints_steps"] = 100_000
    data["data_config"]["num_epochs"] = epochs
    trainer = Trainer(config_from_dict(data))
    start = time.perf_counter()
    trainer.train(progress=False, evaluate_at_checkpoints=False)
    seconds = time.perf_counter() - start
    _, scores, _ = trainer.predict_table([str(work / "test.csv")], trainer._reader(), heads=True)
    return scores, seconds


def paired_se(y: np.ndarray, a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> float:
    """Bootstrap standard error of AUC(a) - AUC(b) on the same rows."""
    diffs = []
    for _ in range(N_BOOTSTRAP):
        rows = rng.integers(0, len(y), len(y))
        if y[rows].min() == y[rows].max():
            continue
        diffs.append(auc(y[rows], a[rows]) - auc(y[rows], b[rows]))
    return float(np.std(diffs, ddof=1))


def one_world(args, world_seed: int, rng: np.random.Generator) -> tuple[dict, dict, tuple[int, int]]:
    """AUCs (and paired s.e. of each difference to its single-task model) in one make_taobao world."""
    work = args.work / f"world{world_seed}"
    work.mkdir(parents=True, exist_ok=True)
    train = make_taobao(args.train_rows, seed=0, path=work / "train.csv", world_seed=world_seed)
    test = make_taobao(args.test_rows, seed=1, path=work / "test.csv", world_seed=world_seed)
    clk, buy = (test.table.column(name).to_numpy().astype(float) for name in ("clk", "buy"))
    train_clk, train_buy = (train.table.column(name).to_numpy().mean() for name in ("clk", "buy"))
    print(f"world {world_seed}: train {args.train_rows:,} rows (clk {train_clk:.4f}, buy {train_buy:.5f}); "
          f"test {args.test_rows:,} rows ({int(clk.sum()):,} clicks, {int(buy.sum()):,} buys)", flush=True)
    runs = {
        "single_clk": single_task("clk"),
        "single_buy": single_task("buy"),
        "esmm": yaml.safe_load((EXAMPLES / "taobao_esmm.yaml").read_text()),
        "mmoe": yaml.safe_load((EXAMPLES / "taobao_mmoe.yaml").read_text()),
    }
    scores, seconds = {}, {}
    for name, data in runs.items():
        scores[name], seconds[name] = run(name, data, work, args.epochs)
        print(f"  {name}: {seconds[name]:.0f} s", flush=True)
    tables = {
        "clk": (clk, {"single-task DNN (clk)": scores["single_clk"]["_clk"], "ESMM probs_ctr": scores["esmm"]["_ctr"],
                      "MMoE probs_ctr": scores["mmoe"]["_ctr"]}),
        "buy": (buy, {"single-task DNN (buy)": scores["single_buy"]["_buy"],
                      "ESMM probs_ctcvr": scores["esmm"]["_ctr"] * scores["esmm"]["_cvr"],
                      "MMoE probs_cvr": scores["mmoe"]["_cvr"]}),
    }  # fmt: skip
    result = {}
    for label, (y, table) in tables.items():
        base = next(iter(table.values()))
        for name, proba in table.items():
            value = auc(y, proba)
            result[(label, name)] = {"auc": value, "diff": value - auc(y, base), "se": paired_se(y, proba, base, rng)
                                     if proba is not base else float("nan")}  # fmt: skip
    return result, seconds, (int(clk.sum()), int(buy.sum()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_rows", type=int, default=300_000)
    parser.add_argument("--test_rows", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--worlds", type=int, default=3, help="make_taobao worlds (world_seed 0 .. N-1), each a full run")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()
    args.work = args.work or Path(tempfile.mkdtemp(prefix="multitask_"))
    rng = np.random.default_rng(0)
    per_world, seconds, counts = [], [], []
    for world in range(args.worlds):
        result, timing, count = one_world(args, world, rng)
        per_world.append(result)
        seconds.append(timing)
        counts.append(count)
    keys = list(per_world[0])
    header = " / ".join(f"world {w}" for w in range(args.worlds))
    rows = [f"| label | model | test AUC, {header} | minus single-task: mean over worlds (s.e.) |",
            "|---|---|---|---|"]  # fmt: skip
    summary = {}
    for label, name in keys:
        aucs = [r[(label, name)]["auc"] for r in per_world]
        diffs = np.array([r[(label, name)]["diff"] for r in per_world])
        paired = [r[(label, name)]["se"] for r in per_world]
        cells = " / ".join(f"{a:.4f}" for a in aucs)
        if np.isnan(paired[0]):
            rows.append(f"| {label} | {name} | {cells} | |")
            continue
        se = float(diffs.std(ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else paired[0]
        summary[f"{label}: {name}"] = {"aucs": aucs, "diffs": diffs.tolist(), "mean_diff": float(diffs.mean()), "se": se,
                                       "paired_se_per_world": paired}  # fmt: skip
        per = ", ".join(f"{d:+.4f} (±{p:.4f})" for d, p in zip(diffs, paired))
        rows.append(f"| {label} | {name} | {cells} | **{diffs.mean():+.4f}** ({se:.4f}); per world {per} |")
    mean_seconds = {k: np.mean([s[k] for s in seconds]) for k in seconds[0]}
    rows += ["", "Seconds to train (all epochs, mean over worlds): " + ", ".join(f"{k} {v:.0f}" for k, v in mean_seconds.items()),
             "", f"make_taobao: per world, {args.train_rows:,} training rows (seed 0) and {args.test_rows:,} test rows of a "
             f"later day (seed 1; clicks / buys in test: {', '.join(f'{c:,} / {b:,}' for c, b in counts)}); {args.epochs} "
             "epochs, batch 4096, the example configs' optimizer. s.e. of the mean difference: across worlds; per world "
             f"±: paired bootstrap of the AUC difference on that world's test rows ({N_BOOTSTRAP} resamples)."]  # fmt: skip
    print("\n".join(rows))
    (args.work / "result.json").write_text(json.dumps(summary, indent=1))
    if args.markdown:
        write_markdown_block(args.markdown, "multitask_taobao", "multitask_taobao.py", rows)


if __name__ == "__main__":
    main()

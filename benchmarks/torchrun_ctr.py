"""Data-parallel deep CTR training: 1 process against 2 processes under torchrun.

The W&D + DIN config users run (examples/ctr/taobao_wide_and_deep.config), unchanged but for
paths, epochs and checkpoints, on make_taobao rows: one process with batch_size B (torch's
threads: every core) against ``torchrun --nproc_per_node 2`` with batch_size B / 2 each (the
same global batch, the same steps over the same rows; torchrun gives each process one thread).
Reports training examples/s (the trainer's own count, training only) and the test AUC of each
run, and their ratios.

    python benchmarks/torchrun_ctr.py [--train_rows 200000] [--test_rows 50000] [--batch_size 4096] [--epochs 1]
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
from _report import write_markdown_block  # noqa: E402

from fusionrec.datasets import make_taobao  # noqa: E402

CONFIG = ROOT / "examples" / "ctr" / "taobao_wide_and_deep.config"


def train(work: Path, name: str, n_processes: int, batch_size: int, epochs: int) -> tuple[dict, float]:
    edits = {"train_input_path": str(work / "train.csv"), "eval_input_path": str(work / "test.csv"),
             "train_config.num_steps": 0, "train_config.save_checkpoints_steps": 1_000_000,
             "data_config.num_epochs": epochs, "data_config.batch_size": batch_size}  # fmt: skip
    cli = ["-m", "fusionrec.cli", "ctr", "train_eval", "--pipeline_config_path", str(CONFIG), "--model_dir",
           str(work / name), "--edit_config_json", json.dumps(edits)]  # fmt: skip
    if n_processes > 1:
        argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n_processes)] + cli
    else:
        argv = [sys.executable] + cli
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-4000:]}")
    wall = time.perf_counter() - start
    return json.loads(done.stdout[done.stdout.index("\n{\n"):]), wall


def auc_standard_error(area: float, n_positive: int, n_negative: int) -> float:
    """Hanley & McNeil (1982), eq. 2: the standard error of an AUC from the class counts."""
    q1, q2 = area / (2 - area), 2 * area**2 / (1 + area)
    variance = area * (1 - area) + (n_positive - 1) * (q1 - area**2) + (n_negative - 1) * (q2 - area**2)
    return float(np.sqrt(variance / (n_positive * n_negative)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_rows", type=int, default=200_000)
    parser.add_argument("--test_rows", type=int, default=50_000)
    parser.add_argument("--batch_size", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="torchrun_ctr_"))
    work.mkdir(parents=True, exist_ok=True)
    make_taobao(args.train_rows, seed=0, path=work / "train.csv")
    test = make_taobao(args.test_rows, seed=1, path=work / "test.csv")
    clicks = np.asarray(test.table.column("clk").to_numpy(), dtype=np.float64)
    one, one_wall = train(work, "one", 1, args.batch_size, args.epochs)
    two, two_wall = train(work, "two", 2, args.batch_size // 2, args.epochs)
    lines = [
        f"make_taobao {args.train_rows:,} training rows, {args.test_rows:,} test rows, {args.epochs} epoch(s), global batch "
        f"{args.batch_size}; the W&D + DIN config (examples/ctr/taobao_wide_and_deep.config).",
        "",
        "| run | steps | examples/s (training) | wall s (incl. start, eval) | test AUC |",
        "|---|---|---|---|---|",
        f"| 1 process, batch {args.batch_size} | {one['steps']} | {one['examples_per_sec']:,.0f} | {one_wall:.1f} | {one['eval']['auc']:.4f} |",
        f"| torchrun 2 processes, batch {args.batch_size // 2} each | {two['steps']} | {two['examples_per_sec']:,.0f} | "
        f"{two_wall:.1f} | {two['eval']['auc']:.4f} |",
        "",
        f"2 processes / 1 process: examples/s x{two['examples_per_sec'] / one['examples_per_sec']:.2f}, AUC "
        f"{two['eval']['auc'] - one['eval']['auc']:+.4f} (the standard error of one test AUC, Hanley-McNeil: "
        f"{auc_standard_error(one['eval']['auc'], int(clicks.sum()), int(len(clicks) - clicks.sum())):.4f}). Batch norm "
        "statistics and embedding_regularization are each process's (docs/ctr.md), so the two runs differ by more than "
        "float rounding.",
    ]
    print("\n".join(lines))
    if args.markdown:
        write_markdown_block(args.markdown, "torchrun_ctr", "torchrun_ctr.py", lines)


if __name__ == "__main__":
    main()

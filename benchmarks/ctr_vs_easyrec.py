"""fusionrec's CTR trainer beside EasyRec itself: the same config text, the same click logs.

    python benchmarks/ctr_vs_easyrec.py --easyrec-python /path/to/python [--train-rows 1000000]
        [--eval-rows 50000] [--configs din_on_taobao,dcn_on_taobao] [--easyrec-runs 1] [--fusionrec-seeds 1]
        [--markdown docs/benchmarks.md]

``--easyrec-python`` (or ``EASYREC_PYTHON``) is a Python that imports ``easy_rec`` (EasyRec's
source on TensorFlow 2.12, the newest TensorFlow with ``tf.estimator``); nothing here builds it.
Without it only fusionrec runs.

Data: ``fusionrec.datasets.make_taobao`` (EasyRec's taobao schema), ``--train-rows`` rows of
day 0 and ``--eval-rows`` of day 1, headerless CSV. Each config is EasyRec's own sample
(``../shared/easyrec/configs``) or fusionrec's example, with only the input paths, the model
directory and the length (one epoch: ``num_steps`` = rows / batch_size, ``num_epochs: 1``)
changed, and written once: both engines read the same file. Each engine runs alone, in its own
child process, one after the other: CPU seconds and peak memory (``ru_maxrss``) are that
child's. Training examples/s: EasyRec's from TensorFlow's ``global_step/sec`` log lines times the
batch size (the training loop only), fusionrec's from its training report (the training loop
only). AUC: EasyRec's from its own predictor on its own export over the evaluation rows
(exact, scikit-learn's ``roc_auc_score``); fusionrec's from its evaluation (exact). Threads:
each engine's own default (EasyRec: TensorFlow's inter/intra-op pools over every core;
fusionrec: torch's intra-op threads, one per core).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from fusionrec.ctr.trainer import SEED
from fusionrec.datasets import TAOBAO_COLUMNS

SAMPLES = ROOT.parent / "shared" / "easyrec" / "configs"
CONFIGS = {
    "wide_and_deep_din": ROOT / "examples" / "ctr" / "taobao_wide_and_deep.config",
    "din_on_taobao": SAMPLES / "din_on_taobao.config",
    "dcn_on_taobao": SAMPLES / "dcn_on_taobao.config",
    "dbmtl_on_taobao": SAMPLES / "dbmtl_on_taobao.config",
    "multi_tower_on_taobao": SAMPLES / "multi_tower_on_taobao.config",
    "mmoe_on_taobao": SAMPLES / "mmoe_on_taobao.config",
    "esmm_on_taobao": SAMPLES / "esmm_on_taobao.config",
    "dcn_backbone_on_taobao": SAMPLES / "dcn_backbone_on_taobao.config",
}


def edited_config(source: Path, train: Path, test: Path, model_dir: Path, n_rows: int) -> str:
    """The config's text with the paths and the length (one epoch) changed, nothing else;
    ``model_dir`` emptied (a run starts from scratch)."""
    shutil.rmtree(model_dir, ignore_errors=True)
    text = source.read_text()
    batch = int(re.search(r"batch_size:\s*(\d+)", text).group(1))
    steps = math.ceil(n_rows / batch)
    text = re.sub(r'^train_input_path:.*$', f'train_input_path: "{train}"', text, count=1, flags=re.MULTILINE)
    text = re.sub(r'^eval_input_path:.*$', f'eval_input_path: "{test}"', text, count=1, flags=re.MULTILINE)
    text = re.sub(r'^model_dir:.*$', f'model_dir: "{model_dir}"', text, count=1, flags=re.MULTILINE)
    # train_config's num_steps (the first one: a backbone block may have its own num_steps)
    text = re.sub(r"(train_config\s*\{.*?)num_steps:\s*\d+", rf"\g<1>num_steps: {steps}", text, count=1, flags=re.DOTALL)
    text = re.sub(r"num_epochs:\s*\d+", "num_epochs: 1", text, count=1)
    return text


def run_child(argv: list[str], log: Path, env: dict | None = None, cwd: Path | None = None) -> dict:
    """Run ``argv`` alone; its wall and CPU seconds and peak memory (MB)."""
    start = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{argv[:3]} failed ({status}); the end of {log}:\n{tail}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_mb": usage.ru_maxrss / 1024}


FUSIONREC_RUNNER = """
import json, sys
from fusionrec.ctr.config import load_config
from fusionrec.ctr.trainer import Trainer
trainer = Trainer(load_config(sys.argv[1]), seed=int(sys.argv[2]))
report = trainer.train(progress=False)
print("REPORT " + json.dumps({"examples_per_sec": report["examples_per_sec"], "eval": report.get("eval") or {}}))
"""

EASYREC_PREDICT = """
import json, sys, glob
import numpy as np
from sklearn.metrics import roc_auc_score
from easy_rec.python.inference.predictor import Predictor
export_dir = sorted(glob.glob(sys.argv[1] + "/*"))[-1]
predictor = Predictor(export_dir)
columns = json.loads(sys.argv[3])
rows = [dict(zip(columns, line.rstrip("\\n").split(","))) for line in open(sys.argv[2])]
names = predictor.input_names
if names == ["features"]:  # one string placeholder (multi_placeholder: false): the fields its features use,
    # in input_fields order, joined by the separator (EasyRec's Input.create_placeholders, filter_inputs)
    from easy_rec.python.utils.config_util import get_configs_from_pipeline_file
    config = get_configs_from_pipeline_file(export_dir + "/assets/pipeline.config")
    features = list(config.feature_configs) or list(config.feature_config.features)
    used = {name for f in features for name in f.input_names}
    labels = set(config.data_config.label_fields)
    fields = [f.input_name for f in config.data_config.input_fields]
    if config.export_config.filter_inputs:
        fields = [f for f in fields if f in used]
    fields = [f for f in fields if f not in labels and f != config.data_config.sample_weight]
    inputs = [config.data_config.separator.join(r[f] for f in fields) for r in rows]
else:
    inputs = [{n: r[n] for n in names} for r in rows]
outputs = predictor.predict(inputs, batch_size=4096)
labels = np.array([int(r["clk"]) for r in rows])
keys = sorted(k for k in outputs[0] if k.startswith("probs"))
key = "probs" if "probs" in keys else ("probs_ctr" if "probs_ctr" in keys else keys[0])
proba = np.array([float(o[key]) for o in outputs])
print("AUC " + json.dumps({"key": key, "auc": float(roc_auc_score(labels, proba))}))
"""


def run_fusionrec(config: Path, log: Path, seed: int) -> dict:
    usage = run_child([sys.executable, "-c", FUSIONREC_RUNNER, str(config), str(seed)], log)
    report = json.loads(next(line for line in log.read_text().splitlines() if line.startswith("REPORT "))[7:])
    aucs = {k: v for k, v in report["eval"].items() if k.startswith("auc")}
    key = "auc" if "auc" in aucs else ("auc_ctr" if "auc_ctr" in aucs else sorted(aucs)[0])
    return {**usage, "examples_per_sec": report["examples_per_sec"], "auc": aucs[key]}


def _easyrec_steps_per_sec(text: str, log: Path) -> float:
    """Training steps per second from EasyRec's own log: between its first and last
    ``global step N:`` lines (every ``log_step_count_steps``), or, for a run shorter than that,
    from step 0's line to the last checkpoint's save."""
    stamp = r"\[(\d+-\d+-\d+ \d+:\d+:\d+,\d+)\]\[INFO\] "
    seconds = lambda s: time.mktime(time.strptime(s[:19], "%Y-%m-%d %H:%M:%S")) + int(s[20:]) / 1000
    steps = [(seconds(t), int(n)) for t, n in re.findall(stamp + r"global step (\d+):", text)]
    saved = [(seconds(t), int(n)) for t, n in re.findall(stamp + r"Saving checkpoints for (\d+) into", text)]
    if len(steps) >= 2:
        (t0, n0), (t1, n1) = steps[0], steps[-1]
    elif steps and saved:
        (t0, n0), (t1, n1) = steps[0], saved[-1]
    else:
        raise RuntimeError(f"no 'global step' lines in {log}")
    return (n1 - n0) / max(t1 - t0, 1e-9)


def run_easyrec(python: str, config: Path, model_dir: Path, test: Path, batch: int, log: Path) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "1", "CUDA_VISIBLE_DEVICES": ""}
    usage = run_child([python, "-m", "easy_rec.python.train_eval", "--pipeline_config_path", str(config)], log, env)
    rate = _easyrec_steps_per_sec(log.read_text(), log)
    export = model_dir / "export_bench"
    run_child([python, "-m", "easy_rec.python.export", "--pipeline_config_path", str(config), "--export_dir", str(export)],
              log.with_suffix(".export.log"), env)  # fmt: skip
    predict_log = log.with_suffix(".predict.log")
    run_child([python, "-c", EASYREC_PREDICT, str(export), str(test), json.dumps(TAOBAO_COLUMNS)], predict_log, env)
    auc = json.loads(next(line for line in predict_log.read_text().splitlines() if line.startswith("AUC "))[4:])
    return {**usage, "examples_per_sec": batch * rate, "auc": auc["auc"]}


def summarize(engine: str, runs: list[dict]) -> dict:
    """One engine's columns over its runs: mean ex/s, AUC and CPU s, the AUC range, peak MB."""
    aucs = [r["auc"] for r in runs]
    return {f"{engine} ex/s": sum(r["examples_per_sec"] for r in runs) / len(runs), f"{engine} AUC": sum(aucs) / len(aucs),
            f"{engine} AUC range": f"{min(aucs):.4f}-{max(aucs):.4f}" if len(aucs) > 1 else f"{aucs[0]:.4f}",
            f"{engine} CPU s": sum(r["cpu_s"] for r in runs) / len(runs), f"{engine} MB": max(r["peak_mb"] for r in runs)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--easyrec-python", default=os.environ.get("EASYREC_PYTHON"))
    parser.add_argument("--train-rows", type=int, default=1_000_000)
    parser.add_argument("--eval-rows", type=int, default=50_000)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--easyrec-runs", type=int, default=1, help="EasyRec sets no seed: its AUC spread over runs")
    parser.add_argument("--fusionrec-seeds", type=int, default=1, help="fusionrec runs with seeds SEED, SEED + 1, ...")
    parser.add_argument("--work-dir", help="keep the data, configs and logs here")
    parser.add_argument("--markdown", help="append the table to this file")
    args = parser.parse_args()

    from _report import write_markdown_block
    from rich.console import Console
    from rich.table import Table

    from fusionrec.datasets import make_taobao

    console = Console(width=220)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="ctr_vs_easyrec_"))
    work.mkdir(parents=True, exist_ok=True)
    train, test = work / "train.csv", work / "test.csv"
    if not train.exists():
        make_taobao(args.train_rows, seed=0, path=train)
        make_taobao(args.eval_rows, seed=1, path=test)
    rows = []
    for name in args.configs.split(","):
        source = CONFIGS[name]
        batch = int(re.search(r"batch_size:\s*(\d+)", source.read_text()).group(1))
        ours = []
        for k in range(args.fusionrec_seeds):
            ours_dir = work / f"{name}.fusionrec{k}"
            ours_config = work / f"{name}.fusionrec{k}.config"
            ours_config.write_text(edited_config(source, train, test, ours_dir, args.train_rows))
            try:
                ours.append(run_fusionrec(ours_config, work / f"{name}.fusionrec{k}.log", SEED + k))
            except RuntimeError as error:  # one config's failure is reported in its row; the others still run
                failure = f"failed: {str(error).splitlines()[-1][:120]}"
        if not ours:
            rows.append({"config": name, "fusionrec ex/s": failure})
            continue
        row = {"config": name, **summarize("fusionrec", ours)}
        if args.easyrec_python:
            theirs = []
            for run in range(args.easyrec_runs):
                er_dir = work / f"{name}.easyrec{run}"
                er_config = work / f"{name}.easyrec{run}.config"
                er_config.write_text(edited_config(source, train, test, er_dir, args.train_rows))
                try:
                    theirs.append(run_easyrec(args.easyrec_python, er_config, er_dir, test, batch, work / f"{name}.easyrec{run}.log"))
                except RuntimeError as error:
                    row["EasyRec ex/s"] = f"failed: {str(error).splitlines()[-1][:120]}"
            if theirs:
                row.update(summarize("EasyRec", theirs))
                row.update({"speed ratio": round(row["fusionrec ex/s"] / row["EasyRec ex/s"], 2),
                            "AUC diff": round(row["fusionrec AUC"] - row["EasyRec AUC"], 4)})
        rows.append(row)
        console.print(row)
    title = (f"fusionrec beside EasyRec, {args.train_rows:,} training rows (1 epoch), {args.eval_rows:,} evaluation rows, "
             f"{os.cpu_count()} cores, runs per config: EasyRec {args.easyrec_runs}, fusionrec {args.fusionrec_seeds} (seeds)")  # fmt: skip
    columns = list(dict.fromkeys(k for row in rows for k in row))
    cell = lambda v: f"{v:,.0f}" if isinstance(v, float) and v > 10 else (f"{v:.4f}" if isinstance(v, float) else str(v))
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(cell(row.get(c, "")) for c in columns))
    console.print(table)
    if args.markdown:
        lines = [f"**{title}**", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
        write_markdown_block(Path(args.markdown), "ctr_vs_easyrec", "ctr_vs_easyrec.py", lines)

if __name__ == "__main__":
    main()

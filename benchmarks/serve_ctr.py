"""fusionrec serve under load on a bare `fusionrec ctr export`, beside a lean handler.

    python benchmarks/serve_ctr.py [--work /tmp/serve_ctr] [--train-rows 200000] [--clients 8]
        [--requests 1600] [--rows 100] [--workers 2] [--repeats 3] [--markdown docs/benchmarks.md]

The model: fusionrec's example of EasyRec's taobao W&D + DIN config
(``examples/ctr/taobao_wide_and_deep.config``) trained one epoch on ``make_taobao`` rows and
exported with ``fusionrec ctr export``. The load: ``--clients`` threads, each on its own
keep-alive connection, sending ``--rows``-row JSON requests of held-out rows back to back
(after untimed warm-up requests), so latency includes queueing behind the other clients.
Three servers, one at a time, each with ``--workers`` processes on the machine's cores:

- ``fusionrec serve``: the product (request limits, row validation by the model's reader,
  deadlines, metrics);
- a lean handler: FastAPI on uvicorn (``--workers``), ``json.loads`` -> a pyarrow table ->
  the export's TorchScript module -> JSON, no validation, no limits: the bound of what this
  machine allows with the same model and web stack;
- in-process: the export's scorer called directly, one caller, no HTTP (the model's own cost).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _serving import free_port, load, wait_healthy

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "ctr" / "taobao_wide_and_deep.config"

LEAN_APP = '''
import json, os
import numpy as np, pyarrow as pa, torch
from fastapi import FastAPI, Request
from fastapi.responses import Response
from fusionrec.ctr.data import table_to_columns
from fusionrec.ctr.export import load_export

torch.set_num_threads(1)
module, config = load_export(os.environ["LEAN_EXPORT"])
fields = [f for f in config.data_config.input_fields if f.input_name not in config.data_config.label_fields]
types = {"STRING": pa.string(), "INT32": pa.int64(), "INT64": pa.int64(), "FLOAT": pa.float64(), "DOUBLE": pa.float64()}
schema = pa.schema([(f.input_name, types.get(f.input_type, pa.string())) for f in fields])
app = FastAPI()

@app.post("/predict")
async def predict(request: Request):
    rows = json.loads(await request.body())["rows"]
    table = pa.Table.from_pylist(rows, schema=schema)
    with torch.no_grad(), torch.jit.optimized_execution(False):
        proba = module(table_to_columns(table, fields))
    return Response(json.dumps({"scores": proba.double().tolist()}), media_type="application/json")

@app.get("/health")
async def health():
    return {"status": "ok"}
'''


def summary(latencies, wall: float, failures: list[int], rows_per_request: int) -> dict:
    ms = np.asarray(latencies) * 1000
    return {"requests": len(ms), "p50 ms": np.percentile(ms, 50), "p90 ms": np.percentile(ms, 90),
            "p99 ms": np.percentile(ms, 99), "rows/s": len(ms) * rows_per_request / wall, "non-200": len(failures)}  # fmt: skip


def serve_and_load(argv: list[str], port: int, bodies, args, env=None, cwd=None) -> dict:
    process = subprocess.Popen(argv, start_new_session=True, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(port, process)
        return summary(*load(port, bodies, args.clients, args.requests, 4 * args.clients), args.rows)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="/tmp/serve_ctr")
    parser.add_argument("--train-rows", type=int, default=200_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=1600)
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each server, taking turns")
    parser.add_argument("--markdown")
    args = parser.parse_args()

    import pyarrow as pa
    import pyarrow.csv as pacsv
    from rich.console import Console
    from rich.table import Table

    from _report import write_markdown_block
    from fusionrec.ctr.config import load_config
    from fusionrec.ctr.export import export
    from fusionrec.ctr.trainer import Trainer
    from fusionrec.datasets import TAOBAO_COLUMNS, make_taobao
    from fusionrec.pipeline.scorers import open_scorer

    console = Console(width=160)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    export_dir = work / "export"
    if not (export_dir / "model.pt").exists():
        make_taobao(args.train_rows, seed=0, path=work / "train.csv")
        make_taobao(20_000, seed=1, path=work / "test.csv")
        edits = {"train_input_path": str(work / "train.csv"), "eval_input_path": None, "model_dir": str(work / "model"),
                 "train_config.num_steps": 0, "data_config.num_epochs": 1}  # fmt: skip
        trainer = Trainer(load_config(CONFIG, json.dumps(edits)))
        trainer.train(progress=False)
        export(trainer, export_dir)
    table = pacsv.read_csv(work / "test.csv", read_options=pacsv.ReadOptions(column_names=TAOBAO_COLUMNS),
                           convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in TAOBAO_COLUMNS},
                                                                strings_can_be_null=False))  # fmt: skip
    rows = table.drop_columns(["clk", "buy"]).to_pylist()
    for row in rows:
        row["price"] = int(row["price"])  # a JSON number, as a client sends it
    batches = [rows[i : i + args.rows] for i in range(0, len(rows) - args.rows + 1, args.rows)]
    bodies = [json.dumps({"rows": b}).encode() for b in batches]

    # the servers take turns, --repeats times each: on 2 cores shared with the load generator one run
    # of the same server ranged 13,000-21,000 rows/s; the table gives each server's median run
    # (by rows/s) and the range of its runs
    lean_dir = work / "lean"
    lean_dir.mkdir(exist_ok=True)
    (lean_dir / "lean_app.py").write_text(LEAN_APP)
    runs: dict[str, list[dict]] = {"fusionrec serve": [], "lean handler (FastAPI + the module, no validation)": []}
    for _ in range(args.repeats):
        port = free_port()
        runs["fusionrec serve"].append(serve_and_load(
            [sys.executable, "-m", "fusionrec.cli", "serve", "--saved_model_dir", str(export_dir), "--port", str(port),
             "--workers", str(args.workers), "--max_pending", "64"], port, bodies, args))  # fmt: skip
        port = free_port()
        runs["lean handler (FastAPI + the module, no validation)"].append(serve_and_load(
            [sys.executable, "-m", "uvicorn", "lean_app:app", "--port", str(port), "--workers", str(args.workers),
             "--log-level", "warning"], port, bodies, args, env={**os.environ, "LEAN_EXPORT": str(export_dir)}, cwd=lean_dir))  # fmt: skip
    results = {}
    for name, done in runs.items():
        ordered = sorted(done, key=lambda r: r["rows/s"])
        results[name] = {**ordered[len(ordered) // 2],
                         "rows/s range": f"{ordered[0]['rows/s']:,.0f}-{ordered[-1]['rows/s']:,.0f}",
                         "p99 range": f"{min(r['p99 ms'] for r in done):.1f}-{max(r['p99 ms'] for r in done):.1f}"}  # fmt: skip
    scorer = open_scorer(export_dir)
    timings = []
    for body in bodies[:200]:
        start = time.perf_counter()
        text = pa.table({n: pa.array([None if r[n] is None else str(r[n]) for r in json.loads(body)["rows"]], pa.string())
                         for n in scorer.required})  # fmt: skip
        scorer.score(scorer.request_reader().read_text_table(text, "request"))
        timings.append(time.perf_counter() - start)
    ms = np.asarray(timings[20:]) * 1000
    results["in-process scorer (one caller, no HTTP)"] = {"requests": len(ms), "p50 ms": np.percentile(ms, 50),
                                                         "p90 ms": np.percentile(ms, 90), "p99 ms": np.percentile(ms, 99),
                                                         "rows/s": len(ms) * args.rows / (ms.sum() / 1000), "non-200": 0,
                                                         "rows/s range": "", "p99 range": ""}  # fmt: skip
    title = (f"fusionrec serve on a bare ctr export (taobao W&D + DIN), {args.clients} concurrent clients, {args.rows}-row "
             f"JSON requests, {args.workers} workers on {os.cpu_count()} cores, median of {args.repeats} runs")  # fmt: skip
    columns = ["requests", "p50 ms", "p90 ms", "p99 ms", "rows/s", "non-200", "rows/s range", "p99 range"]
    view = Table(title=title)
    view.add_column("server")
    for c in columns:
        view.add_column(c, justify="right")
    cell = lambda v: f"{v:,.1f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = [f"### {title}", "", "| server | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, result in results.items():
        view.add_row(name, *(cell(result[c]) for c in columns))
        lines.append(f"| {name} | " + " | ".join(cell(result[c]) for c in columns) + " |")
    console.print(view)
    if args.markdown:
        write_markdown_block(Path(args.markdown), "serve_ctr", "serve_ctr.py", lines + [""])


if __name__ == "__main__":
    main()

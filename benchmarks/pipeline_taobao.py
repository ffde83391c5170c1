"""The one-config pipeline on generated taobao click logs, and its server under load.

    python benchmarks/pipeline_taobao.py [--suite all|auc|serve|faults] [--train-rows 300000] [--test-rows 100000]
                                         [--work DIR] [--resume] [--markdown docs/benchmarks.md]

auc: generates make_taobao logs (a training file, seed 0, and a held-out day, seed 1: 3% new
users and ads), runs examples/pipeline/taobao_pipeline.yaml on them unchanged (trees, EasyRec's
W&D + DIN config, DIN, and the W&D on the trees' out-of-fold leaves, stacked), and prints every
model's and the fusion's test AUC with its standard error (Hanley & McNeil) beside the oracle's
(the true click probabilities), and the two differences the pipeline is for, each with the
standard error of the paired difference (bootstrap over test rows, 200 resamples).

serve: starts `fusionrec serve` on that export (as a user would: a separate process, 2 workers),
sends 100-row JSON batches from 8 concurrent clients (keep-alive connections) and reports
latency percentiles and rows/s, beside the same batches scored in-process by PipelineScorer
(one caller, one batch at a time: what the models cost without HTTP and without queueing).

faults: the same export served with `--timeout_seconds 2`: the server's resident memory
(supervisor and workers) before and after 1,000 rejected requests of 3-9 MB; 20 concurrent
10,000-row requests, then how soon after that burst a one-row request is answered; the export
digest each worker reports. `--before-src DIR` runs the same against the fusionrec in DIR (a
checkout of an earlier commit's src) in the same invocation (docs/reliability.md has every
case and its test).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_markdown_block  # noqa: E402
from _serving import free_port, load, wait_healthy  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "pipeline" / "taobao_pipeline.yaml"
N_CLIENTS, BATCH_ROWS = 8, 100


def paired_se(y, a, b, n_boot=200, seed=0) -> float:
    """Bootstrap standard error of AUC(a) - AUC(b) over the same resampled rows."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        rows = rng.integers(0, len(y), len(y))
        diffs.append(roc_auc_score(y[rows], a[rows]) - roc_auc_score(y[rows], b[rows]))
    return float(np.std(diffs, ddof=1))


def suite_auc(args, console, work: Path) -> list[str]:
    import pyarrow as pa
    from sklearn.metrics import roc_auc_score

    from fusionrec.datasets import make_taobao
    from fusionrec.pipeline import PipelineRun, PipelineScorer

    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    make_taobao(args.train_rows, 0, data / "taobao_train_data")
    test = make_taobao(args.test_rows, 1, data / "taobao_test_data")
    os.chdir(work)  # the example's paths are relative to the working directory, as EasyRec's
    if not args.resume:
        shutil.rmtree(work / "experiments", ignore_errors=True)
    result = PipelineRun.from_config(CONFIG).train()
    # the fits' own time (a resumed run re-uses finished fits; their seconds are recorded)
    seconds = sum(sum(per_fold.values()) for per_fold in result["seconds"].values())
    y = test.table.column("clk").to_numpy().astype(float)
    oracle = roc_auc_score(y, test.click_proba)
    scorer = PipelineScorer(work / "experiments" / "taobao_pipeline" / "export")
    reader = scorer.reader()
    typed = pa.concat_tables(list(reader.iter_tables([str(data / "taobao_test_data")])))
    scores, fused = scorer.score(typed)
    names = scorer.names
    test_metrics = result["test"]
    best = max(names, key=lambda n: test_metrics[n]["auc"])
    by_name = dict(zip(names, scores.T))
    rows = [(name, test_metrics[name]["auc"], test_metrics[name]["auc_se"], test_metrics[name]["gauc"],
             test_metrics[name]["logloss"], result["out_of_fold"][name]["auc"]) for name in [*names, "fusion"]]  # fmt: skip
    diffs = [("fusion - best single (" + best + ")", test_metrics["fusion"]["auc"] - test_metrics[best]["auc"],
              paired_se(y, fused, by_name[best]))]  # fmt: skip
    if "leaf_wide_and_deep" in by_name and "wide_and_deep" in by_name:
        diffs.append(("leaf_wide_and_deep - wide_and_deep",
                      test_metrics["leaf_wide_and_deep"]["auc"] - test_metrics["wide_and_deep"]["auc"],
                      paired_se(y, by_name["leaf_wide_and_deep"], by_name["wide_and_deep"])))  # fmt: skip
    table = Table(title=f"pipeline on {args.train_rows:,} taobao rows, test {args.test_rows:,} rows (a later day), fits {seconds:.0f} s")
    for column in ("model", "test AUC", "AUC s.e.", "test GAUC", "test logloss", "out-of-fold AUC"):
        table.add_column(column, justify="left" if column == "model" else "right")
    lines = [f"### The taobao pipeline: {args.train_rows:,} training rows, {args.test_rows:,} test rows of a later day, "
             f"examples/pipeline/taobao_pipeline.yaml, 2 threads, {seconds:.0f} s of fits (20 = 4 models x (4 folds + all rows))", "",
             "| model | test AUC | AUC s.e. | test GAUC | test logloss | out-of-fold AUC |", "|---|---|---|---|---|---|"]  # fmt: skip
    for name, auc, se, gauc, logloss, oof in rows:
        cells = [f"{auc:.4f}", f"{se:.4f}", f"{gauc:.4f}", f"{logloss:.4f}", f"{oof:.4f}"]
        table.add_row(name, *cells)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table.add_row("oracle (true click probabilities)", f"{oracle:.4f}", "", "", "", "")
    lines.append(f"| oracle (true click probabilities) | {oracle:.4f} | | | | |")
    lines += ["", "| difference | test AUC | s.e. of the paired difference (bootstrap) | AUC s.e. (Hanley-McNeil) |",
              "|---|---|---|---|"]
    for name, diff, se in diffs:
        lines.append(f"| {name} | {diff:+.4f} | {se:.4f} | {test_metrics['fusion']['auc_se']:.4f} |")
        console.print(f"{name}: {diff:+.4f} (paired s.e. {se:.4f})")
    console.print(table)
    lines.append("")
    lines.append(f"Fusion: {result['fusion']['kind']}, coefficients "
                 + ", ".join(f"{n} {c:.3f}" for n, c in zip(result["fusion"]["models"], result["fusion"].get("coef", []))))  # fmt: skip
    lines.append("")
    return lines


# ---------------------------------------------------------------- serve
def _request_rows(path: Path, names: list[str], n: int) -> list[dict]:
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(path, read_options=pacsv.ReadOptions(column_names=names),
                           convert_options=pacsv.ConvertOptions(column_types={c: "string" for c in names},
                                                                strings_can_be_null=False))  # fmt: skip
    return table.slice(0, n).to_pylist()


def suite_serve(args, console, work: Path) -> list[str]:
    import pyarrow as pa

    from fusionrec.pipeline import PipelineScorer

    export = work / "experiments" / "taobao_pipeline" / "export"
    if not (export / "manifest.json").exists():
        raise SystemExit(f"{export}: no export; run --suite auc first (or all)")
    scorer = PipelineScorer(export)
    names = [f.input_name for f in scorer.data_config.input_fields]
    rows = _request_rows(work / "data" / "taobao_test_data", names, N_CLIENTS * BATCH_ROWS * 4)
    batches = [rows[i : i + BATCH_ROWS] for i in range(0, len(rows), BATCH_ROWS)]
    # in-process: the same batches, text rows -> reader -> every model -> fusion
    in_process = []
    for batch in batches * 2:
        start = time.perf_counter()
        text = pa.table({n: pa.array([r[n] for r in batch], pa.string()) for n in names})
        scorer.score(scorer.request_reader().read_text_table(text, "request"))
        in_process.append(time.perf_counter() - start)
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "fusionrec.cli", "serve", "--saved_model_dir", str(export),
                                "--port", str(port), "--workers", "2"], start_new_session=True)  # fmt: skip
    try:
        wait_healthy(port, process)
        bodies = [json.dumps({"rows": b}).encode() for b in batches]
        latencies, wall, failures = load(port, bodies, N_CLIENTS, args.serve_requests, 8)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    served = np.asarray(latencies) * 1000
    local = np.asarray(in_process) * 1000
    n_rows = len(latencies) * BATCH_ROWS
    table = Table(title=f"fusionrec serve, 2 workers, {N_CLIENTS} concurrent clients, {BATCH_ROWS}-row JSON batches")
    for column in ("", "requests", "p50 ms", "p90 ms", "p99 ms", "rows/s"):
        table.add_column(column, justify="right")
    served_row = [f"{len(served)}", *(f"{np.percentile(served, q):.1f}" for q in (50, 90, 99)), f"{n_rows / wall:,.0f}"]
    local_row = [f"{len(local)}", *(f"{np.percentile(local, q):.1f}" for q in (50, 90, 99)),
                 f"{len(local) * BATCH_ROWS / np.sum(in_process):,.0f}"]  # fmt: skip
    table.add_row("HTTP server", *served_row)
    table.add_row("in-process PipelineScorer (one caller, sequential)", *local_row)
    console.print(table)
    if failures:
        console.print(f"[red]{len(failures)} requests failed: {sorted(set(failures))}[/red]")
    return [f"### fusionrec serve under load: the taobao pipeline export (4 models + stacking), {N_CLIENTS} concurrent "
            f"clients, {BATCH_ROWS}-row JSON batches, 2 workers on 2 cores", "",
            "| | requests | p50 ms | p90 ms | p99 ms | rows/s | non-200 |", "|---|---|---|---|---|---|---|",
            "| HTTP server | " + " | ".join(served_row) + f" | {len(failures)} |",
            "| in-process PipelineScorer (one caller, sequential) | " + " | ".join(local_row) + " | |", ""]  # fmt: skip


# ---------------------------------------------------------------- faults
def _rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (the server's supervisor and workers)."""
    total = 0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            with open(f"/proc/{current}/status") as status:
                total += next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))
            with open(f"/proc/{current}/task/{current}/children") as children:
                pids += [int(c) for c in children.read().split()]
        except (FileNotFoundError, StopIteration):
            pass
    return total / 1024


def _post(port: int, body, content_type: str = "application/json", timeout: float = 120) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        chunked = not isinstance(body, bytes)
        headers = {"Content-Type": content_type, **({"Transfer-Encoding": "chunked"} if chunked else {})}
        connection.request("POST", "/predict", body, headers, encode_chunked=chunked)
        response = connection.getresponse()
        response.read()
        return response.status, dict(response.getheaders())
    except OSError as error:  # a reset while the client still sends counts as an answer of its own
        return type(error).__name__, {}
    finally:
        connection.close()


def _faults_run(export: Path, rows: list[dict], source: Path | None, console) -> dict:
    """One server (the current fusionrec, or the one in ``source``) through the hostile cases."""
    from collections import Counter

    env = {**os.environ, **({"PYTHONPATH": str(source)} if source else {})}
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "fusionrec.cli", "serve", "--saved_model_dir", str(export), "--port",
                                str(port), "--workers", "2", "--timeout_seconds", "2"], start_new_session=True, env=env)  # fmt: skip
    try:
        wait_healthy(port, process)
        digests = set()  # (worker, digest) pairs; the kernel hands each connection to some worker
        for _ in range(200):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/health")
            health = json.loads(connection.getresponse().read())
            digests.add((health.get("worker"), health.get("export_digest")))  # (a fusionrec before the digest has neither)
            if len(digests) == 2 or health.get("worker") is None:
                break
        for _ in range(8):  # warm-up: compile paths in both workers
            _post(port, json.dumps({"rows": rows[:100]}).encode())
        # rejected bodies first (a burst's abandoned work would move the memory)
        pad = "x" * 3_000_000
        kinds = [
            (b"x" * 8_400_000, "application/json"),  # 413 declared (the limit is 8 MiB)
            (json.dumps({"rows": [{**rows[0], "user_id": pad, "price": "cheap"}]}).encode(), "application/json"),  # 422
            (b"[" + pad.encode(), "application/json"),  # 400
        ]
        before = _rss_mb(process.pid)
        counts: Counter = Counter()
        for i in range(1000):
            if i % 4 == 3:  # chunked over the limit: read up to it, then 413
                counts[_post(port, iter([b" " * 1_000_000] * 9))[0]] += 1
            else:
                counts[_post(port, *kinds[i % 4])[0]] += 1
        after = _rss_mb(process.pid)
        # a burst: 20 concurrent 10,000-row requests, then one-row requests until one is answered
        big = json.dumps({"rows": rows}).encode()
        one_row = json.dumps({"rows": rows[:1]}).encode()
        statuses: list = []
        threads = [threading.Thread(target=lambda: statuses.append(_post(port, big)[0])) for _ in range(20)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        burst_end = time.perf_counter()
        first_status, tries = None, 0
        while first_status != 200 and time.perf_counter() - burst_end < 300:
            first_status, _ = _post(port, one_row)
            tries += 1
        recovered = time.perf_counter() - burst_end
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    result = {
        "burst": ", ".join(f"{n} x {code}" for code, n in sorted(Counter(map(str, statuses)).items())),
        "burst_seconds": burst_end - started, "recovered": recovered, "tries": tries,
        "rejected": ", ".join(f"{n} x {code}" for code, n in sorted(counts.items(), key=str)),
        "memory": (before, after), "digests": len({d for _, d in digests if d}),
        "workers_reported": len({w for w, _ in digests if w}),
    }  # fmt: skip
    console.print(f"{source or 'this fusionrec'}: {result}")
    return result


def suite_faults(args, console, work: Path) -> list[str]:
    """The cases of the server's reliability page that have a number, for this fusionrec and,
    with ``--before-src``, the fusionrec whose ``src`` that is (the same client, export and
    machine): a burst of large requests against a 2 s limit and how soon a one-row request is
    answered after it; the server's resident memory over 1,000 rejected bodies."""
    from fusionrec.pipeline import PipelineScorer

    export = work / "experiments" / "taobao_pipeline" / "export"
    if not (export / "manifest.json").exists():
        raise SystemExit(f"{export}: no export; run --suite auc first (or all)")
    names = [f.input_name for f in PipelineScorer(export).data_config.input_fields]
    rows = _request_rows(work / "data" / "taobao_test_data", names, 10_000)
    runs = {"this fusionrec": _faults_run(export, rows, None, console)}
    if args.before_src:
        runs[f"before (`{args.before_src}`)"] = _faults_run(export, rows, args.before_src.resolve(), console)
    columns = list(runs)

    def row(case: str, cell) -> str:
        return f"| {case} | " + " | ".join(cell(r) for r in runs.values()) + " |"

    return ["### fusionrec serve under hostile load: the taobao pipeline export, 2 workers, `--timeout_seconds 2`", "",
            "| case | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|",
            row("1,000 rejected requests of 3-9 MB (400, 413 declared and streamed, 422): server memory (supervisor and "
                "workers)", lambda r: f"{r['memory'][0]:,.0f} -> {r['memory'][1]:,.0f} MB ({r['rejected']})"),
            row("20 concurrent 10,000-row requests", lambda r: f"{r['burst']} in {r['burst_seconds']:.1f} s"),
            row("a one-row request after that burst", lambda r: f"answered {r['recovered']:.2f} s after it ({r['tries']} tries)"),
            row("export digest per worker (`/health`)", lambda r: "not reported" if r["workers_reported"] == 0 else
                f"{r['digests']} digest across {r['workers_reported']} workers"),
            ""]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=("all", "auc", "serve", "faults"), default="all")
    parser.add_argument("--train-rows", type=int, default=300_000)
    parser.add_argument("--test-rows", type=int, default=100_000)
    parser.add_argument("--serve-requests", type=int, default=800)
    parser.add_argument("--work", type=Path, default=Path("/tmp/fusionrec_pipeline_bench"))
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--resume", action="store_true", help="keep a finished or interrupted run in --work and resume it")
    parser.add_argument("--before-src", type=Path, help="faults: also serve with the fusionrec of this src directory "
                                                        "(a checkout of an earlier commit), for a before/after table")
    args = parser.parse_args()
    console = Console()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    markdown = args.markdown.resolve() if args.markdown else None
    if args.suite in ("all", "auc"):
        lines = suite_auc(args, console, work)
        if markdown:
            # the default held-out day has its block; a larger day (a smaller AUC standard error) its own
            name = "pipeline_auc" if args.test_rows == 100_000 else f"pipeline_auc_{args.test_rows}_test_rows"
            write_markdown_block(markdown, name, "pipeline_taobao.py", lines)
    if args.suite in ("all", "serve"):
        lines = suite_serve(args, console, work)
        if markdown:
            write_markdown_block(markdown, "pipeline_serve", "pipeline_taobao.py", lines)
    if args.suite in ("all", "faults"):
        lines = suite_faults(args, console, work)
        if markdown:
            write_markdown_block(markdown, "pipeline_serve_faults", "pipeline_taobao.py", lines)


if __name__ == "__main__":
    main()

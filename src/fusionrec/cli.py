"""The ``fusionrec`` command.

    fusionrec gbdt train --train train.csv --label y [--valid valid.csv] [--param max_depth=6 ...]
                         [--num-rounds 100] [--early-stopping-rounds 10] --model-out model.json
    fusionrec gbdt predict --model model.json --input test.csv --output pred.csv [--margin]
    fusionrec fuse --method rank --output fused.csv a.csv b.csv [--weights 0.3,0.7] [--id-col id] [--pred-col pred]
    fusionrec fuse --method weighted --output fused.csv a.csv b.csv --optimize auc --oof a_oof.csv b_oof.csv
                   --labels y.csv
    fusionrec train pipeline.yaml [--run_dir DIR]          (trees + deep models, fused out of fold, exported)
    fusionrec export --pipeline_config_path pipeline.yaml --export_dir DIR
    fusionrec predict --saved_model_dir DIR --input_path in.csv --output_path out.csv [--model_scores]
    fusionrec serve --saved_model_dir DIR [--port 8000] [--workers N (default: one per core)]
    fusionrec version

Tables are read with pyarrow (CSV with a header row, or Parquet by extension).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fusionrec import __version__
from fusionrec.errors import FusionrecError


def _read_table(path: str):
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    file = Path(path)
    if not file.exists():
        raise FusionrecError(f"{path}: file does not exist")
    try:
        if file.suffix in (".parquet", ".pq"):
            return pq.read_table(file)
        return pacsv.read_csv(file)
    except Exception as exc:  # pyarrow raises its own types; name the file
        raise FusionrecError(f"{path}: cannot be read as a table ({exc})") from None


def _checked_numeric(table, path: str):
    """A text cell in a CSV column (pyarrow then reads the whole column as text) is named by
    its column, line and value, as the CTR reader names them."""
    import pyarrow as pa

    for name in table.column_names:
        column = table.column(name)
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            continue
        for row, value in enumerate(column.to_pylist()):
            if value is None:
                continue
            try:
                float(value)
            except ValueError:
                where = f"line {_csv_line_of_row(path, row)}" if not path.endswith((".parquet", ".pq")) else f"row {row + 1}"
                raise FusionrecError(
                    f"{path} {where}, column {name!r}: {value!r} is not a number (boosted trees take numeric columns; "
                    "encode strings and categories as numbers first)"
                ) from None
    return table


def _csv_line_of_row(path: str, row: int) -> int | str:
    """The line of the row-th data row of a headed CSV file (pyarrow skips blank lines)."""
    with open(path, "rb") as handle:
        seen = -1
        for number, line in enumerate(handle, start=1):
            if number == 1 or not line.strip(b"\r\n"):
                continue
            seen += 1
            if seen == row:
                return number
    return "?"


def _split_label(table, label: str, path: str):
    if label not in table.column_names:
        raise FusionrecError(f"{path}: label column {label!r} not found; columns are {table.column_names}")
    y = table.column(label).to_numpy(zero_copy_only=False)
    return table.drop([label]), y


def _parse_params(items: list[str]) -> dict:
    params = {}
    for item in items:
        if "=" not in item:
            raise FusionrecError(f"--param {item!r}: expected name=value")
        name, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        params[name.strip()] = value
    return params


def _gbdt_train(args) -> int:
    from fusionrec._atomic import check_writable_file
    from fusionrec.gbdt import Dataset, train
    from fusionrec.gbdt.params import dataset_max_bin

    check_writable_file(args.model_out, "--model-out")
    params = _parse_params(args.param)
    table, y = _split_label(_checked_numeric(_read_table(args.train), args.train), args.label, args.train)
    dtrain = Dataset(table, y, max_bin=dataset_max_bin(params))
    evals = [(dtrain, "train")]
    if args.valid:
        valid_table, valid_y = _split_label(_checked_numeric(_read_table(args.valid), args.valid), args.label, args.valid)
        evals.append((Dataset(valid_table, valid_y, reference=dtrain), "valid"))
    booster = train(
        params, dtrain, args.num_rounds, evals=evals, early_stopping_rounds=args.early_stopping_rounds,
        verbose_eval=args.verbose_eval,
    )  # fmt: skip
    booster.save_model(args.model_out)
    print(f"saved {booster.num_boosted_rounds()} rounds to {args.model_out}")
    return 0


def _gbdt_predict(args) -> int:
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from fusionrec._atomic import atomic_write_bytes
    from fusionrec.gbdt import Booster

    booster = Booster.load_model(args.model)
    table = _read_table(args.input)
    if booster.feature_names is not None:
        missing = [n for n in booster.feature_names if n not in table.column_names]
        if missing:
            raise FusionrecError(f"{args.input}: columns {missing} of the model are missing")
        table = table.select(booster.feature_names)
    _checked_numeric(table, args.input)
    prediction = np.asarray(booster.predict(table, output_margin=args.margin))
    columns = {"prediction": prediction} if prediction.ndim == 1 else {f"prediction_{k}": prediction[:, k] for k in range(prediction.shape[1])}
    sink = pa.BufferOutputStream()
    pacsv.write_csv(pa.table(columns), sink)
    atomic_write_bytes(args.output, sink.getvalue().to_pybytes(), checksum=False)
    print(f"wrote {len(prediction)} predictions to {args.output}")
    return 0


def _ctr_trainer(args):
    from fusionrec.ctr.config import load_config
    from fusionrec.ctr.trainer import Trainer

    return Trainer(load_config(args.pipeline_config_path, args.edit_config_json), args.model_dir,
                   batch_norm_momentum=getattr(args, "batch_norm_momentum", None))


def _ctr_train_eval(args) -> int:
    import json

    trainer = _ctr_trainer(args)
    report = trainer.train(continue_train=args.continue_train)
    if trainer.world.is_main:  # under torchrun: one summary, rank 0's
        summary = {k: v for k, v in report.items() if k != "history"}
        print(json.dumps(summary, indent=1))
    return 0


def _ctr_eval(args) -> int:
    import json
    from pathlib import Path

    trainer = _ctr_trainer(args)
    checkpoint = Path(args.checkpoint_path) if args.checkpoint_path else None
    if checkpoint is None:
        found = trainer.checkpoints()
        if not found:
            raise FusionrecError(f"model_dir {str(trainer.model_dir)!r}: no checkpoint to evaluate; train first")
        checkpoint = found[-1][1]
    print(json.dumps(trainer.evaluate(checkpoint), indent=1))
    return 0


def _ctr_export(args) -> int:
    from fusionrec.ctr.export import export

    trainer = _ctr_trainer(args)
    path = export(trainer, args.export_dir)
    print(f"exported {path}")
    return 0


def _ctr_predict(args) -> int:
    import json

    from fusionrec.ctr.export import predict

    result = predict(args.input_path, args.output_path, args.saved_model_dir, reserved_cols=args.reserved_cols,
                     output_cols=args.output_cols, input_sep=args.input_sep, output_sep=args.output_sep,
                     batch_size=args.batch_size, selected_cols=args.selected_cols,
                     require_checksums=not args.allow_missing_checksums)  # fmt: skip
    print(json.dumps(result))
    return 0


def _fuse(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from fusionrec.fusion.files import fuse_files

    weights = None
    if args.weights is not None:
        try:
            weights = [float(w) for w in args.weights.split(",")]
        except ValueError:
            raise FusionrecError(f"--weights {args.weights!r}: expected comma-separated numbers") from None
    report = fuse_files(
        args.files, args.output, method=args.method, weights=weights, id_col=args.id_col,
        pred_cols=[c.strip() for c in args.pred_col.split(",")], power=args.power, optimize=args.optimize,
        oof_paths=args.oof, labels_path=args.labels, label_col=args.label_col,
    )  # fmt: skip
    table = Table(title=f"{args.method} fusion of {len(args.files)} files, {report['rows']:,} rows -> {args.output}")
    table.add_column("file")
    table.add_column("weight", justify="right")
    if args.optimize:
        table.add_column(f"out-of-fold {report['metric']}", justify="right")
    scores = report.get("oof_model_scores", [None] * len(args.files))
    for path, weight, score in zip(args.files, report["weights"], scores):
        table.add_row(path, f"{weight:.4f}", *([f"{score:.5f}"] if args.optimize else []))
    if args.optimize:
        table.add_row("fusion", "1.0000", f"{report['oof_score']:.5f}")
    Console(stderr=True).print(table)
    return 0


def _add_fuse(sub) -> None:
    from fusionrec.fusion.combine import METHODS

    fz = sub.add_parser("fuse", help="fuse prediction files (CSV with an id column) into one")
    fz.add_argument("files", nargs="+", help="prediction files; the first one's row order is kept")
    fz.add_argument("--output", "-o", required=True, help="the fused CSV (written atomically)")
    fz.add_argument("--method", default="mean", choices=METHODS)
    fz.add_argument("--weights", help="comma-separated, one per file (default: equal)")
    fz.add_argument("--power", type=float, default=2.0, help="exponent of --method power")
    fz.add_argument("--id-col", default="id")
    fz.add_argument("--pred-col", default="pred", help="prediction column(s), comma-separated")
    fz.add_argument("--optimize", metavar="METRIC", help="fit the weights on --oof files for this metric "
                    "(auc, logloss, accuracy, mse, rmse, mae, r2)")  # fmt: skip
    fz.add_argument("--oof", nargs="+", action="extend", metavar="FILE",
                    help="out-of-fold prediction files, one per input file, same order")  # fmt: skip
    fz.add_argument("--labels", help="CSV with the id column and --label-col, for --optimize")
    fz.add_argument("--label-col", default="label")
    fz.set_defaults(run=_fuse)


def _predict_flags() -> argparse.ArgumentParser:
    """EasyRec's predict flags, shared by `ctr predict` and the pipeline's `predict`."""
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument("--input_path", required=True)
    flags.add_argument("--output_path", required=True)
    flags.add_argument("--saved_model_dir", required=True)
    flags.add_argument("--reserved_cols", default="ALL_COLUMNS")
    flags.add_argument("--output_cols", default="ALL_COLUMNS")
    flags.add_argument("--input_sep")
    flags.add_argument("--output_sep", default="\x01", help="EasyRec's default: the byte 0x01")
    flags.add_argument("--batch_size", type=int, default=1024)
    flags.add_argument("--selected_cols", help="headerless CSV: 0-based column of each non-label input field, in config order")
    flags.add_argument("--allow_missing_checksums", action="store_true",
                       help="score an export whose files lack their .sha256 sidecars (they cannot be checked)")
    return flags


def _add_ctr(sub) -> None:
    ctr = sub.add_parser("ctr", help="deep CTR models from EasyRec-style pipeline configs").add_subparsers(
        dest="action", required=True
    )
    # the flags EasyRec's train_eval, eval and export share
    pipeline = argparse.ArgumentParser(add_help=False)
    pipeline.add_argument("--pipeline_config_path", required=True)
    pipeline.add_argument("--model_dir")
    pipeline.add_argument("--edit_config_json", help='JSON of dotted paths to values, e.g. \'{"train_config.num_steps": 10}\'')
    te = ctr.add_parser("train_eval", parents=[pipeline], help="train, evaluating at checkpoints and at the end")
    te.add_argument("--continue_train", action="store_true", help="resume from the latest checkpoint in model_dir")
    te.add_argument("--batch_norm_momentum", type=float,
                    help="fusionrec's option: batch norms' moving statistics take this weight of each batch "
                         "(torch's convention; EasyRec's TensorFlow layers: 0.01, the default)")  # fmt: skip
    te.set_defaults(run=_ctr_train_eval)
    ev = ctr.add_parser("eval", parents=[pipeline], help="evaluate the latest (or a given) checkpoint on eval_input_path")
    ev.add_argument("--checkpoint_path")
    ev.set_defaults(run=_ctr_eval)
    ex = ctr.add_parser("export", parents=[pipeline], help="write a self-contained TorchScript scoring model")
    ex.add_argument("--export_dir", required=True)
    ex.set_defaults(run=_ctr_export)
    pr = ctr.add_parser("predict", parents=[_predict_flags()], help="score files with an exported model")
    pr.set_defaults(run=_ctr_predict)


def _pipeline_config(args) -> str:
    path = args.config or args.pipeline_config_path
    if not path:
        raise FusionrecError("give the pipeline config: `fusionrec train pipeline.yaml` or --pipeline_config_path")
    return path


def _train(args) -> int:
    from fusionrec.pipeline import PipelineRun

    PipelineRun.from_config(_pipeline_config(args), args.run_dir).train()
    return 0


def _export(args) -> int:
    from fusionrec.pipeline import PipelineRun, export_run

    path = export_run(PipelineRun.from_config(_pipeline_config(args), args.run_dir), args.export_dir)
    print(f"exported {path}")
    return 0


def _predict(args) -> int:
    from fusionrec.pipeline import predict_pipeline

    result = predict_pipeline(args.input_path, args.output_path, args.saved_model_dir, reserved_cols=args.reserved_cols,
                              output_cols=args.output_cols, model_scores=args.model_scores, input_sep=args.input_sep,
                              output_sep=args.output_sep, batch_size=args.batch_size, selected_cols=args.selected_cols,
                              require_checksums=not args.allow_missing_checksums)  # fmt: skip
    print(json.dumps(result))
    return 0


def _serve(args) -> int:
    from pydantic import ValidationError

    from fusionrec.pipeline.serve_process import serve
    from fusionrec.pipeline.server import ServerSettings

    names = ("saved_model_dir", "max_body_bytes", "max_rows", "timeout_seconds", "body_timeout_seconds",
             "header_timeout_seconds", "max_pending", "max_connections", "allow_missing_checksums")  # fmt: skip
    try:
        settings = ServerSettings(**{name: getattr(args, name) for name in names})
    except ValidationError as error:
        problems = [f"--{e['loc'][0]} {e['input']!r}: {e['msg']}" for e in error.errors()]
        raise FusionrecError("; ".join(problems)) from None
    serve(settings, host=args.host, port=args.port, workers=args.workers)
    return 0


def _add_pipeline(sub) -> None:
    tr = sub.add_parser("train", help="train a pipeline config: every model out of fold and on all rows, the fusion, the export")
    tr.add_argument("config", nargs="?", help="the pipeline config (.yaml or .config)")
    tr.add_argument("--pipeline_config_path", help="the same, as EasyRec's flag")
    tr.add_argument("--run_dir", help="overrides the config's run_dir")
    tr.set_defaults(run=_train)
    ex = sub.add_parser("export", help="write a finished run's export directory again (train writes run_dir/export)")
    ex.add_argument("config", nargs="?")
    ex.add_argument("--pipeline_config_path")
    ex.add_argument("--run_dir")
    ex.add_argument("--export_dir", required=True)
    ex.set_defaults(run=_export)
    pr = sub.add_parser("predict", parents=[_predict_flags()],
                        help="score CSV/Parquet rows with a pipeline export (outputs probs, logits, probs_<model>)")
    pr.add_argument("--model_scores", action="store_true", help="add each model's probability as probs_<model>")
    pr.set_defaults(run=_predict)
    sv = sub.add_parser("serve", help="an HTTP scoring server for a pipeline export, a `fusionrec ctr export` directory "
                                      "or a `fusionrec gbdt` model file (FastAPI on uvicorn)")
    sv.add_argument("--saved_model_dir", required=True, help="the export directory, or the trees' model file")
    sv.add_argument("--host", default="127.0.0.1", help="the address to bind (default: this machine only)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--workers", type=int, default=None,
                    help="server processes, each loading the model once (default: one per core)")
    sv.add_argument("--max_body_bytes", type=int, default=8 * 1024 * 1024)
    sv.add_argument("--max_rows", type=int, default=10_000, help="rows per request")
    sv.add_argument("--timeout_seconds", type=float, default=30.0, help="time from a request's arrival to its answer (408 after)")
    sv.add_argument("--body_timeout_seconds", type=float, default=10.0, help="time to receive a request's body (408 after)")
    sv.add_argument("--header_timeout_seconds", type=float, default=10.0,
                    help="time for a request's headers to arrive (the connection is closed after)")
    sv.add_argument("--max_pending", type=int, default=8,
                    help="requests admitted (scoring or waiting) per worker; more get 503 with Retry-After")
    sv.add_argument("--max_connections", type=int, default=256, help="open connections per worker; more are closed")
    sv.add_argument("--allow_missing_checksums", action="store_true",
                    help="serve an export whose files lack their .sha256 sidecars (they cannot be checked)")
    sv.set_defaults(run=_serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fusionrec", description="boosted trees, deep CTR models and model fusion")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("version", help="print the version")
    gbdt = sub.add_parser("gbdt", help="gradient-boosted trees").add_subparsers(dest="action", required=True)
    tr = gbdt.add_parser("train", help="train a booster on a CSV/Parquet table")
    tr.add_argument("--train", required=True)
    tr.add_argument("--label", required=True)
    tr.add_argument("--valid")
    tr.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    tr.add_argument("--num-rounds", type=int, default=100)
    tr.add_argument("--early-stopping-rounds", type=int)
    tr.add_argument("--verbose-eval", type=int, default=0)
    tr.add_argument("--model-out", required=True)
    tr.set_defaults(run=_gbdt_train)
    pr = gbdt.add_parser("predict", help="score a table with a saved booster")
    pr.add_argument("--model", required=True)
    pr.add_argument("--input", required=True)
    pr.add_argument("--output", required=True)
    pr.add_argument("--margin", action="store_true", help="write margins instead of transformed predictions")
    pr.set_defaults(run=_gbdt_predict)
    _add_ctr(sub)
    _add_fuse(sub)
    _add_pipeline(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "version":
        print(__version__)
        return 0
    try:
        return args.run(args)
    except FusionrecError as exc:
        print(f"fusionrec: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

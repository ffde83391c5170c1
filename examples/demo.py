"""The fusionrec demo: boosted trees and a deep CTR model on generated data.

    python examples/demo.py --out demo_output

1. Generates a binary-classification set with missing values (scikit-learn's
   make_classification), trains a GBDTClassifier with early stopping on a validation split,
   prints test metrics, and writes the model JSON, a feature-importance PNG and a
   learning-curve PNG into --out.
2. Generates taobao click logs (fusionrec.datasets.make_taobao, a known click model), trains
   the EasyRec Wide&Deep config of examples/ctr/taobao_wide_and_deep.config on them, exports
   it as TorchScript, scores the test file with `predict`, and prints its AUC beside the
   oracle's (the true click probabilities).
3. Fuses the boosted trees with logistic regression and k-NN on the data of step 1 (weighted
   logit averaging with weights fitted out of fold, stacking, Caruana's ensemble selection)
   and prints every model's and every fusion's test metrics in one table.
4. Runs the one-config pipeline (examples/pipeline/taobao_pipeline.yaml) on the click logs of
   step 2: boosted trees, Wide&Deep, DIN and a Wide&Deep on the trees' out-of-fold leaves,
   stacked out of fold and exported as one directory; scores the test day with `predict`,
   starts the HTTP server on that export, scores rows with one request, checks that the
   server and predict agree, and stops it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from sklearn.datasets import make_classification  # noqa: E402
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score  # noqa: E402

from fusionrec.gbdt import GBDTClassifier  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo_output"))
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--ctr-rows", type=int, default=60_000)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    console = Console()

    # class_sep and flip_y make it hard enough that the models differ and fusion has something to add
    X, y = make_classification(args.rows, 20, n_informative=8, class_sep=0.6, flip_y=0.05, random_state=0)
    X = X.astype(np.float32)
    X[np.random.default_rng(0).random(X.shape) < 0.1] = np.nan  # 10 % missing: learned default directions
    names = [f"f{i:02d}" for i in range(X.shape[1])]
    n_train, n_valid = int(0.7 * len(y)), int(0.15 * len(y))
    train, valid, test = slice(0, n_train), slice(n_train, n_train + n_valid), slice(n_train + n_valid, None)

    model = GBDTClassifier(
        n_estimators=500, learning_rate=0.1, max_depth=6, subsample=0.8, colsample_bytree=0.8,
        early_stopping_rounds=20, eval_metric=["logloss", "auc"], n_jobs=2, random_state=0,
    )  # fmt: skip
    with console.status("training boosted trees"):
        model.fit(X[train], y[train], eval_set=[(X[valid], y[valid])])
    proba = model.predict_proba(X[test])[:, 1]

    table = Table(title="GBDTClassifier on generated data (test split)")
    for column in ("model", "rounds", "best round", "AUC", "logloss", "accuracy"):
        table.add_column(column)
    table.add_row(
        "fusionrec.gbdt", str(model.get_booster().num_boosted_rounds()), str(model.best_iteration),
        f"{roc_auc_score(y[test], proba):.4f}", f"{log_loss(y[test], proba):.4f}",
        f"{accuracy_score(y[test], proba > 0.5):.4f}",
    )  # fmt: skip
    console.print(table)

    model_path = args.out / "gbdt_model.json"
    model.save_model(model_path)
    reloaded = GBDTClassifier().load_model(model_path)
    np.testing.assert_allclose(reloaded.predict_proba(X[test])[:, 1], model.predict_proba(X[test])[:, 1])

    importance = model.get_booster().feature_importances("total_gain")
    order = np.argsort(importance)
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.barh([names[i] for i in order], importance[order] / importance.sum())
    ax.set_xlabel("share of total gain")
    ax.set_title("GBDT feature importance")
    fig.tight_layout()
    fig.savefig(args.out / "gbdt_feature_importance.png", dpi=100)
    plt.close(fig)

    curve = model.evals_result_["validation_0"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(curve["logloss"], label="validation logloss")
    ax.axvline(model.best_iteration, color="grey", linestyle="--", label="best round")
    ax.set_xlabel("round")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "gbdt_learning_curve.png", dpi=100)
    plt.close(fig)
    console.print(f"wrote {model_path}, gbdt_feature_importance.png and gbdt_learning_curve.png to {args.out}/")
    args.out = args.out.resolve()
    ctr_demo(args, console)
    fusion_demo(args, console, X, y, n_train + n_valid, model.best_iteration + 1)
    pipeline_demo(args, console)


def pipeline_demo(args, console) -> None:
    import json
    import os
    import shutil
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    import pyarrow.csv as pacsv

    from fusionrec.pipeline import PipelineRun, predict_pipeline

    os.chdir(args.out)  # the example's data paths are relative to the working directory, as EasyRec's
    shutil.rmtree("experiments/taobao_pipeline", ignore_errors=True)
    run = PipelineRun.from_config(Path(__file__).parent / "pipeline" / "taobao_pipeline.yaml", console=console)
    result = run.train()
    export_dir = run.run_dir.resolve() / "export"
    scored = predict_pipeline("data/taobao_test_data", "pipeline_predictions.csv", str(export_dir), output_sep=",",
                              reserved_cols="user_id", model_scores=True)  # fmt: skip
    console.print(f"pipeline: test AUC of the fusion {result['test']['fusion']['auc']:.4f}; exported {export_dir}; "
                  f"predict scored {scored['rows_written']:,} rows")  # fmt: skip
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "fusionrec.cli", "serve", "--saved_model_dir", str(export_dir),
                               "--port", str(port)], start_new_session=True)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(240):
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        columns = json.load(urllib.request.urlopen(url + "/metadata"))["input_schema"]["columns"]
        table = pacsv.read_csv("data/taobao_test_data", read_options=pacsv.ReadOptions(column_names=columns),
                               convert_options=pacsv.ConvertOptions(column_types={c: "string" for c in columns},
                                                                    strings_can_be_null=False))  # fmt: skip
        rows = table.slice(0, 5).to_pylist()
        body = json.dumps({"rows": [{**r, "id": i} for i, r in enumerate(rows)]}).encode()
        request = urllib.request.Request(url + "/predict", body, {"Content-Type": "application/json"})
        answer = json.load(urllib.request.urlopen(request, timeout=30))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    from_predict = pacsv.read_csv("pipeline_predictions.csv").column("probs").to_numpy()[:5]
    np.testing.assert_allclose(answer["scores"], from_predict, rtol=1e-5)
    console.print(f"server on 127.0.0.1:{port}: POST /predict of 5 rows -> {[round(s, 4) for s in answer['scores']]} "
                  "(equal to predict's); stopped")  # fmt: skip


def ctr_demo(args, console) -> None:
    import json

    from fusionrec.ctr import Trainer, export, load_config, predict
    from fusionrec.datasets import make_taobao

    data = args.out / "data"  # the paths EasyRec's taobao config (and the pipeline example) read
    make_taobao(args.ctr_rows, seed=0, path=data / "taobao_train_data")
    test = make_taobao(max(1000, args.ctr_rows // 4), seed=1, path=data / "taobao_test_data")
    edits = {
        "train_input_path": str(data / "taobao_train_data"), "eval_input_path": str(data / "taobao_test_data"),
        "model_dir": str(args.out / "wide_and_deep_ckpt"), "train_config.num_steps": 0, "data_config.num_epochs": 1,
        "train_config.log_step_count_steps": 10**6,
    }  # fmt: skip
    config = load_config(Path(__file__).parent / "ctr" / "taobao_wide_and_deep.config", json.dumps(edits))
    import shutil

    shutil.rmtree(args.out / "wide_and_deep_ckpt", ignore_errors=True)
    trainer = Trainer(config)
    report = trainer.train()
    export(trainer, args.out / "wide_and_deep_export")
    scored = predict(str(data / "taobao_test_data"), str(args.out / "taobao_predictions.txt"),
                     str(args.out / "wide_and_deep_export"), reserved_cols="clk,user_id", output_cols="probs double")  # fmt: skip
    oracle = roc_auc_score(test.table.column("clk").to_numpy(), test.click_proba)
    table = Table(title=f"Wide&Deep (EasyRec's taobao config), {args.ctr_rows:,} generated rows, 1 epoch")
    for column in ("model", "steps", "examples/s", "test AUC", "logloss", "oracle AUC"):
        table.add_column(column)
    table.add_row("fusionrec.ctr WideAndDeep", str(report["steps"]), f"{report['examples_per_sec']:,.0f}",
                  f"{report['eval']['auc']:.4f}", f"{report['eval']['logloss']:.4f}", f"{oracle:.4f}")  # fmt: skip
    console.print(table)
    console.print(f"exported TorchScript to {args.out}/wide_and_deep_export, scored {scored['rows_written']:,} rows; "
                  f"prices beyond num_buckets went to bucket 0: {report['input']['features']['price']['out_of_range']:,} "
                  "training rows")  # fmt: skip


def fusion_demo(args, console, X, y, n_fit: int, gbdt_rounds: int) -> None:
    """Fuse the boosted trees with logistic regression and k-NN: averaging, stacking, selection."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from fusionrec.fusion import AveragingClassifier, EnsembleSelectionClassifier, StackingClassifier
    from fusionrec.fusion.plot import plot_oof_correlation

    fit, test = slice(0, n_fit), slice(n_fit, None)
    library = [
        ("gbdt", GBDTClassifier(n_estimators=gbdt_rounds, learning_rate=0.1, max_depth=6, subsample=0.8,
                                colsample_bytree=0.8, n_jobs=2, random_state=0)),
        ("logistic", make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression())),
        ("knn", make_pipeline(SimpleImputer(), StandardScaler(), KNeighborsClassifier(n_neighbors=30))),
    ]  # fmt: skip
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    fusions = [
        ("average (logit, fitted weights)", AveragingClassifier(library, method="logit", weights="optimize",
                                                                metric="roc_auc", cv=cv)),
        ("stacking (logistic meta-model)", StackingClassifier(library, LogisticRegression(), cv=cv)),
        ("ensemble selection (Caruana)", EnsembleSelectionClassifier(library, metric="roc_auc", n_iterations=25,
                                                                     cv=cv)),
    ]  # fmt: skip
    table = Table(title=f"Model fusion on the generated data: {n_fit:,} rows to fit, {len(y) - n_fit:,} test rows")
    for column in ("model", "test AUC", "logloss", "accuracy", "weights"):
        table.add_column(column)
    with console.status("fitting the base models and the fusions (5-fold out-of-fold predictions)"):
        rows = []
        for name, model in library + fusions:
            proba = model.fit(X[fit], y[fit]).predict_proba(X[test])[:, 1]
            weights = getattr(model, "weights_", None)
            if name.startswith("stacking"):
                weights = model.final_estimator_.coef_.ravel()
            rows.append((name, roc_auc_score(y[test], proba), log_loss(y[test], proba),
                         accuracy_score(y[test], proba > 0.5),
                         "" if weights is None else " ".join(f"{w:.2f}" for w in weights)))  # fmt: skip
    best_single = max(auc for _, auc, *_ in rows[: len(library)])
    for name, auc, loss, acc, weights in rows:
        marker = " *" if auc > best_single and auc == max(r[1] for r in rows) else ""
        table.add_row(name, f"{auc:.4f}{marker}", f"{loss:.4f}", f"{acc:.4f}", weights)
    console.print(table)
    console.print("weights: gbdt, logistic, knn (for stacking, the meta-model's coefficients)")
    plot_oof_correlation(fusions[1][1], args.out / "fusion_oof_correlation.png")
    console.print(f"wrote fusion_oof_correlation.png to {args.out}/")


if __name__ == "__main__":
    main()

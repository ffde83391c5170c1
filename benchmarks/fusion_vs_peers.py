"""fusionrec.fusion against scikit-learn's and mlxtend's ensembles, same base models, same folds.

    python benchmarks/fusion_vs_peers.py [--rows N] [--n-jobs 1] [--markdown docs/benchmarks.md]

Data: ../shared/data/adult.parquet (income > 50K), a fixed 80/20 split; generated
``make_classification`` data when the file is absent. The library: fusionrec's
GBDTClassifier (200 rounds, depth 6) on ordinal-coded columns, logistic regression and
k-NN (k=50) on one-hot + standardized columns. Every ensemble uses the same
StratifiedKFold(5, shuffle, seed 0). Peers: sklearn.ensemble.VotingClassifier /
StackingClassifier (which refits the base models on all rows) and mlxtend's
StackingCVClassifier (use_probas, also refits). fusionrec's stacking runs both ways:
``test_features="refit"`` (the like-for-like comparison) and ``"fold_mean"`` (the default,
one fit fewer per model). Ensemble selection has no installed peer; its ratio is against
scikit-learn's stacking.

*fit s* / *predict s* are wall-clock; *peak MB* is tracemalloc's peak of Python and numpy
allocations during fit (all in this process with --n-jobs 1, the default).
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]


def load(rows: int | None):
    path = ROOT.parent / "shared" / "data" / "adult.parquet"
    if path.exists():
        import pandas as pd

        frame = pd.read_parquet(path)
        y = frame["income"].astype(str).str.contains(">50K").astype(int).to_numpy()
        X = frame.drop(columns=["income"])
        source = "adult.parquet"
    else:
        import pandas as pd
        from sklearn.datasets import make_classification

        Xa, y = make_classification(48842, 14, n_informative=8, class_sep=0.6, flip_y=0.05, random_state=0)
        X = pd.DataFrame(Xa, columns=[f"f{i}" for i in range(14)])
        source = "make_classification"
    test = np.random.default_rng(0).random(len(y)) < 0.2
    train_rows = np.flatnonzero(~test)[:rows] if rows else np.flatnonzero(~test)
    return X.iloc[train_rows], y[train_rows], X[test], y[test], source


def library(X):
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    from fusionrec.gbdt import GBDTClassifier

    categorical = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]
    numeric = [c for c in X.columns if c not in categorical]
    one_hot = ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore", min_frequency=20), categorical),
                                 ("num", StandardScaler(), numeric)])  # fmt: skip
    ordinal = ColumnTransformer([("cat", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
                                  categorical)], remainder="passthrough")  # fmt: skip
    return [
        ("gbdt", make_pipeline(ordinal, GBDTClassifier(n_estimators=200, learning_rate=0.1, max_depth=6,
                                                       n_jobs=2, random_state=0))),  # fmt: skip
        ("lr", make_pipeline(one_hot, LogisticRegression(max_iter=2000))),
        ("knn", make_pipeline(one_hot, KNeighborsClassifier(n_neighbors=50))),
    ]


def measure(model, X, y, Xt, yt) -> dict:
    tracemalloc.start()
    start = time.perf_counter()
    model.fit(X, y)
    fit_s = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    start = time.perf_counter()
    proba = model.predict_proba(Xt)[:, 1]
    return {"fit_s": fit_s, "predict_s": time.perf_counter() - start, "auc": roc_auc_score(yt, proba), "peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, help="training rows (default: all)")
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()

    from mlxtend.classifier import StackingCVClassifier
    from sklearn import ensemble as sk
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    from fusionrec import fusion

    X, y, Xt, yt, source = load(args.rows)
    base = library(X)
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    jobs = args.n_jobs
    runs = [(name, "single model", model) for name, model in base]
    runs += [
        ("soft voting", "fusionrec", fusion.VotingClassifier(base, voting="soft", n_jobs=jobs)),
        ("soft voting", "scikit-learn", sk.VotingClassifier(base, voting="soft", n_jobs=jobs)),
        ("stacking, refit", "fusionrec", fusion.StackingClassifier(base, LogisticRegression(), cv=cv,
                                                                    test_features="refit", n_jobs=jobs)),
        ("stacking, refit", "scikit-learn", sk.StackingClassifier(base, LogisticRegression(), cv=cv, n_jobs=jobs)),
        ("stacking, refit", "mlxtend", StackingCVClassifier([m for _, m in base], LogisticRegression(), cv=cv,
                                                            use_probas=True, drop_proba_col="first", n_jobs=jobs,
                                                            random_state=0)),
        ("stacking, fold mean", "fusionrec", fusion.StackingClassifier(base, LogisticRegression(), cv=cv, n_jobs=jobs)),
        ("ensemble selection", "fusionrec", fusion.EnsembleSelectionClassifier(base, metric="roc_auc", n_iterations=25,
                                                                               cv=cv, n_jobs=jobs)),
    ]  # fmt: skip
    results = []
    for task, lib, model in runs:
        result = measure(model, X, y, Xt, yt)
        results.append((task, lib, result))
        print(f"{task:22s} {lib:13s} fit {result['fit_s']:7.2f}s predict {result['predict_s']:6.2f}s "
              f"AUC {result['auc']:.4f} peak {result['peak_mb']:7.1f} MB", flush=True)  # fmt: skip

    best_single = max(r["auc"] for task, lib, r in results if lib == "single model")
    reference = {task: r for task, lib, r in results if lib == "scikit-learn"}
    reference["ensemble selection"] = reference["stacking, refit"]
    reference["stacking, fold mean"] = reference["stacking, refit"]
    lines = [
        f"Data: {source}, {len(y):,} training rows, {len(yt):,} test rows; n_jobs={jobs}. "
        "Ratios are fusionrec (or mlxtend) / scikit-learn on the same task.",
        "",
        "| task | library | fit s | fit ratio | predict s | test AUC | AUC vs best single | peak MB | mem ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for task, lib, r in results:
        ref = reference.get(task)

        def ratio(key: str, r: dict = r, ref: dict | None = ref) -> str:
            return f"{r[key] / ref[key]:.2f}x" if ref else ""

        lines.append(f"| {task} | {lib} | {r['fit_s']:.2f} | {ratio('fit_s')} | {r['predict_s']:.2f} | {r['auc']:.4f} | "
                     f"{r['auc'] - best_single:+.4f} | {r['peak_mb']:.0f} | {ratio('peak_mb')} |")  # fmt: skip
    print("\n".join(lines))
    if args.markdown:
        from _report import write_markdown_block

        write_markdown_block(args.markdown, "fusion_vs_peers", "fusion_vs_peers.py", lines)


if __name__ == "__main__":
    main()

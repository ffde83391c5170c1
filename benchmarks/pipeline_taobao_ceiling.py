"""How much can any fusion gain on make_taobao's click model? Two strong, different models
given the click model's own terms, and their best blend.

    python benchmarks/pipeline_taobao_ceiling.py [--train-rows 300000] [--test-rows 100000] [--markdown docs/benchmarks.md]

The same train / held-out-day logs as benchmarks/pipeline_taobao.py. Two models:

* trees: the pipeline's own trees member of examples/pipeline/taobao_pipeline.yaml (its
  columns: ids as cross-fitted click rates, small fields as ranks, the two history matches;
  its parameters), fitted on all training rows;
* a logistic regression told more than any member: one-hot ids and pid, the two history
  matches (the trees' match columns), and age x price / pvalue x price crosses. The click
  model's log-odds is a sum of exactly such terms, so this is the click model's own form with
  fitted coefficients (L2, C chosen on the test day: an upper bound, on purpose).

Then every blend w * logit(trees) + (1 - w) * logit(LR) on a grid of w, the best chosen on the
test day (again an upper bound). What separates every model from the oracle (the true click
probabilities) is the estimation noise of 30,000 user and ad effects from 300,000 rows, which
both models share; a blend cannot average it away.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_markdown_block  # noqa: E402
from pipeline_taobao import CONFIG, paired_se  # noqa: E402

IDS = ["user_id", "adgroup_id", "campaign_id", "customer", "brand", "cate_id", "cms_segid"]
MATCHES = ["cate_id.in.tag_category_list", "brand.in.tag_brand_list"]


def one_hot_columns(table, matched: np.ndarray) -> np.ndarray:
    """The regression's categorical columns: ids, pid, age x price and pvalue x price buckets, matches."""
    column = {name: np.asarray(table.column(name).to_pylist(), dtype=object) for name in [*IDS, "pid", "age_level", "pvalue_level"]}
    price_bucket = np.clip(np.round((np.log(table.column("price").to_numpy().astype(np.float64)) - 4.3) / 1.1 * 2), -4, 4)
    price_bucket = price_bucket.astype(int).astype(str).astype(object)
    crosses = [column["age_level"] + "_" + price_bucket, column["pvalue_level"] + "_" + price_bucket]
    return np.column_stack([column[name] for name in [*IDS, "pid"]] + crosses + [(matched[:, j] > 0).astype(str) for j in range(matched.shape[1])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-rows", type=int, default=300_000)
    parser.add_argument("--test-rows", type=int, default=100_000)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    from scipy.special import logit
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import OneHotEncoder

    from fusionrec.datasets import make_taobao
    from fusionrec.pipeline import load_pipeline
    from fusionrec.pipeline.members import FitContext, TreesModel, label_values
    from fusionrec.pipeline.metrics import auc_standard_error
    from fusionrec.pipeline.run import read_rows

    console = Console()
    spec, base_dir = load_pipeline(CONFIG)
    with tempfile.TemporaryDirectory() as tmp, console.status("generating logs"):
        make_taobao(args.train_rows, 0, Path(tmp) / "train")
        test_data = make_taobao(args.test_rows, 1, Path(tmp) / "test")
        train_table, _ = read_rows(spec, str(Path(tmp) / "train"), "train")
        test_table, _ = read_rows(spec, str(Path(tmp) / "test"), "test")
    y, y_test = label_values(train_table, spec.data.label), label_values(test_table, spec.data.label)
    with console.status("trees"):
        trees_model = TreesModel.fit(spec.model("trees").gbdt, FitContext(spec, base_dir, seed=spec.split.seed), train_table, spec.split.seed)
        trees = trees_model.proba(test_table)
        match_columns = [trees_model.encoder.feature_names.index(name) for name in MATCHES]
        matched, matched_test = (trees_model.matrix(t)[:, match_columns] for t in (train_table, test_table))
    with console.status("logistic regression"):
        one_hot = OneHotEncoder(handle_unknown="ignore")
        W, W_test = one_hot.fit_transform(one_hot_columns(train_table, matched)), one_hot.transform(one_hot_columns(test_table, matched_test))
        fits = {C: LogisticRegression(C=C, max_iter=300).fit(W, y).predict_proba(W_test)[:, 1] for C in (0.03, 0.1, 0.3)}
        C = max(fits, key=lambda c: roc_auc_score(y_test, fits[c]))
        linear = fits[C]
    blends = {w: 1 / (1 + np.exp(-(w * logit(trees) + (1 - w) * logit(linear)))) for w in np.round(np.arange(0.1, 1.0, 0.1), 1)}
    w_best = max(blends, key=lambda w: roc_auc_score(y_test, blends[w]))
    scores = {"trees (the pipeline's member)": trees, f"logistic regression (C={C})": linear, f"best blend (w_trees={w_best})": blends[w_best]}
    n_pos = int(y_test.sum())
    lines = [f"### What a fusion can gain on make_taobao: {args.train_rows:,} training rows, {args.test_rows:,} test rows of a later day", "",
             "| model | test AUC | AUC s.e. (Hanley-McNeil) |", "|---|---|---|"]  # fmt: skip
    aucs = {}
    for name, score in scores.items():
        aucs[name] = roc_auc_score(y_test, score)
        lines.append(f"| {name} | {aucs[name]:.4f} | {auc_standard_error(aucs[name], n_pos, len(y_test) - n_pos):.4f} |")
    lines.append(f"| oracle (true click probabilities) | {roc_auc_score(y_test, test_data.click_proba):.4f} | |")
    names = list(scores)
    best_single = max(names[:2], key=aucs.get)
    gain = aucs[names[2]] - aucs[best_single]
    lines += ["", f"Best blend minus the best single model ({best_single}): **{gain:+.4f}** "
              f"(paired bootstrap s.e. {paired_se(y_test, scores[names[2]], scores[best_single]):.4f}).", ""]  # fmt: skip
    console.print("\n".join(lines))
    if args.markdown:
        write_markdown_block(args.markdown, "pipeline_ceiling", "pipeline_taobao_ceiling.py", lines)


if __name__ == "__main__":
    main()

"""How much can any fusion gain on make_taobao's click model? Two strong, different models
given the click model's own terms, and their best blend.

    python benchmarks/pipeline_taobao_ceiling.py [--train-rows 300000] [--test-rows 100000] [--markdown docs/benchmarks.md]

The same train / held-out-day logs as benchmarks/pipeline_taobao.py. Two models, each told
more than a pipeline member is:

* trees: fusionrec.gbdt with the example pipeline's parameters on the ids as cross-fitted
  click rates (scikit-learn's TargetEncoder), the small fields as numbers, log price, and the
  two history-match indicators (the click model's ``cate_match`` and ``brand_match``);
* a logistic regression on one-hot ids, pid, the matches and age x price / pvalue x price
  crosses: the click model's log-odds is a sum of exactly such terms, so this is the
  click model's own form with fitted coefficients (L2, C chosen on the test day: an upper
  bound, on purpose).

Then every blend w * logit(trees) + (1 - w) * logit(LR) on a grid of w, the best chosen on the
test day (again an upper bound). What separates every model from the oracle (the true click
probabilities) is the estimation noise of 30,000 user and ad effects from 300,000 rows, which
both models share; a blend cannot average it away.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_markdown_block  # noqa: E402
from pipeline_taobao import paired_se  # noqa: E402

IDS = ["user_id", "adgroup_id", "campaign_id", "customer", "brand", "cate_id", "cms_segid"]
SMALL = ["age_level", "pvalue_level", "shopping_level", "cms_group_id", "final_gender_code", "occupation", "new_user_class_level"]


def frame(data):
    """The rows as pandas, with the two match indicators and log price."""
    table = data.table.to_pandas()

    def matches(values, lists):
        return np.array([value != "" and value in set(items.split("|")) for value, items in zip(values, lists)], dtype=np.float64)

    table["cate_match"] = matches(table.cate_id, table.tag_category_list)
    table["brand_match"] = matches(table.brand, table.tag_brand_list)
    table["log_price"] = np.log(table.price.astype(np.float64))
    return table


def numeric(table) -> np.ndarray:
    small = [np.where(table[c] == "", -1, table[c]).astype(np.float64) for c in SMALL]
    pid = table.pid.str[-1].astype(np.float64).to_numpy()
    return np.column_stack([*small, pid, table.cate_match, table.brand_match, table.log_price])


def one_hot_columns(table) -> np.ndarray:
    price_bucket = np.clip(np.round((table.log_price - 4.3) / 1.1 * 2), -4, 4).astype(int).astype(str)
    return np.column_stack([table[c] for c in IDS] + [table.pid, table.age_level + "_" + price_bucket,
                           table.pvalue_level + "_" + price_bucket, table.cate_match.astype(str), table.brand_match.astype(str)])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-rows", type=int, default=300_000)
    parser.add_argument("--test-rows", type=int, default=100_000)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    from scipy.special import logit
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import KFold
    from sklearn.preprocessing import OneHotEncoder, TargetEncoder

    from fusionrec.datasets import make_taobao
    from fusionrec.gbdt import Dataset, train
    from fusionrec.pipeline.metrics import auc_standard_error

    console = Console()
    with console.status("generating logs"):
        train_data, test_data = make_taobao(args.train_rows, 0), make_taobao(args.test_rows, 1)
        a, b = frame(train_data), frame(test_data)
    y, y_test = a.clk.to_numpy(), b.clk.to_numpy()
    with console.status("trees"):
        encoder = TargetEncoder(cv=KFold(5, shuffle=True, random_state=0))
        X = np.column_stack([encoder.fit_transform(a[IDS], y), numeric(a)]).astype(np.float32)
        X_test = np.column_stack([encoder.transform(b[IDS]), numeric(b)]).astype(np.float32)
        params = {"objective": "binary:logistic", "max_depth": 6, "eta": 0.1, "min_child_weight": 20, "subsample": 0.8,
                  "colsample_bytree": 0.8, "seed": 0}  # fmt: skip
        trees = train(params, Dataset(X, y), 200).predict(X_test)
    with console.status("logistic regression"):
        one_hot = OneHotEncoder(handle_unknown="ignore")
        W, W_test = one_hot.fit_transform(one_hot_columns(a)), one_hot.transform(one_hot_columns(b))
        fits = {C: LogisticRegression(C=C, max_iter=300).fit(W, y).predict_proba(W_test)[:, 1] for C in (0.03, 0.1, 0.3)}
        C = max(fits, key=lambda c: roc_auc_score(y_test, fits[c]))
        linear = fits[C]
    blends = {w: 1 / (1 + np.exp(-(w * logit(trees) + (1 - w) * logit(linear)))) for w in np.round(np.arange(0.1, 1.0, 0.1), 1)}
    w_best = max(blends, key=lambda w: roc_auc_score(y_test, blends[w]))
    scores = {"trees": trees, f"logistic regression (C={C})": linear, f"best blend (w_trees={w_best})": blends[w_best]}
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

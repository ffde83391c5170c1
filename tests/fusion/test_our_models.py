"""fusionrec's own estimators as base models: boosted trees and the deep CTR classifier on a DataFrame."""

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from fusionrec.ctr import CTRClassifier
from fusionrec.fusion import AveragingClassifier, StackingClassifier
from fusionrec.gbdt import GBDTClassifier


@pytest.fixture
def frame(rng):
    pd = pytest.importorskip("pandas")
    n = 3000
    city = rng.choice(["paris", "lyon", "nice", "lille"], size=n)
    age = rng.uniform(18, 80, size=n)
    income = rng.normal(size=n)
    logits = 0.8 * (city == "nice") - 0.6 * (city == "lille") + 0.04 * (age - 45) + income
    y = (rng.random(n) < 1 / (1 + np.exp(-logits))).astype(int)
    return pd.DataFrame({"city": city, "age": age, "income": income}), y


def test_gbdt_and_ctr_classifier_stacked_on_a_dataframe(frame):
    X, y = frame
    encode = ColumnTransformer([("city", OneHotEncoder(), ["city"])], remainder="passthrough")
    library = [
        ("gbdt", make_pipeline(encode, GBDTClassifier(n_estimators=50, max_depth=3, learning_rate=0.1))),
        ("ctr", CTRClassifier(embedding_dim=4, hidden_units=(16,), num_epochs=3, batch_size=128)),
    ]
    train, test = slice(0, 2400), slice(2400, None)
    stack = StackingClassifier(library, LogisticRegression(), cv=3).fit(X[train], y[train])
    assert stack.oof_predictions_.shape == (2400, 2) and not np.isnan(stack.oof_predictions_).any()
    auc = roc_auc_score(y[test], stack.predict_proba(X[test])[:, 1])
    singles = [roc_auc_score(y[test], model.fit(X[train], y[train]).predict_proba(X[test])[:, 1])
               for _, model in library]  # fmt: skip
    assert auc >= max(singles) - 0.01, (auc, singles)
    averaged = AveragingClassifier(library, method="logit").fit(X[train], y[train])
    assert list(averaged.feature_names_in_) == ["city", "age", "income"]
    assert roc_auc_score(y[test], averaged.predict_proba(X[test])[:, 1]) > 0.7

"""Gradient-boosted trees implementing the XGBoost system (Chen & Guestrin, KDD 2016).

Data flows one way: :class:`Dataset` bins once -> histograms -> split finding -> tree
growth -> flat trees that predict and save. :func:`train` loops :meth:`Booster.update`
with callbacks; :class:`GBDTClassifier` / :class:`GBDTRegressor` / :class:`GBDTRanker` wrap it for
scikit-learn.
"""

from fusionrec.callbacks import EarlyStopping, EvaluationMonitor, TrainingCallback
from fusionrec.gbdt.booster import Booster
from fusionrec.gbdt.dataset import Dataset
from fusionrec.gbdt.sklearn import GBDTClassifier, GBDTRanker, GBDTRegressor
from fusionrec.gbdt.training import train

__all__ = ["GBDTClassifier", "GBDTRanker", "GBDTRegressor", "Booster", "Dataset", "train", "TrainingCallback", "EarlyStopping", "EvaluationMonitor"]

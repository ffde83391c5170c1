"""Gradient-boosted trees implementing the XGBoost system (Chen & Guestrin, KDD 2016).

Data flows one way: :class:`Dataset` bins once -> histograms -> split finding -> tree
growth -> flat trees that predict and save. :func:`train` loops :meth:`Booster.update`
with callbacks; :class:`GBDTClassifier` / :class:`GBDTRegressor` / :class:`GBDTRanker` wrap it for
scikit-learn.
"""

from fusionrec.callbacks import EarlyStopping, EvaluationMonitor, TrainingCallback
from fusionrec.gbdt.booster import Booster
from fusionrec.gbdt.dataset import Dataset
from fusionrec.gbdt.outofcore.external import ExternalDataset
from fusionrec.gbdt.training import train

_ESTIMATORS = ("GBDTClassifier", "GBDTRanker", "GBDTRegressor")


def __getattr__(name: str):
    # the estimators import scikit-learn (1.3 s): only when asked for, so that ``train`` and
    # ``Booster`` (the CLI, worker processes, a predict) start without it (PEP 562)
    if name in _ESTIMATORS:
        from fusionrec.gbdt import sklearn

        return getattr(sklearn, name)
    raise AttributeError(f"module 'fusionrec.gbdt' has no attribute {name!r}")


__all__ = ["GBDTClassifier", "GBDTRanker", "GBDTRegressor", "Booster", "Dataset", "ExternalDataset", "train", "TrainingCallback", "EarlyStopping", "EvaluationMonitor"]

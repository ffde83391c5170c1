"""Model fusion: averaging, voting, stacking, blending and ensemble selection.

Prediction-level functions (:func:`average`, :func:`vote`, :func:`stack`,
:func:`optimize_weights`) fuse predictions already made; the estimators fuse scikit-learn
style models, fusionrec's own included, with out-of-fold predictions wherever a second
stage learns from the first.
"""

from fusionrec.fusion.averaging import AveragingClassifier, AveragingRegressor
from fusionrec.fusion.combine import METHODS, average, check_weights, stack, vote
from fusionrec.fusion.metrics import METRICS, Metric, get_metric, make_metric
from fusionrec.fusion.selection import EnsembleSelectionClassifier, EnsembleSelectionRegressor, greedy_selection
from fusionrec.fusion.stacking import BlendingClassifier, BlendingRegressor, StackingClassifier, StackingRegressor
from fusionrec.fusion.voting import VotingClassifier
from fusionrec.fusion.weights import WeightFit, optimize_weights

__all__ = [
    "METHODS", "METRICS", "AveragingClassifier", "AveragingRegressor", "BlendingClassifier", "BlendingRegressor",
    "EnsembleSelectionClassifier", "EnsembleSelectionRegressor", "Metric", "StackingClassifier",
    "StackingRegressor", "VotingClassifier", "WeightFit", "average", "check_weights", "get_metric",
    "greedy_selection", "make_metric", "optimize_weights", "stack", "vote",
]  # fmt: skip

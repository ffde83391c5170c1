"""One callback protocol for every training loop in fusionrec.

The boosted-tree loop (:func:`fusionrec.gbdt.train`) and the deep CTR trainer call the
same hooks, so a callback written once (early stopping, logging, checkpointing) serves
both. The protocol follows XGBoost's ``TrainingCallback``: ``before_iteration`` and
``after_iteration`` return ``True`` to stop training.

``evals_log`` maps data-set name -> metric name -> list of values, one per iteration.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from fusionrec.errors import FusionrecError

EvalsLog = dict[str, dict[str, list[float]]]

# Metrics for which a larger value is better; every other metric is minimised.
MAXIMIZE_METRICS = frozenset({"auc", "aucpr", "gauc", "session_auc", "accuracy", "max_f1", "ndcg", "map"})


class TrainingCallback:
    """Base class: override any hook. ``model`` is the object being trained."""

    def before_training(self, model: Any) -> Any:
        return model

    def after_training(self, model: Any) -> Any:
        return model

    def before_iteration(self, model: Any, epoch: int, evals_log: EvalsLog) -> bool:
        return False

    def after_iteration(self, model: Any, epoch: int, evals_log: EvalsLog) -> bool:
        return False


class CallbackContainer:
    """Calls a list of callbacks in order; any ``True`` from an iteration hook stops."""

    def __init__(self, callbacks: Sequence[TrainingCallback] | None):
        callbacks = list(callbacks or [])
        for index, callback in enumerate(callbacks):
            if not isinstance(callback, TrainingCallback):
                raise FusionrecError(
                    f"callbacks[{index}]: {type(callback).__name__} is not a fusionrec.callbacks.TrainingCallback"
                )
        self.callbacks = callbacks

    def before_training(self, model: Any) -> Any:
        for callback in self.callbacks:
            model = callback.before_training(model)
        return model

    def after_training(self, model: Any) -> Any:
        for callback in self.callbacks:
            model = callback.after_training(model)
        return model

    def before_iteration(self, model: Any, epoch: int, evals_log: EvalsLog) -> bool:
        return any([callback.before_iteration(model, epoch, evals_log) for callback in self.callbacks])

    def after_iteration(self, model: Any, epoch: int, evals_log: EvalsLog) -> bool:
        return any([callback.after_iteration(model, epoch, evals_log) for callback in self.callbacks])


class EarlyStopping(TrainingCallback):
    """Stop when ``metric_name`` on ``data_name`` has not improved for ``rounds`` iterations.

    Defaults to the last data set and its last metric, as XGBoost does. The model gets
    ``best_iteration`` and ``best_score`` set through ``model.set_best(iteration, score)``.
    """

    def __init__(
        self,
        rounds: int,
        metric_name: str | None = None,
        data_name: str | None = None,
        maximize: bool | None = None,
        min_delta: float = 0.0,
    ):
        if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
            raise FusionrecError(f"early_stopping_rounds={rounds!r}: must be an integer >= 1")
        if min_delta < 0:
            raise FusionrecError(f"min_delta={min_delta!r}: must be >= 0")
        self.rounds = rounds
        self.metric_name = metric_name
        self.data_name = data_name
        self.maximize = maximize
        self.min_delta = min_delta
        self.best_score: float | None = None
        self.best_iteration: int | None = None

    def before_training(self, model: Any) -> Any:
        self.best_score = None
        self.best_iteration = None
        return model

    def after_iteration(self, model: Any, epoch: int, evals_log: EvalsLog) -> bool:
        if not evals_log:
            raise FusionrecError("early stopping needs at least one evaluation set (evals / eval_set)")
        data_name = self.data_name or list(evals_log)[-1]
        if data_name not in evals_log:
            raise FusionrecError(f"early stopping data_name={data_name!r}: not among {list(evals_log)}")
        metrics = evals_log[data_name]
        metric_name = self.metric_name or list(metrics)[-1]
        if metric_name not in metrics:
            raise FusionrecError(f"early stopping metric_name={metric_name!r}: not among {list(metrics)}")
        score = metrics[metric_name][-1]
        maximize = self.maximize if self.maximize is not None else metric_name.split("@")[0] in MAXIMIZE_METRICS
        improved = self.best_score is None or (
            score > self.best_score + self.min_delta if maximize else score < self.best_score - self.min_delta
        )
        if improved and not math.isnan(score):
            self.best_score = float(score)
            self.best_iteration = epoch
            if hasattr(model, "set_best"):
                model.set_best(epoch, float(score))
        return epoch - (self.best_iteration if self.best_iteration is not None else epoch) >= self.rounds


class EvaluationMonitor(TrainingCallback):
    """Print the latest evaluation results every ``period`` iterations."""

    def __init__(self, period: int = 1, printer=print):
        self.period = max(int(period), 1)
        self.printer = printer

    def after_iteration(self, model: Any, epoch: int, evals_log: EvalsLog) -> bool:
        if evals_log and epoch % self.period == 0:
            self._print(epoch, evals_log)
        return False

    def _print(self, epoch: int, evals_log: EvalsLog) -> None:
        parts = [f"[{epoch}]"]
        for data_name, metrics in evals_log.items():
            for metric_name, values in metrics.items():
                parts.append(f"{data_name}-{metric_name}:{values[-1]:.5f}")
        self.printer("\t".join(parts))

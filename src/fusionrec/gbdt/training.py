"""``train()``: the boosting loop with evaluation sets, early stopping and callbacks."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from fusionrec.callbacks import CallbackContainer, EarlyStopping, EvaluationMonitor, TrainingCallback
from fusionrec.errors import FusionrecError
from fusionrec.gbdt.booster import Booster
from fusionrec.gbdt.dataset import Dataset
from fusionrec.gbdt.outofcore.external import ExternalDataset
from fusionrec.gbdt.params import ALIASES, resolve_params


def train(
    params: dict[str, Any],
    dtrain: Dataset,
    num_boost_round: int = 10,
    evals: Sequence[tuple[Dataset, str]] | None = None,
    obj: Callable | None = None,
    custom_metric: Callable | None = None,
    early_stopping_rounds: int | None = None,
    evals_result: dict | None = None,
    verbose_eval: bool | int = False,
    xgb_model: Booster | str | Path | None = None,
    callbacks: Sequence[TrainingCallback] | None = None,
) -> Booster:
    """Train a booster for ``num_boost_round`` rounds (XGBoost's ``xgboost.train`` signature).

    ``xgb_model`` continues training an existing booster (or model file): N rounds, then M
    more, equals N+M rounds in one run. Early stopping watches the last data set in
    ``evals`` and its last metric; ``best_iteration`` is set on the returned booster.
    """
    if not isinstance(num_boost_round, int) or isinstance(num_boost_round, bool) or num_boost_round < 0:
        raise FusionrecError(f"num_boost_round={num_boost_round!r}: must be an integer >= 0")
    if not isinstance(dtrain, (Dataset, ExternalDataset)):
        raise FusionrecError(f"dtrain: expected a fusionrec.gbdt.Dataset or ExternalDataset, got {type(dtrain).__name__}")
    evals = list(evals or [])
    for i, pair in enumerate(evals):
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], (Dataset, ExternalDataset))
                and isinstance(pair[1], str)):  # fmt: skip
            raise FusionrecError(f"evals[{i}]: expected a (Dataset, name) pair")
    booster = start_booster(params, xgb_model)
    if obj is not None:
        booster.set_objective(obj)
    return run_rounds(
        booster, num_boost_round,
        update=lambda model, iteration: model.update(dtrain, iteration),
        evaluate=(lambda model, iteration: model.eval_set(evals, iteration, custom_metric)) if evals else None,
        callbacks=callbacks, verbose_eval=verbose_eval, early_stopping_rounds=early_stopping_rounds,
        evals_result=evals_result,
    )  # fmt: skip


def start_booster(params: dict[str, Any], xgb_model: Booster | str | Path | None) -> Booster:
    """A new booster of ``params``, or a copy of ``xgb_model`` (a booster or model file) with
    ``params`` over its own, to continue training."""
    if xgb_model is None:
        return Booster(params)
    booster = xgb_model.copy() if isinstance(xgb_model, Booster) else Booster.load_model(xgb_model)
    if params:
        # canonical names first, so an alias (eta) overrides the saved name (learning_rate)
        given = {ALIASES.get(name, name): value for name, value in params.items()}
        booster.params = resolve_params({**booster.params, **given})
        booster._objective = None
    return booster


def run_rounds(
    booster: Booster,
    num_boost_round: int,
    *,
    update: Callable[[Booster, int], None],
    evaluate: Callable[[Booster, int], dict[str, dict[str, float]]] | None,
    callbacks: Sequence[TrainingCallback] | None,
    verbose_eval: bool | int,
    early_stopping_rounds: int | None,
    evals_result: dict | None,
) -> Booster:
    """The boosting loop (xgboost's ``train`` loop, which holds no logic): callbacks before,
    ``update(booster, iteration)`` adds a round, ``evaluate(booster, iteration)`` gives each evaluation data set's
    metrics, callbacks after (early stopping among them)."""
    container = list(callbacks or [])
    if verbose_eval:
        container.append(EvaluationMonitor(period=1 if verbose_eval is True else int(verbose_eval)))
    if early_stopping_rounds is not None:
        if evaluate is None:
            raise FusionrecError("early_stopping_rounds: needs at least one data set in evals")
        container.append(EarlyStopping(early_stopping_rounds))
    callbacks_run = CallbackContainer(container)
    log: dict[str, dict[str, list[float]]] = {}
    booster = callbacks_run.before_training(booster)
    start = booster.num_boosted_rounds()
    for iteration in range(start, start + num_boost_round):
        if callbacks_run.before_iteration(booster, iteration, log):
            break
        update(booster, iteration)
        if evaluate is not None:
            for data_name, metrics in evaluate(booster, iteration).items():
                for metric_name, value in metrics.items():
                    log.setdefault(data_name, {}).setdefault(metric_name, []).append(value)
        if callbacks_run.after_iteration(booster, iteration, log):
            break
    booster = callbacks_run.after_training(booster)
    if evals_result is not None:
        evals_result.clear()
        evals_result.update(log)
    return booster

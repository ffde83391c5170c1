"""Booster parameters: XGBoost's names and aliases, validated once before training.

Every parameter has a rule; a value that breaks it raises :class:`FusionrecError`
naming the parameter, the value and the rule. Unknown names are errors (with a
suggestion), never silently ignored.
"""

from __future__ import annotations

import difflib
import numbers
from dataclasses import dataclass
from typing import Any, Callable

from fusionrec.errors import FusionrecError

MAX_BIN = 256  # a Dataset's default and largest max_bin: 255 value bins plus the missing code
MAX_BIN_RULE = "an integer in [2, 256]"


def is_max_bin(value: Any) -> bool:
    """Whether ``value`` is a valid ``max_bin``: an integer in [2, MAX_BIN] (codes are uint8)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and 2 <= value <= MAX_BIN


def check_max_bin(value: Any) -> int:
    """``value`` as an int when it is a valid ``max_bin``; otherwise an error naming the rule."""
    if not is_max_bin(value):
        raise FusionrecError(f"parameter max_bin={value!r}: must be {MAX_BIN_RULE}")
    return int(value)


def dataset_max_bin(params: dict[str, Any] | None) -> int:
    """The max_bin to build a training Dataset with for ``params`` (theirs, else MAX_BIN)."""
    return resolve_params(params)["max_bin"] or MAX_BIN

OBJECTIVES = (
    "reg:squarederror",
    "reg:absoluteerror",
    "reg:pseudohubererror",
    "reg:quantileerror",
    "binary:logistic",
    "binary:logitraw",
    "multi:softprob",
    "multi:softmax",
    "count:poisson",
    "reg:gamma",
    "reg:tweedie",
    "rank:pairwise",
    "rank:ndcg",
    "rank:map",
)
METRICS = ("rmse", "mae", "logloss", "error", "auc", "aucpr", "mlogloss", "merror", "poisson-nloglik")
RANK_METRICS_RULE = "ndcg, map or pre, with an optional @k and XGBoost's '-' suffix (ndcg@10, map-)"
DEFAULT_METRIC = {
    "reg:squarederror": "rmse",
    "reg:absoluteerror": "mae",
    "reg:pseudohubererror": "mae",
    "reg:quantileerror": "mae",
    "binary:logistic": "logloss",
    "binary:logitraw": "logloss",
    "multi:softprob": "mlogloss",
    "multi:softmax": "mlogloss",
    "count:poisson": "poisson-nloglik",
    "reg:gamma": "rmse",
    "reg:tweedie": "rmse",
    "rank:pairwise": "ndcg",
    "rank:ndcg": "ndcg",
    "rank:map": "map",
}
ALIASES = {
    "eta": "learning_rate",
    "lambda": "reg_lambda",
    "alpha": "reg_alpha",
    "min_split_loss": "gamma",
    "nthread": "n_jobs",
    "seed": "random_state",
    "max_bins": "max_bin",
}
TREE_METHODS = ("hist", "auto", "exact", "approx")


@dataclass(frozen=True)
class _Rule:
    default: Any
    check: Callable[[Any], bool]
    rule: str


def _int_in(low: int, high: float = float("inf")) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool) and low <= v <= high


def _real_in(low: float, high: float, low_open: bool = False) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        if not isinstance(v, numbers.Real) or isinstance(v, bool) or v != v:
            return False
        return (v > low if low_open else v >= low) and v <= high

    return check


_INF = float("inf")
RULES: dict[str, _Rule] = {
    "objective": _Rule("reg:squarederror", lambda v: callable(v) or v in OBJECTIVES, f"one of {OBJECTIVES} or a callable"),
    "num_class": _Rule(None, lambda v: v is None or _int_in(2)(v), "an integer >= 2 (multi:* objectives)"),
    "base_score": _Rule(None, lambda v: v is None or _real_in(-_INF, _INF)(v), "a finite number or None"),
    "learning_rate": _Rule(0.3, _real_in(0.0, 1.0, low_open=True), "a number in (0, 1]"),
    "gamma": _Rule(0.0, _real_in(0.0, _INF), "a number >= 0"),
    "max_depth": _Rule(6, _int_in(0), "an integer >= 0 (0: no limit, lossguide only)"),
    "max_leaves": _Rule(0, _int_in(0), "an integer >= 0 (0: no limit)"),
    "grow_policy": _Rule("depthwise", lambda v: v in ("depthwise", "lossguide"), "'depthwise' or 'lossguide'"),
    "min_child_weight": _Rule(1.0, _real_in(0.0, _INF), "a number >= 0"),
    "max_delta_step": _Rule(None, lambda v: v is None or _real_in(0.0, _INF)(v), "a number >= 0 (0: no limit)"),
    "subsample": _Rule(1.0, _real_in(0.0, 1.0, low_open=True), "a number in (0, 1]"),
    "colsample_bytree": _Rule(1.0, _real_in(0.0, 1.0, low_open=True), "a number in (0, 1]"),
    "colsample_bylevel": _Rule(1.0, _real_in(0.0, 1.0, low_open=True), "a number in (0, 1]"),
    "colsample_bynode": _Rule(1.0, _real_in(0.0, 1.0, low_open=True), "a number in (0, 1]"),
    "reg_lambda": _Rule(1.0, _real_in(0.0, _INF), "a number >= 0"),
    "reg_alpha": _Rule(0.0, _real_in(0.0, _INF), "a number >= 0"),
    "tree_method": _Rule("hist", lambda v: v in TREE_METHODS, f"one of {TREE_METHODS}"),
    # None: the training Dataset's (it bins once, when built); hist refuses another value
    "max_bin": _Rule(None, lambda v: v is None or is_max_bin(v), MAX_BIN_RULE + " (default: the training Dataset's)"),
    "sketch_eps": _Rule(None, lambda v: v is None or _real_in(0.0, 1.0, low_open=True)(v) and v < 1.0, "None or a number in (0, 1) (approx: about 1/sketch_eps candidates)"),
    "approx_proposal": _Rule("global", lambda v: v in ("global", "local"), "'global' (once per tree) or 'local' (per node)"),
    "n_jobs": _Rule(None, lambda v: v is None or (_int_in(-1)(v) and v != 0), "None, -1 or an integer >= 1"),
    "random_state": _Rule(0, _int_in(0, 2**63 - 1), "an integer >= 0"),
    "eval_metric": _Rule(None, lambda v: v is None or _metric_list_ok(v), f"None, a metric name in {METRICS} or {RANK_METRICS_RULE}, a list of them, or a callable"),
    "disable_default_eval_metric": _Rule(False, lambda v: isinstance(v, bool), "True or False"),
    "quantile_alpha": _Rule(0.5, _real_in(0.0, 1.0, low_open=True), "a number in (0, 1)"),
    "huber_slope": _Rule(1.0, _real_in(0.0, _INF, low_open=True), "a number > 0"),
    "tweedie_variance_power": _Rule(1.5, _real_in(1.0, 2.0, low_open=True), "a number in (1, 2)"),
    "scale_pos_weight": _Rule(1.0, _real_in(0.0, _INF, low_open=True), "a number > 0"),
    "bin_construct_sample_cnt": _Rule(200_000, _int_in(1), "an integer >= 1"),
    "verbosity": _Rule(1, _int_in(0, 3), "an integer in [0, 3]"),
    "lambdarank_pair_method": _Rule("topk", lambda v: v in ("topk", "mean"), "'topk' or 'mean'"),
    "lambdarank_num_pair_per_sample": _Rule(None, lambda v: v is None or _int_in(1)(v), "None or an integer >= 1"),
    "lambdarank_normalization": _Rule(True, lambda v: isinstance(v, bool), "True or False"),
    "lambdarank_score_normalization": _Rule(True, lambda v: isinstance(v, bool), "True or False"),
    "ndcg_exp_gain": _Rule(True, lambda v: isinstance(v, bool), "True or False"),
}
_RANK_ONLY = ("lambdarank_pair_method", "lambdarank_num_pair_per_sample", "lambdarank_normalization", "lambdarank_score_normalization",
              "ndcg_exp_gain")  # fmt: skip


def _metric_ok(value: Any) -> bool:
    from fusionrec.gbdt.ranking import parse_rank_metric

    return isinstance(value, str) and (value in METRICS or parse_rank_metric(value) is not None)


def _metric_list_ok(value: Any) -> bool:
    if callable(value) or _metric_ok(value):
        return True
    if isinstance(value, (list, tuple)) and value:
        return all(_metric_ok(v) for v in value)
    return False


class ParameterError(FusionrecError):
    """A bad parameter; ``name`` is the parameter as given (a config loader points at its key)."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name


def resolve_params(params: dict[str, Any] | None) -> dict[str, Any]:
    """Return a complete, validated parameter dict with canonical names.

    Raises FusionrecError naming the parameter, the value and the rule for the first
    bad value; an unknown name is an error with the closest known name suggested.
    """
    resolved = {name: rule.default for name, rule in RULES.items()}
    seen_from: dict[str, str] = {}
    for raw_name, value in (params or {}).items():
        name = ALIASES.get(raw_name, raw_name)
        if name not in RULES:
            hint = difflib.get_close_matches(name, list(RULES) + list(ALIASES), n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ParameterError(raw_name, f"unknown parameter {raw_name!r}{suggestion}")
        if name in seen_from and seen_from[name] != raw_name:
            raise ParameterError(raw_name, f"parameter {raw_name!r} given twice (also as {seen_from[name]!r})")
        seen_from[name] = raw_name
        rule = RULES[name]
        if not rule.check(value):
            raise ParameterError(raw_name, f"parameter {raw_name}={value!r}: must be {rule.rule}")
        resolved[name] = value
    _check_combinations(resolved)
    return resolved


def _check_combinations(p: dict[str, Any]) -> None:
    objective = p["objective"]
    if isinstance(objective, str) and objective.startswith("multi:"):
        if p["num_class"] is None:
            raise FusionrecError(f"parameter num_class: required (an integer >= 2) for objective {objective!r}")
    elif p["num_class"] is not None and not callable(objective):
        raise FusionrecError(
            f"parameter num_class={p['num_class']!r}: only valid with a multi:* objective, not {objective!r}"
        )
    if p["grow_policy"] == "depthwise" and p["max_depth"] == 0:
        raise FusionrecError("parameter max_depth=0: unlimited depth needs grow_policy='lossguide'")
    if p["grow_policy"] == "lossguide" and p["max_leaves"] == 1:
        raise FusionrecError("parameter max_leaves=1: a tree needs at least 2 leaves to split (or 0 for no limit)")
    if not (isinstance(objective, str) and objective.startswith("rank:")):
        defaults = {name: RULES[name].default for name in _RANK_ONLY}
        changed = [name for name in _RANK_ONLY if p[name] != defaults[name]]
        if changed:
            raise FusionrecError(f"parameter {changed[0]}={p[changed[0]]!r}: only used by rank:* objectives, not {objective!r}")
    if p["tree_method"] != "approx":
        for name, default in (("sketch_eps", None), ("approx_proposal", "global")):
            if p[name] != default:
                raise FusionrecError(f"parameter {name}={p[name]!r}: only used by tree_method='approx', not {p['tree_method']!r}")
    if p["max_delta_step"] is None:
        # XGBoost's default: 0.7 safeguards Poisson regression's exp link, 0 (off) otherwise.
        p["max_delta_step"] = 0.7 if objective == "count:poisson" else 0.0
    if objective == "binary:logistic" or objective == "binary:logitraw":
        pass
    elif p["scale_pos_weight"] != 1.0:
        raise FusionrecError(
            f"parameter scale_pos_weight={p['scale_pos_weight']!r}: only valid with binary objectives, not {objective!r}"
        )


def n_classes_of(p: dict[str, Any]) -> int:
    """Number of trees grown per boosting round (1, or num_class for multi:*)."""
    objective = p["objective"]
    if isinstance(objective, str) and objective.startswith("multi:"):
        return int(p["num_class"])
    return int(p["num_class"]) if p["num_class"] is not None else 1


def metric_names(p: dict[str, Any]) -> list[str]:
    """Evaluation metrics to report: ``eval_metric`` or the objective's default."""
    metric = p["eval_metric"]
    if metric is None or callable(metric):
        if p["disable_default_eval_metric"] or callable(p["objective"]):
            return []
        return [DEFAULT_METRIC[p["objective"]]]
    return [metric] if isinstance(metric, str) else list(metric)


def effective_n_threads(n_jobs: int | None) -> int:
    import os

    n_cpu = os.cpu_count() or 1
    if n_jobs is None or n_jobs == -1:
        return n_cpu
    return int(n_jobs)

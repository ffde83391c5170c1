"""``metrics_set``: EasyRec's EvalMetrics, and which metrics each task computes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from fusionrec.ctr.config._base import _Strict
from fusionrec.ctr.tasks import BINARY, MULTICLASS, REGRESSION, ZILN, Task


class AUCMetric(_Strict):
    num_thresholds: int = 200


class GAUCMetric(_Strict):
    uid_field: str
    reduction: Literal["mean", "mean_by_sample_num", "mean_by_positive_num"] = "mean"


class SessionAUCMetric(_Strict):
    session_id_field: str
    reduction: Literal["mean", "mean_by_sample_num", "mean_by_positive_num"] = "mean"


class AccuracyMetric(_Strict):
    threshold: float = 0.5


class _Empty(_Strict):
    pass


class TopKMetric(_Strict):
    topk: int = Field(5, ge=1)


# the metrics each task computes (logloss for the classifiers and mean_squared_error for
# regression are always reported)
TASK_METRICS = {
    BINARY: ("auc", "gauc", "session_auc", "accuracy", "max_f1", "mean_squared_error", "root_mean_squared_error",
             "mean_absolute_error", "recall", "precision"),
    MULTICLASS: ("accuracy", "recall_at_topk", "precision_at_topk"),
    REGRESSION: ("mean_squared_error", "root_mean_squared_error", "mean_absolute_error"),
    # EasyRec's ZILN_LOSS model: AUCs on p(value > 0), errors on the predicted value
    ZILN: ("auc", "gauc", "session_auc", "mean_squared_error", "root_mean_squared_error", "mean_absolute_error"),
}


class EvalMetrics(_Strict):
    auc: AUCMetric | None = None
    gauc: GAUCMetric | None = None
    session_auc: SessionAUCMetric | None = None
    accuracy: AccuracyMetric | None = None
    max_f1: _Empty | None = None
    mean_squared_error: _Empty | None = None
    root_mean_squared_error: _Empty | None = None
    mean_absolute_error: _Empty | None = None
    recall: _Empty | None = None
    precision: _Empty | None = None
    recall_at_topk: TopKMetric | None = None
    precision_at_topk: TopKMetric | None = None

    @property
    def name(self) -> str:
        (name,) = [k for k, v in self if v is not None]
        return name

    @model_validator(mode="after")
    def _one(self):
        chosen = [k for k, v in self if v is not None]
        if len(chosen) != 1:
            raise ValueError(f"metrics_set entry: set exactly one metric, found {chosen or 'none'}")
        return self


@dataclass(frozen=True)
class MetricGroup:
    """Metrics computed on one output head against one label; EasyRec names each of them with
    ``suffix`` (``auc_ctr``). ESMM's CVR tower is evaluated twice, as EasyRec does: on CTCVR
    (label = cvr label x ctr label, score = pCVR x pCTR, every impression; ``times_head``) and
    on the clicked impressions only (``only_positive``: rows whose ``only_positive`` label > 0)."""

    suffix: str
    metrics: tuple[EvalMetrics, ...]
    task: Task
    head: str
    label: str
    times_head: str | None = None
    times_label: str | None = None
    only_positive: str | None = None

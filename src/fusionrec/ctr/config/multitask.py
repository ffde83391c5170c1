"""The multi-task model blocks: EasyRec's TaskTower / BayesTaskTower and ESMM, MMoE, PLE, DBMTL, SimpleMultiTask."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from fusionrec.ctr.config._base import _Strict
from fusionrec.ctr.config.losses import LossConfig, check_losses
from fusionrec.ctr.config.metrics import TASK_METRICS, EvalMetrics
from fusionrec.ctr.config.models import DNN, CMBFTower, Tower, UniterTower
from fusionrec.ctr.tasks import LOSS_TYPE_TASKS, MULTICLASS, Task


class TaskTowerConfig(_Strict):
    """EasyRec's TaskTower: one task of a multi-task model. Its outputs, losses and metrics are
    named with ``_<tower_name>`` (``probs_ctr``, ``auc_ctr``); without ``label_name`` it reads
    the label_fields entry at its position, as EasyRec's MultiTaskModel does."""

    tower_name: str = Field(min_length=1)
    label_name: str | None = None
    metrics_set: list[EvalMetrics] = []
    loss_type: str = "CLASSIFICATION"
    num_class: int = Field(1, ge=1)
    dnn: DNN | None = None
    weight: float = Field(1.0, ge=0)
    task_space_indicator_label: str | None = None
    in_task_space_weight: float = Field(1.0, ge=0)
    out_task_space_weight: float = Field(1.0, ge=0)
    losses: list[LossConfig] = []
    use_sample_weight: bool = True

    @field_validator("tower_name")
    @classmethod
    def _name(cls, value):
        if not re.fullmatch(r"[A-Za-z0-9_]+", value):
            raise ValueError(f"tower_name {value!r}: letters, digits and _ only (it names outputs such as probs_{value})")
        return value

    @field_validator("loss_type")
    @classmethod
    def _loss_type(cls, value):
        if value not in LOSS_TYPE_TASKS:
            raise ValueError(f"loss_type {value!r} is not implemented yet by fusionrec for a task tower; it has {list(LOSS_TYPE_TASKS)}")
        return value

    @property
    def task(self) -> Task:
        return Task.of(self.loss_type, self.num_class, self.losses)

    @model_validator(mode="after")
    def _check(self):
        where = f"task tower {self.tower_name!r}"
        if self.loss_type == "SOFTMAX_CROSS_ENTROPY" and self.num_class < 2:
            raise ValueError(f"{where}: loss_type SOFTMAX_CROSS_ENTROPY needs num_class >= 2")
        if self.loss_type in ("L2_LOSS", "SIGMOID_L2_LOSS") and self.num_class != 1:
            raise ValueError(f"{where}: loss_type {self.loss_type} predicts one value: num_class must be 1, got {self.num_class}")
        check_losses(self.losses, self.loss_type, self.num_class, where)
        for metric in self.metrics_set:
            task = self.task
            two_class = ("auc", "gauc", "session_auc") if task.kind == MULTICLASS and task.n_classes == 2 else ()
            if metric.name not in TASK_METRICS[task.kind] + two_class:
                raise ValueError(f"{where}: metrics_set {metric.name} is not a metric of a {task.kind} task; "
                                 f"it has {list(TASK_METRICS[task.kind])}")  # fmt: skip
        return self


class BayesTaskTowerConfig(TaskTowerConfig):
    """EasyRec's BayesTaskTower (DBMTL): a TaskTower whose ``relation_dnn`` also reads the
    relation outputs of ``relation_tower_names`` (towers declared before it)."""

    relation_tower_names: list[str] = []
    relation_dnn: DNN | None = None


def _unique_towers(towers: list[TaskTowerConfig], model: str) -> list[TaskTowerConfig]:
    names = [t.tower_name for t in towers]
    if not towers:
        raise ValueError(f"{model}: needs at least one task_towers entry")
    if len(set(names)) != len(names):
        raise ValueError(f"{model}: tower_name must be unique, got {names}")
    return towers


class ESMMConfig(_Strict):
    groups: list[Tower] = []
    ctr_tower: TaskTowerConfig
    cvr_tower: TaskTowerConfig
    l2_regularization: float = Field(1e-4, ge=0)

    def ordered_task_towers(self) -> list[TaskTowerConfig]:
        """EasyRec's order: the cvr (main) tower, then the ctr (auxiliary) tower."""
        return [self.cvr_tower, self.ctr_tower]

    @model_validator(mode="after")
    def _check(self):
        _unique_towers(self.ordered_task_towers(), "ESMM")
        if self.ctr_tower.loss_type != "CLASSIFICATION" or self.ctr_tower.num_class != 1:
            raise ValueError("ESMM: ctr_tower must be binary (loss_type CLASSIFICATION, num_class 1), as in EasyRec")
        if self.cvr_tower.loss_type not in ("CLASSIFICATION", "L2_LOSS") or self.cvr_tower.num_class != 1:
            raise ValueError(f"ESMM: cvr_tower loss_type {self.cvr_tower.loss_type} num_class {self.cvr_tower.num_class} is "
                             "not supported; EasyRec's ESMM takes CLASSIFICATION or L2_LOSS with num_class 1")  # fmt: skip
        for tower in self.ordered_task_towers():
            if tower.losses or tower.task_space_indicator_label:
                raise ValueError(f"ESMM: task tower {tower.tower_name!r}: losses and task_space_indicator_label are not "
                                 "supported; ESMM's losses are its CTR and CTCVR losses, over every impression")  # fmt: skip
        return self


class ExpertTower(_Strict):
    expert_name: str
    dnn: DNN


class _TaskTowers(_Strict):
    """A multi-task model block of ``task_towers`` (EasyRec's MMoE, PLE, DBMTL, SimpleMultiTask)."""

    task_towers: list[TaskTowerConfig] = []
    l2_regularization: float = Field(1e-4, ge=0)

    def ordered_task_towers(self) -> list[TaskTowerConfig]:
        return list(self.task_towers)

    @model_validator(mode="after")
    def _towers(self):
        _unique_towers(self.task_towers, type(self).__name__.removesuffix("Config"))
        return self


class MMoEConfig(_TaskTowers):
    experts: list[ExpertTower] = []
    expert_dnn: DNN | None = None
    num_expert: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self):
        if self.expert_dnn is not None and self.num_expert < 1:
            raise ValueError("MMoE: expert_dnn needs num_expert >= 1")
        if self.expert_dnn is None and not self.experts:
            raise ValueError("MMoE: set expert_dnn and num_expert, or list experts")
        return self


class ExtractionNetwork(_Strict):
    network_name: str
    expert_num_per_task: int = Field(ge=1)
    share_num: int = Field(0, ge=0)
    task_expert_net: DNN
    share_expert_net: DNN | None = None


class PLEConfig(_TaskTowers):
    extraction_networks: list[ExtractionNetwork] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self):
        for network in self.extraction_networks:
            if network.share_num and network.share_expert_net is None:
                raise ValueError(f"PLE: extraction network {network.network_name!r}: share_num {network.share_num} needs share_expert_net")
        return self


class DBMTLConfig(_TaskTowers):
    bottom_cmbf: CMBFTower | None = None  # the bottom is CMBF's fused features (then bottom_dnn is not read)
    bottom_uniter: UniterTower | None = None  # or UNITER's
    bottom_dnn: DNN | None = None
    expert_dnn: DNN | None = None
    num_expert: int = Field(0, ge=0)
    task_towers: list[BayesTaskTowerConfig] = []

    @model_validator(mode="after")
    def _check(self):
        if self.bottom_cmbf is not None and self.bottom_uniter is not None:
            raise ValueError("DBMTL: set bottom_cmbf or bottom_uniter, not both")
        if self.expert_dnn is not None and self.num_expert < 1:
            raise ValueError("DBMTL: expert_dnn needs num_expert >= 1")
        seen: list[str] = []
        for tower in self.task_towers:
            for name in tower.relation_tower_names:
                if name not in seen:
                    raise ValueError(
                        f"DBMTL: task tower {tower.tower_name!r}: relation_tower_names {name!r} is not a tower declared "
                        f"before it ({seen or 'none'}); relations follow the order of task_towers"
                    )
            seen.append(tower.tower_name)
        return self


class SimpleMultiTaskConfig(_TaskTowers):
    """EasyRec's SimpleMultiTask: task towers only."""

"""``model_config``: EasyRec's EasyRecModel, with one block per registered model (``MODEL_SPECS``)."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, Field, create_model, field_validator, model_validator

from fusionrec.ctr.config._base import EasyRecMessage, _message, _Strict
from fusionrec.ctr.config.backbone import _BACKBONE_MESSAGE, BackboneConfig, ModelParams
from fusionrec.ctr.config.losses import LossConfig, check_losses
from fusionrec.ctr.config.models import (
    AutoIntConfig,
    CMBFConfig,
    DCNConfig,
    DeepFMConfig,
    DLRMConfig,
    FeatureGroupConfig,
    FMConfig,
    MultiTowerConfig,
    RocketLaunchingConfig,
    SeqAttGroupConfig,
    UniterConfig,
    VariationalDropoutConfig,
    WideAndDeepConfig,
)
from fusionrec.ctr.config.multitask import (
    DBMTLConfig,
    ESMMConfig,
    MMoEConfig,
    PLEConfig,
    SimpleMultiTaskConfig,
    TaskTowerConfig,
    _unique_towers,
)
from fusionrec.ctr.tasks import LOSS_TYPE_TASKS, Task


@dataclass(frozen=True)
class ModelSpec:
    """A model fusionrec trains, registered once here: EasyRec's ``model_class`` names for it,
    the ``model_config`` block that configures it (its pydantic model and how EasyRec's message
    of that name is treated), the ``nn.Module`` that builds it ("module:attribute", imported
    when a model is built) and the suffixes of its output heads (the served one first).
    docs/ctr.md's Models table has a row per model_class (tests/ctr/test_models_registry.py)."""

    model_classes: tuple[str, ...]
    block: str
    config: type[BaseModel]
    message: EasyRecMessage
    module: str
    heads: tuple[str, ...] = ("",)


_MODELS = "fusionrec.ctr.models."


_MULTI_TASK = "fusionrec.ctr.models.multitask."


MODEL_SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(("WideAndDeep",), "wide_and_deep", WideAndDeepConfig, _message("WideAndDeep"), _MODELS + "wide_and_deep:WideAndDeep"),
    ModelSpec(("DeepFM",), "deepfm", DeepFMConfig, _message("DeepFM", not_implemented="wide_regularization dense_regularization"),
              _MODELS + "deepfm:DeepFM"),
    ModelSpec(("FM",), "fm", FMConfig, _message("FM"), _MODELS + "fm:FM"),
    ModelSpec(("AutoInt",), "autoint", AutoIntConfig, _message("AutoInt"), _MODELS + "autoint:AutoInt"),
    ModelSpec(("DCN",), "dcn", DCNConfig, _message("DCN"), _MODELS + "dcn:DCN"),
    ModelSpec(("DLRM",), "dlrm", DLRMConfig, _message("DLRM"), _MODELS + "dlrm:DLRM"),
    ModelSpec(("MultiTower", "MultiTowerDIN", "DIN", "MultiTowerBST"), "multi_tower", MultiTowerConfig,
              _message("MultiTower"), _MODELS + "multi_tower:MultiTower"),
    ModelSpec(("RocketLaunching",), "rocket_launching", RocketLaunchingConfig, _message("RocketLaunching"),
              _MODELS + "rocket_launching:RocketLaunching", heads=("_light", "_booster")),
    ModelSpec(("CMBF",), "cmbf", CMBFConfig, _message("CMBF"), _MODELS + "cmbf:CMBF"),
    ModelSpec(("Uniter",), "uniter", UniterConfig, _message("Uniter"), _MODELS + "uniter:Uniter"),
    ModelSpec(("ESMM",), "esmm", ESMMConfig, _message("ESMM"), _MULTI_TASK + "esmm:ESMM"),
    ModelSpec(("MMoE",), "mmoe", MMoEConfig, _message("MMoE"), _MULTI_TASK + "mmoe:MMoE"),
    ModelSpec(("PLE",), "ple", PLEConfig, _message("PLE"), _MULTI_TASK + "ple:PLE"),
    ModelSpec(("DBMTL",), "dbmtl", DBMTLConfig, _message("DBMTL"),
              _MULTI_TASK + "dbmtl:DBMTL"),
    ModelSpec(("SimpleMultiTask",), "simple_multi_task", SimpleMultiTaskConfig, _message("SimpleMultiTask"),
              _MULTI_TASK + "simple:SimpleMultiTask"),
    ModelSpec(("RankModel", "MultiTaskModel"), "backbone", BackboneConfig, _BACKBONE_MESSAGE,
              "fusionrec.ctr.backbone:BackboneModel"),
)  # fmt: skip


MODEL_SPEC_OF = {name: spec for spec in MODEL_SPECS for name in spec.model_classes}


# model_class -> the model_config block that configures it
MODEL_FIELDS = {name: spec.block for name, spec in MODEL_SPEC_OF.items()}


MODEL_BLOCKS = {spec.block: spec for spec in MODEL_SPECS}  # one pydantic field per block


class _ModelConfigBase(_Strict):
    """EasyRec's EasyRecModel; ``ModelConfig`` adds one optional block per ``MODEL_SPECS`` entry."""

    model_class: str
    feature_groups: list[FeatureGroupConfig] = Field(min_length=1)
    seq_att_groups: list[SeqAttGroupConfig] = []
    variational_dropout: VariationalDropoutConfig | None = None
    embedding_regularization: float = Field(0.0, ge=0)
    num_class: int = Field(1, ge=1)
    loss_type: str = "CLASSIFICATION"
    losses: list[LossConfig] = []
    model_params: ModelParams | None = None  # a backbone model's (RankModel, MultiTaskModel)

    @field_validator("loss_type")
    @classmethod
    def _loss_type(cls, value):
        if value not in LOSS_TYPE_TASKS:
            raise ValueError(
                f"loss_type {value!r} is not implemented yet by fusionrec as a model's loss_type; "
                f"it has {list(LOSS_TYPE_TASKS)} (and more in `losses`)"
            )
        return value

    @property
    def towers(self) -> list[TaskTowerConfig]:
        """A multi-task model's task towers, in EasyRec's order (empty for a one-task model)."""
        if self.model_class == "MultiTaskModel":
            return self.model_params.ordered_task_towers() if self.model_params is not None else []
        block = self.block
        return block.ordered_task_towers() if hasattr(block, "ordered_task_towers") else []

    @property
    def l2_regularization(self) -> float:
        """The model's l2_regularization: its block's, or a backbone model's model_params'."""
        if self.spec.block == "backbone":
            return self.model_params.l2_regularization if self.model_params is not None else 0.0
        return getattr(self.block, "l2_regularization", 0.0)

    @property
    def task(self) -> Task:
        """The task of the served output: the model's, or a multi-task model's first tower's."""
        towers = self.towers
        return towers[0].task if towers else Task.of(self.loss_type, self.num_class, self.losses)

    @property
    def head_tasks(self) -> dict[str, Task]:
        """The task of each output head, by suffix (a multi-task model's ``_<tower_name>``)."""
        towers = self.towers
        if towers:
            return {"_" + t.tower_name: t.task for t in towers}
        return {suffix: self.task for suffix in self.spec.heads}

    @property
    def spec(self) -> ModelSpec:
        return MODEL_SPEC_OF[self.model_class]

    @property
    def block(self) -> BaseModel:
        """The model's own config block (``model_config.wide_and_deep``, ...)."""
        return getattr(self, self.spec.block)

    @property
    def head_suffixes(self) -> tuple[str, ...]:
        return tuple(self.head_tasks)

    @model_validator(mode="after")
    def _model(self):
        if self.model_class not in MODEL_FIELDS:
            raise ValueError(
                f"model_class {self.model_class!r} is not implemented yet; fusionrec has {sorted(MODEL_FIELDS)}"
            )
        set_fields = [block for block in MODEL_BLOCKS if getattr(self, block) is not None]
        wanted = MODEL_FIELDS[self.model_class]
        if set_fields != [wanted]:
            raise ValueError(
                f"model_class {self.model_class!r} needs exactly the block {wanted!r}, found {set_fields or 'none'}"
            )
        if self.model_class == "MultiTaskModel" and not self.towers:
            raise ValueError("MultiTaskModel: model_params.task_towers must list at least one task tower")
        if self.model_class == "MultiTaskModel":
            _unique_towers(self.towers, "MultiTaskModel")
        if self.towers:
            for name, default in (("loss_type", "CLASSIFICATION"), ("num_class", 1), ("losses", [])):
                if getattr(self, name) != default:
                    raise ValueError(
                        f"{name}: {self.model_class} is a multi-task model; set {name} on each task tower, as EasyRec reads it there"
                    )
        if self.loss_type == "SOFTMAX_CROSS_ENTROPY" and self.num_class < 2:
            raise ValueError("loss_type SOFTMAX_CROSS_ENTROPY needs num_class >= 2 (one logit per class)")
        if self.loss_type in ("L2_LOSS", "SIGMOID_L2_LOSS") and self.num_class != 1:
            raise ValueError(f"loss_type {self.loss_type} predicts one value: num_class must be 1, got {self.num_class}")
        if any(loss.loss_type == "ORDER_CALIBRATE_LOSS" for loss in self.losses):
            raise ValueError("losses: ORDER_CALIBRATE_LOSS compares a task tower with its relation towers; it is not supported "
                             "on a one-task model")  # fmt: skip
        check_losses(self.losses, self.loss_type, self.num_class, "model_config")
        for group in self.feature_groups:
            if group.wide_deep == "WIDE_AND_DEEP":
                raise ValueError(
                    f"feature_groups {group.group_name!r}: wide_deep WIDE_AND_DEEP is not implemented yet; "
                    "list the features in one WIDE and one DEEP group"
                )
        names = [g.group_name for g in self.feature_groups]
        if len(set(names)) != len(names):
            raise ValueError(f"feature_groups: group names must be unique, got {names}")
        return self


ModelConfig = create_model(
    "ModelConfig", __base__=_ModelConfigBase, **{spec.block: (spec.config | None, None) for spec in MODEL_SPECS}
)

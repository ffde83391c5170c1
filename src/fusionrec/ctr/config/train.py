"""``train_config``, ``eval_config``, ``export_config``: optimizers, learning-rate schedules, checkpoints, exports."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from fusionrec.ctr.config._base import _Strict
from fusionrec.ctr.config.metrics import EvalMetrics


class ConstantLR(_Strict):
    learning_rate: float = Field(0.002, gt=0)


class ExponentialDecayLR(_Strict):
    initial_learning_rate: float = Field(0.002, gt=0)
    decay_steps: int = Field(4000000, ge=1)
    decay_factor: float = Field(0.95, gt=0)
    staircase: bool = True
    min_learning_rate: float = Field(0.0, ge=0)


class CosineDecayLR(_Strict):
    learning_rate_base: float = Field(0.002, gt=0)
    total_steps: int = Field(4000000, ge=1)
    warmup_learning_rate: float = Field(0.0002, ge=0)
    warmup_steps: int = Field(10000, ge=0)
    hold_base_rate_steps: int = Field(0, ge=0)


class LearningRate(_Strict):
    constant_learning_rate: ConstantLR | None = None
    exponential_decay_learning_rate: ExponentialDecayLR | None = None
    cosine_decay_learning_rate: CosineDecayLR | None = None

    @model_validator(mode="after")
    def _one(self):
        if sum(x is not None for x in (self.constant_learning_rate, self.exponential_decay_learning_rate,
                                       self.cosine_decay_learning_rate)) > 1:  # fmt: skip
            raise ValueError("learning_rate: set one schedule")
        return self


class AdamOptimizer(_Strict):
    learning_rate: LearningRate = LearningRate()
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)


class AdagradOptimizer(_Strict):
    learning_rate: LearningRate = LearningRate()
    initial_accumulator_value: float = Field(0.1, ge=0)


class MomentumOptimizer(_Strict):
    learning_rate: LearningRate = LearningRate()
    momentum_optimizer_value: float = Field(0.9, ge=0)


class AdamWOptimizer(AdamOptimizer):
    weight_decay: float = Field(1e-6, ge=0, lt=1)


class MomentumWOptimizer(MomentumOptimizer):
    weight_decay: float = Field(1e-6, ge=0, lt=1)


class RMSPropOptimizer(_Strict):
    learning_rate: LearningRate = LearningRate()
    momentum_optimizer_value: float = Field(0.9, ge=0)
    decay: float = Field(0.9, ge=0, le=1)
    epsilon: float = Field(1.0, gt=0)


class FtrlOptimizer(_Strict):
    learning_rate: LearningRate = LearningRate()
    learning_rate_power: float = Field(-0.5, le=0)
    initial_accumulator_value: float = Field(0.1, gt=0)
    l1_reg: float = Field(0.0, ge=0)
    l2_reg: float = Field(0.0, ge=0)
    l2_shrinkage_reg: float = Field(0.0, ge=0)


OPTIMIZERS = ("adam_optimizer", "lazy_adam_optimizer", "adagrad_optimizer", "momentum_optimizer", "adamw_optimizer",
              "momentumw_optimizer", "rms_prop_optimizer", "ftrl_optimizer")  # fmt: skip


class Optimizer(_Strict):
    adam_optimizer: AdamOptimizer | None = None
    lazy_adam_optimizer: AdamOptimizer | None = None  # Adam whose embedding-table update touches the batch's rows only
    adagrad_optimizer: AdagradOptimizer | None = None
    momentum_optimizer: MomentumOptimizer | None = None
    adamw_optimizer: AdamWOptimizer | None = None
    momentumw_optimizer: MomentumWOptimizer | None = None
    rms_prop_optimizer: RMSPropOptimizer | None = None
    ftrl_optimizer: FtrlOptimizer | None = None
    use_moving_average: bool = False
    embedding_learning_rate_multiplier: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _one(self):
        chosen = [n for n in OPTIMIZERS if getattr(self, n)]
        if len(chosen) != 1:
            raise ValueError(f"optimizer_config: set exactly one optimizer, found {chosen or 'none'}")
        if self.use_moving_average:
            raise ValueError("use_moving_average: true is not implemented yet (only false is accepted)")
        return self

    @property
    def chosen(self) -> tuple[str, Any]:
        for name in OPTIMIZERS:
            if getattr(self, name) is not None:
                return name, getattr(self, name)
        raise AssertionError("validated to have one optimizer")


# EasyRec's train_distribute values. Each one trains data-parallel (synchronous or not) over the
# workers of a cluster; launched as one process, as fusionrec trains today, every one of them is
# the same single-worker training as NoStrategy (docs/ctr.md).
DISTRIBUTION_STRATEGIES = ("NoStrategy", "PSStrategy", "MirroredStrategy", "CollectiveAllReduceStrategy",
                           "ExascaleStrategy", "MultiWorkerMirroredStrategy", "HorovodStrategy", "SokStrategy",
                           "EmbeddingParallelStrategy")  # fmt: skip


class TrainConfig(_Strict):
    optimizer_config: list[Optimizer] = []
    gradient_clipping_by_norm: float = Field(0.0, ge=0)
    num_steps: int = Field(0, ge=0)
    fine_tune_checkpoint: str = ""
    sync_replicas: bool = True
    save_checkpoints_steps: int = Field(1000, ge=1)
    save_checkpoints_secs: int | None = None
    keep_checkpoint_max: int = Field(10, ge=1)
    save_summary_steps: int = 1000
    log_step_count_steps: int = Field(10, ge=1)
    is_profiling: bool = False
    inter_op_parallelism_threads: int = Field(0, ge=0)
    intra_op_parallelism_threads: int = Field(0, ge=0)
    write_graph: bool = True
    startup_delay_steps: float = 15
    train_distribute: str = "NoStrategy"

    @field_validator("train_distribute")
    @classmethod
    def _one_process(cls, value):
        if value not in DISTRIBUTION_STRATEGIES:
            raise ValueError(f"train_distribute {value!r} is not an EasyRec strategy; EasyRec has {list(DISTRIBUTION_STRATEGIES)}")
        return value

    @model_validator(mode="after")
    def _one(self):
        if len(self.optimizer_config) > 3:
            raise ValueError(
                f"optimizer_config: {len(self.optimizer_config)} optimizers; EasyRec trains one, two (embedding "
                "tables / the rest) or, for WideAndDeep, three (WIDE tables / other tables / the rest)"
            )
        return self


class EvalConfig(_Strict):
    num_examples: int = 0
    eval_interval_secs: int = 300
    metrics_set: list[EvalMetrics] = []
    eval_online: bool = False


class ExportConfig(_Strict):
    batch_size: int = -1
    exporter_type: Literal["final", "best", "latest", "none"] = "final"
    best_exporter_metric: str = "auc"
    metric_bigger: bool = True
    exports_to_keep: int = 1
    enable_early_stop: bool = False
    max_check_steps: int = Field(10000, ge=1)

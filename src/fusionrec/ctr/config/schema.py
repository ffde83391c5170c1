"""EasyRec's schema: how fusionrec treats every field of every EasyRec message (implemented, no effect, refused by name)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from fusionrec.ctr.config._base import EasyRecMessage, _message
from fusionrec.ctr.config.backbone import (
    _BACKBONE_MESSAGE,
    COMPONENT_SPECS,
    BackboneConfig,
    BlockConfig,
    BlockInput,
    BlockPackage,
    GateNNParams,
    InputLayerConfig,
    KerasLayerConfig,
    LambdaConfig,
    LayerConfig,
    ModelParams,
    RecurrentLayerConfig,
    RepeatLayerConfig,
)
from fusionrec.ctr.config.data import DataConfig, InputField
from fusionrec.ctr.config.features import (
    AttentionCombinerConfig,
    FeatureConfig,
    FeatureConfigV2,
    SequenceCombinerConfig,
    TextCNNConfig,
)
from fusionrec.ctr.config.losses import (
    BinaryFocalLoss,
    F1ReweightedLoss,
    JRCLoss,
    LossConfig,
    PairwiseLogisticLoss,
    PairwiseLoss,
    ZILNLoss,
)  # fmt: skip
from fusionrec.ctr.config.metrics import AccuracyMetric, AUCMetric, EvalMetrics, GAUCMetric, SessionAUCMetric, TopKMetric
from fusionrec.ctr.config.model_config import MODEL_SPECS, ModelConfig
from fusionrec.ctr.config.models import (
    DNN,
    BSTTower,
    CMBFTower,
    CrossTower,
    FeatureGroupConfig,
    SeqAttGroupConfig,
    SeqAttMap,
    Tower,
    UniterTower,
    VariationalDropoutConfig,
)
from fusionrec.ctr.config.multitask import BayesTaskTowerConfig, ExpertTower, ExtractionNetwork, TaskTowerConfig
from fusionrec.ctr.config.pipeline import PipelineConfig
from fusionrec.ctr.config.train import (
    AdagradOptimizer,
    AdamOptimizer,
    AdamWOptimizer,
    ConstantLR,
    CosineDecayLR,
    EvalConfig,
    ExponentialDecayLR,
    ExportConfig,
    FtrlOptimizer,
    LearningRate,
    MomentumOptimizer,
    MomentumWOptimizer,
    Optimizer,
    RMSPropOptimizer,
    TrainConfig,
)
from fusionrec.ctr.textformat import field_model

# ---------------------------------------------------------------- EasyRec's schema
_MODELS_NOT_IMPLEMENTED = (
    "dummy multi_tower_recall dssm mind dropoutnet metric_learning pdn "
    "dssm_senet dat"
)


EASYREC_MESSAGES: dict[type[BaseModel], EasyRecMessage] = {
    **{spec.config: spec.message for spec in MODEL_SPECS},
    **{spec.config: spec.message for spec in COMPONENT_SPECS if spec.config is not None},
    PipelineConfig: _message(
        "EasyRecConfig",
        not_implemented="kafka_train_input kafka_eval_input datahub_train_input datahub_eval_input hive_train_input "
        "hive_eval_input binary_train_input binary_eval_input fg_json_path",
    ),
    DataConfig: _message(
        "DatasetConfig",
        no_effect="file_shard pai_worker_slice_num eval_batch_size data_compression_type n_data_batch_tfrecord",
        not_implemented="label_sep label_dim extra_label_func selected_cols selected_col_types "
        "rtp_separator feature_fields negative_sampler negative_sampler_v2 hard_negative_sampler hard_negative_sampler_v2 "
        "negative_sampler_in_memory drop_remainder",
    ),
    InputField: _message(
        "Field", not_implemented="input_dim input_shape user_define_fn user_define_fn_path user_define_fn_res_type ignore_val"
    ),
    TrainConfig: _message(
        "TrainConfig",
        no_effect="sparse_accumulator_type num_gpus_per_worker summary_model_vars protocol tensor_fuse "
        "enable_oss_stop_signal dead_line",
        not_implemented="fine_tune_ckpt_var_map force_restore_shape_compatible freeze_gradient incr_save_config",
    ),
    EvalConfig: _message("EvalConfig", no_effect="max_evals save_graph"),
    EvalMetrics: _message("EvalMetrics"),
    TopKMetric: _message("RecallAtTopK"),
    AUCMetric: _message("AUC"),
    GAUCMetric: _message("GAUC"),
    SessionAUCMetric: _message("SessionAUC"),
    AccuracyMetric: _message("Accuracy"),
    ExportConfig: _message(
        "ExportConfig",
        no_effect="multi_placeholder placeholder_named_by_input filter_inputs export_features export_rtp_outputs "
        "asset_files auto_multi_value multi_value_fields",
        not_implemented="early_stop_func early_stop_params",
    ),
    FeatureConfig: _message(
        "FeatureConfig",
        not_implemented="initializer precision ev_params",
    ),
    FeatureConfigV2: _message("FeatureConfigV2", no_effect="embedding_on_cpu"),
    SequenceCombinerConfig: _message("SequenceCombiner", not_implemented="multi_head_attention"),
    AttentionCombinerConfig: _message("AttentionCombiner"),
    TextCNNConfig: _message("TextCNN", not_implemented="mlp"),
    FeatureGroupConfig: _message("FeatureGroupConfig", not_implemented="negative_sampler"),
    SeqAttGroupConfig: _message(
        "SeqAttGroupConfig"
    ),
    SeqAttMap: _message("SeqAttMap"),
    DNN: _message("DNN"),
    ModelConfig: _message(
        "EasyRecModel", no_effect="model_name",
        not_implemented=_MODELS_NOT_IMPLEMENTED + " ev_params kd restore_filters "
        "loss_weight_strategy label_name",
    ),
    Tower: _message("Tower"),
    TaskTowerConfig: _message("TaskTower", not_implemented="task_space_indicator_name task_space_indicator_value"),
    BayesTaskTowerConfig: _message("BayesTaskTower", not_implemented="task_space_indicator_name task_space_indicator_value"),
    ExpertTower: _message("ExpertTower"),
    ExtractionNetwork: _message("ExtractionNetwork"),
    ModelParams: _message(
        "ModelParams", not_implemented="outputs user_tower_idx_in_output item_tower_idx_in_output simi_func temperature scale_simi"
    ),
    BackboneConfig: _BACKBONE_MESSAGE,
    BlockConfig: _message("Block", not_implemented="raw_input embedding_layer"),
    BlockPackage: _message("BlockPackage"),
    BlockInput: _message("Input", not_implemented="reset_input"),
    InputLayerConfig: _message(
        "InputLayer",
        not_implemented="feature_dropout_rate",
    ),
    LayerConfig: _message("Layer"),
    LambdaConfig: _message("Lambda"),
    RecurrentLayerConfig: _message("RecurrentLayer"),
    RepeatLayerConfig: _message("RepeatLayer", not_implemented="input_slice input_fn"),
    KerasLayerConfig: _message(
        "KerasLayer",
        not_implemented="nary_dis_embedding overlap dot_product attention multi_head_attention transformer text_encoder",
    ),
    GateNNParams: _message("GateNN"),
    CrossTower: _message("CrossTower"),
    BSTTower: _message("BSTTower"),
    LossConfig: _message(
        "Loss",
        not_implemented="softmax_loss circle_loss multi_simi_loss pairwise_focal_loss pairwise_hinge_loss "
        "listwise_rank_loss listwise_distill_loss",
    ),
    F1ReweightedLoss: _message("F1ReweighedLoss"),
    JRCLoss: _message("JRCLoss"),
    ZILNLoss: _message("ZILNLoss"),
    BinaryFocalLoss: _message("BinaryFocalLoss"),
    PairwiseLoss: _message("PairwiseLoss"),
    PairwiseLogisticLoss: _message("PairwiseLogisticLoss", not_implemented="hinge_margin"),
    CMBFTower: _message("CMBFTower"),
    UniterTower: _message("UniterTower"),
    VariationalDropoutConfig: _message("VariationalDropoutLayer"),
    Optimizer: _message(
        "Optimizer",
        not_implemented="adam_async_optimizer adam_asyncw_optimizer moving_average_decay",
    ),
    AdamWOptimizer: _message("AdamWOptimizer"),
    MomentumWOptimizer: _message("MomentumWOptimizer"),
    RMSPropOptimizer: _message("RMSPropOptimizer"),
    FtrlOptimizer: _message("FtrlOptimizer"),
    AdamOptimizer: _message("AdamOptimizer"),
    AdagradOptimizer: _message("AdagradOptimizer"),
    MomentumOptimizer: _message("MomentumOptimizer"),
    LearningRate: _message(
        "LearningRate", not_implemented="manual_step_learning_rate poly_decay_learning_rate transformer_learning_rate"
    ),
    ConstantLR: _message("ConstantLearningRate"),
    ExponentialDecayLR: _message("ExponentialDecayLearningRate", not_implemented="burnin_learning_rate burnin_steps"),
    CosineDecayLR: _message("CosineDecayLearningRate"),
}


def _drop_no_effect(data: Any, model: type[BaseModel] | None, dropped: list[str], path: str = "") -> Any:
    """``data`` without the fields that have no effect here (recorded in ``dropped``)."""
    if not isinstance(data, dict) or model is None:
        return data
    message = EASYREC_MESSAGES.get(model)
    out = {}
    for key, value in data.items():
        if message is not None and key in message.no_effect:
            dropped.append(f"{path}{key}")
            continue
        sub_model = field_model(model, key)
        if isinstance(value, list):
            out[key] = [_drop_no_effect(v, sub_model, dropped, f"{path}{key}.") for v in value]
        else:
            out[key] = _drop_no_effect(value, sub_model, dropped, f"{path}{key}.")
    return out


def _owner(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that owns the last field of an error location."""
    model: type[BaseModel] | None = PipelineConfig
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        model = field_model(model, part)
    return model

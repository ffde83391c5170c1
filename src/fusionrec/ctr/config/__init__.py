"""Pipeline configs: EasyRec `.config` (protobuf text format) or YAML, into one typed config.

Both front ends use EasyRec's field names. A `.config` is read as EasyRec reads it
(``text_format.Merge`` semantics, see ``fusionrec.ctr.textformat``) into plain data, and
validated by the same pydantic models as a YAML file, so the two cannot drift apart. Every
field of EasyRec's messages is known (``schema.EASYREC_MESSAGES``): implemented, accepted with no
effect, or refused by name. Errors name the file, the line (text format) and the field's path
(``model_config.wide_and_deep.dnn.hidden_units``).

One module per part of EasyRec's config (easy_rec/python/protos):

- ``data``: data_config (DatasetConfig)
- ``features``: feature_configs / feature_config (FeatureConfig)
- ``metrics``: metrics_set (EvalMetrics)
- ``models``: the one-task model blocks, their DNN and towers, feature groups
- ``losses``: losses (Loss)
- ``multitask``: task towers and the multi-task model blocks
- ``backbone``: model_config.backbone (EasyRec's component graph) and model_params
- ``model_config``: model_config (EasyRecModel) and the model registry ``MODEL_SPECS``
- ``train``: train_config, eval_config, export_config
- ``pipeline``: the whole config and the rules between its parts
- ``schema``: every EasyRec field, implemented, without effect here, or refused by name
- ``load``: reading a file into a ``PipelineConfig``
"""

from fusionrec.ctr.config._base import (
    ACTIVATIONS,
    Activation,
    ConfigRefError,
    EasyRecMessage,
    FieldType,
    check_activation,
    expand_range_name,
)
from fusionrec.ctr.config.backbone import (
    BACKBONE_LAYERS,
    COMPONENT_SPECS,
    AITMTowerParams,
    AutoDisEmbeddingParams,
    BackboneConfig,
    BilinearParams,
    BlockConfig,
    BlockInput,
    BlockPackage,
    BSTEncoderParams,
    CINParams,
    ComponentSpec,
    DINEncoderParams,
    FiBiNetParams,
    FMLayerParams,
    GateNNParams,
    HighwayParams,
    InputLayerConfig,
    KerasLayerConfig,
    LambdaConfig,
    LayerConfig,
    MaskBlockParams,
    MaskNetParams,
    MLPParams,
    MMoELayerParams,
    ModelParams,
    PeriodicEmbeddingParams,
    PPNetParams,
    RecurrentLayerConfig,
    RepeatLayerConfig,
    SENetParams,
    SequenceAugmentParams,
    TextCNNLayerParams,
    WeightedGateParams,
)
from fusionrec.ctr.config.data import INPUT_TYPES, DataConfig, InputField
from fusionrec.ctr.config.features import (
    DENSE_FEATURE_TYPES,
    EASYREC_FEATURE_TYPES_NOT_IMPLEMENTED,
    FEATURE_TYPES,
    AttentionCombinerConfig,
    FeatureConfig,
    FeatureConfigV2,
    SequenceCombinerConfig,
    TextCNNConfig,
    check_feature_inputs,
    expand_features,
    located_features,
    reader_options,
)
from fusionrec.ctr.config.load import (
    _text_format_to_dict,
    apply_edits,
    config_from_dict,
    dump_config,
    error_loc,
    line_of,
    load_config,
)
from fusionrec.ctr.config.losses import (
    LOSS_TYPES,
    BinaryFocalLoss,
    F1ReweightedLoss,
    JRCLoss,
    LossConfig,
    PairwiseLogisticLoss,
    PairwiseLoss,
    ZILNLoss,
    check_losses,
)
from fusionrec.ctr.config.metrics import (
    TASK_METRICS,
    AccuracyMetric,
    AUCMetric,
    EvalMetrics,
    GAUCMetric,
    MetricGroup,
    SessionAUCMetric,
    TopKMetric,
)
from fusionrec.ctr.config.model_config import MODEL_BLOCKS, MODEL_FIELDS, MODEL_SPEC_OF, MODEL_SPECS, ModelConfig, ModelSpec
from fusionrec.ctr.config.models import (
    DNN,
    AutoIntConfig,
    BSTTower,
    CMBFConfig,
    CMBFTower,
    CrossTower,
    DCNConfig,
    DeepFMConfig,
    DLRMConfig,
    FeatureGroupConfig,
    FMConfig,
    MultiTowerConfig,
    RocketLaunchingConfig,
    SeqAttGroupConfig,
    SeqAttMap,
    Tower,
    UniterConfig,
    UniterTower,
    VariationalDropoutConfig,
    WideAndDeepConfig,
)
from fusionrec.ctr.config.multitask import (
    BayesTaskTowerConfig,
    DBMTLConfig,
    ESMMConfig,
    ExpertTower,
    ExtractionNetwork,
    MMoEConfig,
    PLEConfig,
    SimpleMultiTaskConfig,
    TaskTowerConfig,
)
from fusionrec.ctr.config.pipeline import PipelineConfig
from fusionrec.ctr.config.schema import EASYREC_MESSAGES
from fusionrec.ctr.config.train import (
    DISTRIBUTION_STRATEGIES,
    OPTIMIZERS,
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

__all__ = [
    'COMPONENT_SPECS', 'ComponentSpec',
    'reader_options',
    'ACTIVATIONS', 'check_activation',
    '_text_format_to_dict', 'AccuracyMetric', 'Activation', 'AdagradOptimizer', 'AdamOptimizer', 'AdamWOptimizer',
    'AITMTowerParams', 'apply_edits', 'AttentionCombinerConfig', 'AUCMetric', 'AutoDisEmbeddingParams', 'AutoIntConfig',
    'BACKBONE_LAYERS', 'BackboneConfig', 'BayesTaskTowerConfig', 'BilinearParams', 'BinaryFocalLoss', 'BlockConfig',
    'BlockInput', 'BlockPackage', 'BSTEncoderParams', 'BSTTower', 'check_feature_inputs', 'check_losses', 'CINParams',
    'CMBFConfig', 'CMBFTower', 'config_from_dict', 'ConfigRefError', 'ConstantLR', 'CosineDecayLR', 'CrossTower',
    'DataConfig', 'DBMTLConfig', 'DCNConfig', 'DeepFMConfig', 'DENSE_FEATURE_TYPES', 'DINEncoderParams',
    'DISTRIBUTION_STRATEGIES', 'DLRMConfig', 'DNN', 'dump_config', 'EASYREC_FEATURE_TYPES_NOT_IMPLEMENTED',
    'EASYREC_MESSAGES', 'EasyRecMessage', 'error_loc', 'ESMMConfig', 'EvalConfig', 'EvalMetrics', 'expand_features',
    'expand_range_name', 'ExpertTower', 'ExponentialDecayLR', 'ExportConfig', 'ExtractionNetwork', 'F1ReweightedLoss',
    'FEATURE_TYPES', 'FeatureConfig', 'FeatureConfigV2', 'FeatureGroupConfig', 'FiBiNetParams', 'FieldType', 'FMConfig',
    'FMLayerParams', 'FtrlOptimizer', 'GateNNParams', 'GAUCMetric', 'HighwayParams', 'INPUT_TYPES', 'InputField',
    'InputLayerConfig', 'JRCLoss', 'KerasLayerConfig', 'LambdaConfig', 'LayerConfig', 'LearningRate', 'line_of',
    'load_config', 'located_features', 'LOSS_TYPES', 'LossConfig', 'MaskBlockParams', 'MaskNetParams', 'MetricGroup',
    'MLPParams', 'MMoEConfig', 'MMoELayerParams', 'MODEL_BLOCKS', 'MODEL_FIELDS', 'MODEL_SPEC_OF', 'MODEL_SPECS',
    'ModelConfig', 'ModelParams', 'ModelSpec', 'MomentumOptimizer', 'MomentumWOptimizer', 'MultiTowerConfig', 'Optimizer',
    'OPTIMIZERS', 'PairwiseLogisticLoss', 'PairwiseLoss', 'PeriodicEmbeddingParams', 'PipelineConfig', 'PLEConfig',
    'PPNetParams', 'RecurrentLayerConfig', 'RepeatLayerConfig', 'RMSPropOptimizer', 'RocketLaunchingConfig',
    'SENetParams', 'SeqAttGroupConfig', 'SeqAttMap', 'SequenceAugmentParams', 'SequenceCombinerConfig',
    'SessionAUCMetric', 'SimpleMultiTaskConfig', 'TASK_METRICS', 'TaskTowerConfig', 'TextCNNConfig', 'TextCNNLayerParams',
    'TopKMetric', 'Tower', 'TrainConfig', 'UniterConfig', 'UniterTower', 'VariationalDropoutConfig', 'WeightedGateParams',
    'WideAndDeepConfig', 'ZILNLoss',
]

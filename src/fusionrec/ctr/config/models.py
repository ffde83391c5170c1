"""The one-task model blocks of ``model_config`` (EasyRec's wide_and_deep, deepfm, dcn, ...),
their DNN and towers, and the feature groups they read."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from fusionrec.ctr.config._base import _only_implemented, _Strict, check_activation, expand_range_name


class SeqAttMap(_Strict):
    key: list[str] = Field(min_length=1)
    hist_seq: list[str] = Field(min_length=1)
    # sequences parallel to hist_seq that matching no key: attended with hist_seq's weights
    aux_hist_seq: list[str] = []


class DNN(_Strict):
    hidden_units: list[int] = []
    dropout_ratio: list[float] = []
    activation: str = "tf.nn.relu"
    use_bn: bool = True

    @model_validator(mode="after")
    def _check(self):
        if any(u <= 0 for u in self.hidden_units):
            raise ValueError(f"hidden_units must be positive, got {self.hidden_units}")
        if self.dropout_ratio and len(self.dropout_ratio) != len(self.hidden_units):
            raise ValueError(
                f"dropout_ratio has {len(self.dropout_ratio)} entries for {len(self.hidden_units)} hidden_units"
            )
        if any(not 0.0 <= r < 1.0 for r in self.dropout_ratio):
            raise ValueError(f"dropout_ratio entries must be in [0, 1), got {self.dropout_ratio}")
        check_activation(self.activation)
        return self


class SeqAttGroupConfig(_Strict):
    group_name: str | None = None
    seq_att_map: list[SeqAttMap] = Field(min_length=1)
    tf_summary: bool = False
    seq_dnn: DNN | None = None
    allow_key_search: bool = False
    need_key_feature: bool = True  # the output ends with the keys (the candidate)
    allow_key_transform: bool = False  # keys of another width than hist_seq: a linear map to it
    transform_dnn: bool = False  # EasyRec's sequence feature layer does not read it (see docs/ctr.md)

    @property
    def has_options(self) -> bool:
        """Options only a feature group's sequence_features honour (EasyRec's SequenceFeatureLayer)."""
        return (not self.need_key_feature) or self.allow_key_transform or any(att.aux_hist_seq for att in self.seq_att_map)


class FeatureGroupConfig(_Strict):
    group_name: str
    feature_names: list[str] = []
    wide_deep: Literal["DEEP", "WIDE", "WIDE_AND_DEEP"] = "DEEP"
    sequence_features: list[SeqAttGroupConfig] = []

    @field_validator("feature_names")
    @classmethod
    def _expand(cls, value):
        return [name for entry in value for name in expand_range_name(entry)]


class WideAndDeepConfig(_Strict):
    wide_output_dim: int = Field(1, ge=1)
    dnn: DNN
    final_dnn: DNN | None = None
    l2_regularization: float = Field(1e-4, ge=0)


class DeepFMConfig(_Strict):
    dnn: DNN
    final_dnn: DNN | None = None
    wide_output_dim: int = Field(1, ge=1)
    l2_regularization: float = Field(1e-4, ge=0)


class Tower(_Strict):
    input: str
    dnn: DNN


class CrossTower(_Strict):
    input: str
    cross_num: int = Field(3, ge=1)


class DCNConfig(_Strict):
    deep_tower: Tower
    cross_tower: CrossTower
    final_dnn: DNN | None = None
    l2_regularization: float = Field(1e-4, ge=0)


class BSTTower(_Strict):
    input: str
    seq_len: int = Field(5, ge=2)
    multi_head_size: int = Field(4, ge=1)


class MultiTowerConfig(_Strict):
    towers: list[Tower] = []
    din_towers: list[Tower] = []
    bst_towers: list[BSTTower] = []
    final_dnn: DNN | None = None
    l2_regularization: float = Field(1e-4, ge=0)


class FMConfig(_Strict):
    use_variant: bool = False
    l2_regularization: float = Field(1e-4, ge=0)

    @field_validator("use_variant")
    @classmethod
    def _plain(cls, value):
        return _only_implemented("use_variant", value, False, "the plain FM")


class AutoIntConfig(_Strict):
    multi_head_num: int = Field(1, ge=1)
    multi_head_size: int = Field(ge=1)
    interacting_layer_num: int = Field(1, ge=1)
    l2_regularization: float = Field(1e-4, ge=0)


class DLRMConfig(_Strict):
    # as in the paper: bot_dnn over the dense group, top_dnn over the interactions
    top_dnn: DNN
    bot_dnn: DNN
    arch_interaction_op: Literal["dot", "cat"] = "dot"
    arch_interaction_itself: bool = False
    arch_with_dense_feature: bool = False
    l2_regularization: float = Field(1e-5, ge=0)


class CMBFTower(_Strict):
    multi_head_num: int = Field(1, ge=1)
    image_multi_head_num: int = Field(1, ge=1)
    text_multi_head_num: int = Field(1, ge=1)
    text_head_size: int = Field(ge=1)
    image_head_size: int = Field(64, ge=1)
    image_feature_patch_num: int = Field(1, ge=1)
    image_feature_dim: int = Field(0, ge=0)
    image_self_attention_layer_num: int = Field(0, ge=0)
    text_self_attention_layer_num: int = Field(1, ge=0)
    cross_modal_layer_num: int = Field(1, ge=0)
    image_cross_head_size: int = Field(ge=1)
    text_cross_head_size: int = Field(ge=1)
    hidden_dropout_prob: float = Field(0.0, ge=0, lt=1)
    attention_probs_dropout_prob: float = Field(0.0, ge=0, lt=1)
    use_token_type: bool = False
    use_position_embeddings: bool = True
    max_position_embeddings: int = Field(0, ge=0)
    text_seq_emb_dropout_prob: float = Field(0.1, ge=0, lt=1)
    other_feature_dnn: DNN | None = None


class CMBFConfig(_Strict):
    config: CMBFTower
    final_dnn: DNN


class _TransformerParams(_Strict):
    """The BERT encoder fields EasyRec's UNITER tower and BST layer share."""

    hidden_size: int = Field(ge=1)
    num_hidden_layers: int = Field(ge=0)
    num_attention_heads: int = Field(ge=1)
    intermediate_size: int = Field(ge=1)
    hidden_act: Literal["gelu", "relu", "tanh", "swish"] = "gelu"
    hidden_dropout_prob: float = Field(0.1, ge=0, lt=1)
    attention_probs_dropout_prob: float = Field(0.1, ge=0, lt=1)
    use_position_embeddings: bool = True
    initializer_range: float = Field(0.02, gt=0)

    @model_validator(mode="after")
    def _heads(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}")
        return self


class UniterTower(_TransformerParams):
    max_position_embeddings: int = Field(512, ge=0)
    other_feature_dnn: DNN | None = None


class UniterConfig(_Strict):
    config: UniterTower
    final_dnn: DNN


class RocketLaunchingConfig(_Strict):
    share_dnn: DNN | None = None
    booster_dnn: DNN
    light_dnn: DNN
    l2_regularization: float = Field(1e-4, ge=0)
    feature_based_distillation: bool = False
    feature_distillation_function: Literal["COSINE", "INNER_PRODUCT", "EUCLID"] = "COSINE"


class VariationalDropoutConfig(_Strict):
    regularization_lambda: float = Field(0.01, ge=0)
    embedding_wise_variational_dropout: bool = False

"""``model_config.backbone``: EasyRec's component graph (blocks, packages, keras_layer params) and ModelParams."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from fusionrec.ctr.config._base import KERAS_INITIALIZERS, Activation, EasyRecMessage, _message, _only_implemented, _Strict
from fusionrec.ctr.config.features import TextCNNConfig
from fusionrec.ctr.config.models import _TransformerParams
from fusionrec.ctr.config.multitask import BayesTaskTowerConfig, TaskTowerConfig


# ---------------------------------------------------------------- the backbone (EasyRec's component graph)
class MLPParams(_Strict):
    """EasyRec's MLP message as its backbone MLP layer reads it: a field left unset takes the
    layer's own default (``use_bias`` true, ``final_activation`` linear), not the message's."""

    hidden_units: list[int] = Field(min_length=1)
    dropout_ratio: list[float] = []
    activation: Activation = "relu"
    use_bn: bool = True
    use_final_bn: bool = True
    final_activation: Activation = "linear"
    use_bias: bool = True
    use_bn_after_activation: bool = False
    initializer: str = "he_uniform"  # the dense kernels' Keras initializer (EasyRec's keras MLP default)

    @model_validator(mode="after")
    def _check(self):
        if any(u <= 0 for u in self.hidden_units):
            raise ValueError(f"hidden_units must be positive, got {self.hidden_units}")
        if self.initializer not in KERAS_INITIALIZERS:
            raise ValueError(f"initializer {self.initializer!r}: fusionrec knows the Keras initializers {list(KERAS_INITIALIZERS)}")
        if any(not 0.0 <= r < 1.0 for r in self.dropout_ratio):
            raise ValueError(f"dropout_ratio entries must be in [0, 1), got {self.dropout_ratio}")
        return self


class FMLayerParams(_Strict):
    use_variant: bool = False
    l2_regularization: float = Field(1e-4, ge=0)


class MMoELayerParams(_Strict):
    num_task: int = Field(ge=1)
    expert_mlp: MLPParams
    num_expert: int = Field(ge=1)


class CINParams(_Strict):
    hidden_feature_sizes: list[int] = Field(min_length=1)


class SENetParams(_Strict):
    reduction_ratio: int = Field(4, ge=1)
    num_squeeze_group: int = Field(2, ge=1)
    use_skip_connection: bool = True
    use_output_layer_norm: bool = True


class BilinearParams(_Strict):
    type: Literal["all", "each", "interaction"] = "interaction"
    use_plus: bool = True
    num_output_units: int = Field(ge=1)


class FiBiNetParams(_Strict):
    bilinear: BilinearParams | None = None
    senet: SENetParams
    mlp: MLPParams | None = None


class MaskBlockParams(_Strict):
    reduction_factor: float | None = Field(None, gt=0)
    output_size: int | None = Field(None, ge=1)
    aggregation_size: int | None = Field(None, ge=1)
    input_layer_norm: bool = False
    projection_dim: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _size(self):
        if self.reduction_factor is None and self.aggregation_size is None:
            raise ValueError("MaskBlock: set reduction_factor or aggregation_size")
        return self


class MaskNetParams(_Strict):
    mask_blocks: list[MaskBlockParams] = Field(min_length=1)
    use_parallel: bool = True
    mlp: MLPParams | None = None
    input_layer_norm: bool = True


class HighwayParams(_Strict):
    emb_size: int = Field(ge=1)
    activation: Activation = "gelu"  # EasyRec's Highway layer default when unset
    dropout_rate: float = Field(0.0, ge=0, lt=1)
    num_layers: int = Field(1, ge=1)


class WeightedGateParams(_Strict):
    weight_index: int = Field(0, ge=0)
    mlp: MLPParams | None = None


class AITMTowerParams(_Strict):
    project_dim: int | None = Field(None, ge=1)
    transfer_mlp: MLPParams | None = None
    stop_gradient: bool = True


class GateNNParams(_Strict):
    output_dim: int | None = Field(None, ge=1)
    hidden_dim: int | None = Field(None, ge=1)
    activation: Activation = "relu"
    use_bn: bool = False
    dropout_rate: float = Field(0.0, ge=0, lt=1)


class PPNetParams(_Strict):
    mlp: MLPParams
    gate_params: GateNNParams = GateNNParams()
    mode: Literal["lazy", "eager"] = "lazy"  # EasyRec's PPNet layer default when unset
    full_gate_input: bool = True


class PeriodicEmbeddingParams(_Strict):
    embedding_dim: int = Field(ge=2)
    sigma: float = Field(gt=0)
    add_linear_layer: bool = True
    linear_activation: Activation = "relu"
    output_3d_tensor: bool = False
    output_tensor_list: bool = False

    @model_validator(mode="after")
    def _check(self):
        if self.embedding_dim % 2:
            raise ValueError(f"periodic_embedding: embedding_dim {self.embedding_dim} must be even (sin and cos halves)")
        return self


class AutoDisEmbeddingParams(_Strict):
    embedding_dim: int = Field(ge=1)
    num_bins: int = Field(ge=1)
    keep_prob: float = Field(0.8, ge=0)
    temperature: float = Field(gt=0)
    output_3d_tensor: bool = False
    output_tensor_list: bool = False


class BSTEncoderParams(_TransformerParams):
    max_position_embeddings: int = Field(512, ge=1)
    output_all_token_embeddings: bool = True
    target_item_position: Literal["head", "tail", "ignore"] = "head"
    reserve_target_position: bool = True


class DINEncoderParams(_Strict):
    attention_dnn: MLPParams
    need_target_feature: bool = True
    attention_normalizer: Literal["softmax", "sigmoid"] = "softmax"


class TextCNNLayerParams(TextCNNConfig):
    """EasyRec's TextCNN message as its backbone layer reads it: the convolutions, then ``mlp``."""

    mlp: MLPParams | None = None


class SequenceAugmentParams(_Strict):
    """EasyRec's SequenceAugment (CL4SRec's augmentations, Xie et al., ICDE 2022)."""

    mask_rate: float = Field(0.6, ge=0, le=1)
    crop_rate: float = Field(0.2, ge=0, le=1)
    reorder_rate: float = Field(0.6, ge=0, le=1)


@dataclass(frozen=True)
class ComponentSpec:
    """A backbone component fusionrec builds, registered once here: EasyRec's keras_layer
    ``class_name``s for it, its builder ("module:function", imported when a backbone is built:
    ``builder(keras_layer, input Value, where) -> (Op, output Value)``), the ``keras_layer``
    params field it reads (None: none, or ``st_params``) with that field's pydantic model and
    how EasyRec's message of it is treated, whether EasyRec's layer requires those params, and
    whether it reads a sequence input (history, mask, target). ``KerasLayerConfig`` has one
    field per params; tests/ctr/test_backbone.py builds every component."""

    class_names: tuple[str, ...]
    builder: str
    params: str | None = None
    config: type[BaseModel] | None = None
    message: EasyRecMessage | None = None
    required: bool = True
    sequence: bool = False


_C = "fusionrec.ctr.components:"
COMPONENT_SPECS: tuple[ComponentSpec, ...] = (
    ComponentSpec(("MLP",), _C + "_build_mlp", "mlp", MLPParams,
                  _message("MLP", no_effect="use_final_bias", not_implemented="add_to_outputs")),
    ComponentSpec(("FM",), _C + "_build_fm", "fm", FMLayerParams, _message("FM"), required=False),
    ComponentSpec(("Add",), _C + "_build_add"),
    ComponentSpec(("Cross",), _C + "_build_cross"),
    ComponentSpec(("DotInteraction",), _C + "_build_dot"),
    ComponentSpec(("MMoE",), _C + "_build_mmoe", "mmoe", MMoELayerParams, _message("MMoELayer")),
    ComponentSpec(("CIN",), _C + "_build_cin", "cin", CINParams, _message("CIN")),
    ComponentSpec(("SENet",), _C + "_build_senet", "senet", SENetParams, _message("SENet"), required=False),
    ComponentSpec(("FiBiNet",), _C + "_build_fibinet", "fibinet", FiBiNetParams, _message("FiBiNet")),
    ComponentSpec(("MaskBlock",), _C + "_build_mask_block", "mask_block", MaskBlockParams, _message("MaskBlock")),
    ComponentSpec(("MaskNet",), _C + "_build_masknet", "masknet", MaskNetParams, _message("MaskNet")),
    # the backbone Highway layer reads neither input nor init_gate_bias
    ComponentSpec(("Highway",), _C + "_build_highway", "highway", HighwayParams,
                  _message("HighWayTower", no_effect="input init_gate_bias")),
    ComponentSpec(("Gate",), _C + "_build_gate", "gate", WeightedGateParams, _message("WeightedGate"), required=False),
    ComponentSpec(("DIN",), _C + "_build_din", "din", DINEncoderParams, _message("DINEncoder"), sequence=True),
    ComponentSpec(("TextCNN",), _C + "_build_text_cnn", "text_cnn", TextCNNLayerParams, _message("TextCNN"), sequence=True),
    ComponentSpec(("BST",), _C + "_build_bst", "bst", BSTEncoderParams, _message("BSTEncoder"), sequence=True),
    ComponentSpec(("PeriodicEmbedding",), _C + "_build_periodic", "periodic_embedding", PeriodicEmbeddingParams,
                  _message("PeriodicEmbedding")),
    ComponentSpec(("AutoDisEmbedding",), _C + "_build_autodis", "auto_dis_embedding", AutoDisEmbeddingParams,
                  _message("AutoDisEmbedding")),
    ComponentSpec(("Bilinear",), _C + "_build_bilinear", "bilinear", BilinearParams, _message("Bilinear")),
    ComponentSpec(("PPNet",), _C + "_build_ppnet", "ppnet", PPNetParams, _message("PPNet")),
    ComponentSpec(("AITMTower",), _C + "_build_aitm", "aitm", AITMTowerParams, _message("AITMTower")),
    # SeqAugmentOps is EasyRec's custom-op build of the same augmentation
    ComponentSpec(("SeqAugment", "SeqAugmentOps"), _C + "_build_seq_augment", "seq_aug", SequenceAugmentParams,
                  _message("SequenceAugment"), required=False, sequence=True),
    ComponentSpec(("AuxiliaryLoss",), _C + "_build_auxiliary_loss"),
)  # fmt: skip
COMPONENT_SPEC_OF = {name: spec for spec in COMPONENT_SPECS for name in spec.class_names}
# keras_layer class_name -> the params field it reads (None: it takes none, or st_params)
BACKBONE_LAYERS = {name: spec.params for name, spec in COMPONENT_SPEC_OF.items()}
# the params fields, one per component that reads one (SeqAugment and SeqAugmentOps share theirs)
LAYER_PARAMS = {spec.params: spec.config for spec in COMPONENT_SPECS if spec.params is not None}
_LAYER_PARAMS = tuple(LAYER_PARAMS)


class _KerasLayerBase(_Strict):
    """EasyRec's KerasLayer: ``class_name`` and the params message of that component;
    ``KerasLayerConfig`` adds one optional field per ``COMPONENT_SPECS`` params."""

    class_name: str
    st_params: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _known(self):
        if self.class_name not in BACKBONE_LAYERS:
            raise ValueError(f"keras_layer class_name {self.class_name!r} is not implemented yet by fusionrec; it has "
                             f"{sorted(BACKBONE_LAYERS)}")  # fmt: skip
        spec = COMPONENT_SPEC_OF[self.class_name]
        wanted = spec.params
        given = [name for name in _LAYER_PARAMS if getattr(self, name) is not None]
        if given and given != [wanted]:
            raise ValueError(f"keras_layer {self.class_name}: reads {wanted or 'no params message'}, got {given}")
        if wanted is not None and spec.required and getattr(self, wanted) is None:
            raise ValueError(f"keras_layer {self.class_name} without its {wanted} {{...}} params is not supported "
                             f"(EasyRec's {self.class_name} layer requires them too)")  # fmt: skip
        return self


KerasLayerConfig = create_model(
    "KerasLayerConfig", __base__=_KerasLayerBase, **{name: (model | None, None) for name, model in LAYER_PARAMS.items()}
)


class LambdaConfig(_Strict):
    expression: str


class RecurrentLayerConfig(_Strict):
    num_steps: int = Field(1, ge=1)
    fixed_input_index: int | None = Field(None, ge=0)
    keras_layer: KerasLayerConfig


class RepeatLayerConfig(_Strict):
    num_repeat: int = Field(1, ge=1)
    output_concat_axis: int | None = None
    keras_layer: KerasLayerConfig


class LayerConfig(_Strict):
    lambda_: LambdaConfig | None = Field(None, alias="lambda")
    keras_layer: KerasLayerConfig | None = None
    recurrent: RecurrentLayerConfig | None = None
    repeat: RepeatLayerConfig | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)


class InputLayerConfig(_Strict):
    do_batch_norm: bool = False
    do_layer_norm: bool = False
    dropout_rate: float = Field(0.0, ge=0, lt=1)
    only_output_feature_list: bool = False
    only_output_3d_tensor: bool = False
    output_2d_tensor_and_feature_list: bool = False
    output_seq_and_normal_feature: bool = False
    concat_seq_feature: bool = True
    wide_output_dim: int | None = Field(None, ge=1)

    @field_validator("concat_seq_feature")
    @classmethod
    def _concat(cls, value):
        return _only_implemented("concat_seq_feature", value, True, "the sequences concatenated, as DIN / TextCNN read them")


class BlockInput(_Strict):
    """EasyRec's Input: a feature group, a block, a package called on ``package_input`` (a
    block or another package), or (inside a package) the input the package was called with."""

    feature_group_name: str | None = None
    block_name: str | None = None
    package_name: str | None = None
    use_package_input: bool = False
    package_input: str | None = None
    package_input_fn: str | None = None
    input_fn: str | None = None
    input_slice: str | None = None
    ignore_input: bool = False

    @property
    def name(self) -> str:
        for name in (self.feature_group_name, self.block_name, self.package_name):
            if name is not None:
                return name
        return "<package input>"

    @model_validator(mode="after")
    def _one(self):
        chosen = [self.feature_group_name is not None, self.block_name is not None, self.package_name is not None,
                  self.use_package_input]  # fmt: skip
        if sum(chosen) != 1:
            raise ValueError("an input sets exactly one of feature_group_name, block_name, package_name and use_package_input")
        if (self.package_input is not None or self.package_input_fn is not None) and self.package_name is None:
            raise ValueError("an input's package_input / package_input_fn go with its package_name")
        return self


class BlockConfig(_Strict):
    name: str = Field(min_length=1)
    inputs: list[BlockInput] = Field(min_length=1)
    input_concat_axis: int = -1
    merge_inputs_into_list: bool = False
    extra_input_fn: str | None = None
    layers: list[LayerConfig] = []
    input_layer: InputLayerConfig | None = None
    lambda_: LambdaConfig | None = Field(None, alias="lambda")
    keras_layer: KerasLayerConfig | None = None
    recurrent: RecurrentLayerConfig | None = None
    repeat: RepeatLayerConfig | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_layer(self):
        chosen = [n for n in ("input_layer", "lambda_", "keras_layer", "recurrent", "repeat") if getattr(self, n) is not None]
        if len(chosen) > 1:
            raise ValueError(f"block {self.name!r}: set one layer, found {chosen}")
        if chosen and self.layers:
            raise ValueError(f"block {self.name!r}: set one layer or `layers`, not both")
        if self.input_layer is not None and (len(self.inputs) != 1 or self.inputs[0].feature_group_name is None):
            raise ValueError(f"block {self.name!r}: an input_layer block takes one input, a feature_group_name")
        return self


def _topological_order(reads: dict[str, list[str]], where: str) -> list[str]:
    """The names of ``reads`` (name -> the names it reads) each after those it reads, in the
    given order otherwise; a cycle is an error naming it."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise ValueError(f"{where}: blocks form a cycle: {' -> '.join(path + [name])}")
        state[name] = 1
        for read in reads[name]:
            visit(read, path + [name])
        state[name] = 2
        order.append(name)

    for name in reads:
        visit(name, [])
    return order


class BlockPackage(_Strict):
    """EasyRec's BlockPackage: blocks called like one layer from other blocks' inputs
    (``package_name``), once per call and sharing their weights across calls (CL4SRec's
    encoder over the original and the augmented sequences)."""

    name: str = Field(min_length=1)
    blocks: list[BlockConfig] = Field(min_length=1)
    concat_blocks: list[str] = []
    output_blocks: list[str] = []

    def block_order(self) -> list[str]:
        """The package's blocks, each after the package blocks it reads."""
        internal = {b.name for b in self.blocks}
        reads = {b.name: [i.block_name for i in b.inputs if i.block_name in internal] for b in self.blocks}
        return _topological_order(reads, f"backbone package {self.name!r}")

    def output(self) -> str:
        """The package's one output block: its concat_blocks / output_blocks, or the block no
        other package block reads."""
        names = list(self.output_blocks or self.concat_blocks)
        if not names:
            read = {i.block_name for b in self.blocks for i in b.inputs}
            names = [name for name in self.block_order() if name not in read]
        if len(names) != 1:
            raise ValueError(f"backbone package {self.name!r}: a package of several outputs {names} is not implemented yet by "
                             "fusionrec; it gives one block's output")  # fmt: skip
        return names[0]


class BackboneConfig(_Strict):
    """EasyRec's BackboneTower: blocks (a DAG), concat_blocks (default: the blocks no other
    block reads), top_mlp."""

    blocks: list[BlockConfig] = Field(min_length=1)
    concat_blocks: list[str] = []
    output_blocks: list[str] = []
    top_mlp: MLPParams | None = None
    packages: list[BlockPackage] = []

    @model_validator(mode="after")
    def _graph(self):
        names = [b.name for b in self.blocks]
        if len(set(names)) != len(names):
            raise ValueError(f"backbone: block names must be unique, got {names}")
        for name in self.concat_blocks + self.output_blocks:
            if name not in names:
                raise ValueError(f"backbone: concat_blocks / output_blocks name {name!r}, which is not a block; blocks are {names}")
        if self.output_blocks and self.concat_blocks:
            raise ValueError("backbone: set concat_blocks (merged into one output) or output_blocks (a list of outputs), not both")
        package_names = [p.name for p in self.packages]
        if len(set(package_names)) != len(package_names) or set(package_names) & set(names):
            raise ValueError(f"backbone: package names must be unique and differ from the block names, got {package_names}")
        for block in self.blocks:
            if any(source.use_package_input for source in block.inputs):
                raise ValueError(f"backbone block {block.name!r}: use_package_input is for the blocks of a package")
        self.block_order()
        for package in self.packages:
            package.block_order()
        return self

    def package(self, name: str, where: str) -> "BlockPackage":
        for package in self.packages:
            if package.name == name:
                return package
        raise ValueError(f"{where}: package_name {name!r} is not a package; packages are {[p.name for p in self.packages]}")

    def outer_reads(self, source: BlockInput, where: str, calling: tuple[str, ...] = ()) -> list[str]:
        """The backbone blocks an input reads: its block, or a package's ``package_input`` (a
        block, or a package) and the backbone blocks the package's own blocks read."""
        if source.block_name is not None:
            return [source.block_name]
        if source.package_name is None:
            return []
        name = source.package_name
        if name in calling:
            raise ValueError(f"backbone: packages call each other in a cycle: {' -> '.join(calling + (name,))}")
        package = self.package(name, where)
        reads: list[str] = []
        if source.package_input is not None:
            inner = BlockInput(package_name=source.package_input) if source.package_input in {p.name for p in self.packages} \
                else BlockInput(block_name=source.package_input)  # fmt: skip
            reads += self.outer_reads(inner, where, calling + (name,))
        internal = {b.name for b in package.blocks}
        for block in package.blocks:
            for inner in block.inputs:
                if inner.block_name is not None and inner.block_name in internal:
                    continue
                reads += self.outer_reads(inner, f"backbone package {name!r} block {block.name!r}", calling + (name,))
        return reads

    def block_order(self) -> list[str]:
        """The blocks in an order where every block comes after the blocks it reads (through
        packages too; a cycle is an error naming its blocks)."""
        names = [b.name for b in self.blocks]
        reads: dict[str, list[str]] = {}
        for block in self.blocks:
            where = f"backbone block {block.name!r}"
            reads[block.name] = [read for source in block.inputs for read in self.outer_reads(source, where)]
            for read in reads[block.name]:
                if read not in reads and read not in names:
                    raise ValueError(f"{where}: input block_name {read!r} is not a block; blocks are {names}")
        return _topological_order(reads, "backbone")

    def outputs(self) -> list[str]:
        """output_blocks or concat_blocks, or (EasyRec's default) every block no other block reads, in order."""
        if self.output_blocks:
            return list(self.output_blocks)
        if self.concat_blocks:
            return list(self.concat_blocks)
        read = {i.block_name for b in self.blocks for i in b.inputs if i.block_name is not None}
        return [name for name in self.block_order() if name not in read]


class ModelParams(_Strict):
    """EasyRec's ModelParams: a backbone model's l2_regularization and (MultiTaskModel) task towers."""

    l2_regularization: float = Field(0.0, ge=0)
    task_towers: list[BayesTaskTowerConfig] = []

    def ordered_task_towers(self) -> list[TaskTowerConfig]:
        return list(self.task_towers)


_BACKBONE_MESSAGE = _message("BackboneTower")

"""EasyRec's backbone: a model declared as a graph of blocks (``model_config.backbone``).

Each block reads feature groups (through an input layer) or other blocks, merges its inputs
and applies one layer: a registered component (``COMPONENTS``, by EasyRec's ``class_name``), a
lambda, a ``recurrent`` or ``repeat`` of a component, or a sequence of those (``layers``).
``RankModel`` puts an output layer over the backbone's output (unless it already has
num_class units); ``MultiTaskModel`` puts ``model_params.task_towers`` over it (one output per
tower when the backbone gives a list of as many tensors).

The graph is built once, in Python, with every block's output shape known (``Value``): a
wrong input (a list where a component needs one tensor, unequal widths to add or stack) is
an error naming the block. At run time every block's output is a ``List[Tensor]`` (one
element for a tensor), so the whole graph is one TorchScript module.

Lambdas (``input_fn`` and the like) are parsed, never evaluated (``fusionrec.ctr.backbone_ops``);
components are registered in ``fusionrec.ctr.components``.
"""

from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from fusionrec.ctr.backbone_ops import Chain, Op, Value, _axis, compile_lambda
from fusionrec.ctr.components import EasyRecMLP, _one_vector, build_component
from fusionrec.ctr.config import BackboneConfig, BlockConfig
from fusionrec.ctr.models.base import ModelInputs
from fusionrec.ctr.models.multitask.base import _MultiTask
from fusionrec.ctr.models.multitask.dbmtl import RelationTowers
from fusionrec.errors import FusionrecError


class Recurrent(Op):
    """EasyRec's recurrent layer: the component applied ``num_steps`` times, each on the last
    output; with ``fixed_input_index`` the input is a list whose other entries are replaced by
    each step's output, and the fixed one dropped at the end."""

    def __init__(self, steps: List[Op], fixed: int, n_inputs: int):
        super().__init__()
        self.steps = nn.ModuleList(steps)
        self.fixed = fixed
        self.n_inputs = n_inputs

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        output = x
        for step in self.steps:
            new = step(output)
            if self.fixed >= 0:
                replaced: List[Tensor] = []
                j = 0
                for i in range(self.n_inputs):
                    if i == self.fixed:
                        replaced.append(output[i])
                    else:
                        replaced.append(new[j] if len(new) > 1 else new[0])
                        j += 1
                output = replaced
            else:
                output = new
        if self.fixed >= 0:
            kept: List[Tensor] = []
            for i in range(self.n_inputs):
                if i != self.fixed:
                    kept.append(output[i])
            return kept
        return output


class Repeat(Op):
    """EasyRec's repeat layer: ``num_repeat`` copies of the component on the same input; their
    outputs as a list (one: itself; with ``output_concat_axis``: concatenated)."""

    def __init__(self, copies: List[Op], axis: int):
        super().__init__()
        self.copies = nn.ModuleList(copies)
        self.axis = axis

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        outputs: List[Tensor] = []
        for copy in self.copies:
            outputs.extend(copy(x))
        if self.axis != 0:
            return [torch.cat(outputs, dim=self.axis)]
        return outputs


def build_layer(layer, value: Value, where: str) -> Tuple[Op, Value]:
    """The op of one block layer (keras_layer, lambda, recurrent or repeat)."""
    if layer.keras_layer is not None:
        return build_component(layer.keras_layer, value, where)
    if layer.lambda_ is not None:
        return compile_lambda(layer.lambda_.expression, value, f"{where} lambda")
    if layer.recurrent is not None:
        conf = layer.recurrent
        fixed = conf.fixed_input_index if conf.fixed_input_index is not None else -1
        if fixed >= 0 and (not value.is_list or fixed >= len(value.shapes)):
            raise FusionrecError(f"{where}: recurrent fixed_input_index {fixed} needs a list input longer than that, "
                                 f"got {value.describe()}")  # fmt: skip
        steps, current = [], value
        for i in range(conf.num_steps):
            op, out = build_component(conf.keras_layer, current, f"{where} step {i}")
            steps.append(op)
            if fixed >= 0:
                if out.is_list:
                    raise FusionrecError(f"{where}: recurrent with fixed_input_index needs a component giving one tensor")
                current = Value.of_list([s if j == fixed else out.shapes[0] for j, s in enumerate(value.shapes)])
            else:
                current = out
        if fixed >= 0:
            kept = [s for j, s in enumerate(current.shapes) if j != fixed]
            current = Value((kept[0],), False) if len(kept) == 1 else Value.of_list(kept)
        return Recurrent(steps, fixed, len(value.shapes)), current
    conf = layer.repeat
    copies, outs = [], []
    for i in range(conf.num_repeat):
        op, out = build_component(conf.keras_layer, value, f"{where} copy {i}")
        if out.is_list:
            raise FusionrecError(f"{where}: repeat needs a component giving one tensor, got {out.describe()}")
        copies.append(op)
        outs.append(out.shapes[0])
    if conf.num_repeat == 1:
        return Repeat(copies, 0), Value((outs[0],), False)
    if conf.output_concat_axis is not None:
        holder = Value.of_list(outs)
        concat_op, concat_value = compile_lambda(f"lambda x: tf.concat(x, axis={conf.output_concat_axis})", holder, where)
        return Chain([Repeat(copies, 0), concat_op]), concat_value
    return Repeat(copies, 0), Value.of_list(outs)


# ------------------------------------------------------------------ blocks and the graph
class InputBlock(nn.Module):
    """A feature group through EasyRec's input layer (its EnhancedInputLayer): the group's
    concatenated embeddings (B, D) (a WIDE group's too: one wide_output_dim slice per
    feature, which EasyRec's samples sum with a lambda), with ``only_output_feature_list``
    each feature's (a list), with ``only_output_3d_tensor`` the fields stacked (B, F, D), with
    ``output_2d_tensor_and_feature_list`` both. ``do_batch_norm`` / ``do_layer_norm`` normalize
    the concatenated output and each feature on its own; ``dropout_rate`` drops on both."""

    def __init__(self, group: nn.Module, mode: str, norm: str, dropout: float):
        super().__init__()
        self.group = group
        self.mode = mode
        dims = [int(d) for d in group.field_dims]
        self.has_norm = norm != ""
        make = (lambda d: nn.BatchNorm1d(d)) if norm == "batch" else (lambda d: nn.LayerNorm(d))
        self.norm = make(sum(dims)) if self.has_norm else nn.Identity()
        self.field_norms = nn.ModuleList(make(d) for d in dims) if self.has_norm else nn.ModuleList()
        self.dropout = nn.Dropout(dropout)

    def forward(self, features: Dict[str, Tensor], values: List[List[Tensor]]) -> List[Tensor]:
        fields = self.group.fields(features)
        out_fields: List[Tensor] = []
        if self.has_norm:
            for i, norm in enumerate(self.field_norms):
                out_fields.append(self.dropout(norm(fields[i])))
        else:
            for field in fields:
                out_fields.append(self.dropout(field))
        if self.mode == "list":
            return out_fields
        if self.mode == "3d":
            return [torch.stack(out_fields, dim=1)]
        combined = self.dropout(self.norm(torch.cat(fields, dim=1)))
        if self.mode == "pair":
            return [combined] + out_fields
        return [combined]


class SequenceInputBlock(nn.Module):
    """A feature group through EasyRec's ``output_seq_and_normal_feature`` input layer:
    [history (B, L, D), position mask (B, L), target (B, Dt)] (``SequenceInputSlot``)."""

    def __init__(self, slot: nn.Module):
        super().__init__()
        self.slot = slot

    def forward(self, features: Dict[str, Tensor], values: List[List[Tensor]]) -> List[Tensor]:
        return self.slot(features)


class Block(nn.Module):
    """One block: gather its inputs (with input_slice / input_fn), merge them (EasyRec's
    merge_inputs, or a list with merge_inputs_into_list), extra_input_fn, then its layers."""

    def __init__(self, sources: List[int], input_ops: List[Op], merge: str, axis: int, extra: Op, layers: List[Op]):
        super().__init__()
        self.sources = sources
        self.input_ops = nn.ModuleList(input_ops)
        self.merge = merge  # "one", "list" (lists appended) or "concat" (tensors concatenated)
        self.axis = axis
        self.extra = extra
        self.layers = nn.ModuleList(layers)

    def forward(self, features: Dict[str, Tensor], values: List[List[Tensor]]) -> List[Tensor]:
        gathered: List[Tensor] = []
        parts: List[Tensor] = []
        for i, op in enumerate(self.input_ops):
            part = op(values[self.sources[i]])
            if self.merge == "concat":
                parts.append(part[0])
            else:
                gathered.extend(part)
        merged = [torch.cat(parts, dim=self.axis)] if self.merge == "concat" else gathered
        out = self.extra(merged)
        for layer in self.layers:
            out = layer(out)
        return out


def merge_values(values: List[Value], axis: int, where: str) -> Tuple[str, int, Value]:
    """EasyRec's merge_inputs: one input as it is; lists appended into one list (a tensor among
    them joins as one element); tensors concatenated on ``axis``."""
    if len(values) == 1:
        return "one", axis, values[0]
    for value in values:
        if value.parts:
            raise FusionrecError(f"{where}: an input is {value.describe()}")
    if any(v.is_list for v in values):
        return "list", axis, Value.of_list([s for v in values for s in v.shapes])
    holder = Value.of_list([v.shapes[0] for v in values])
    _, out = compile_lambda(f"lambda x: tf.concat(x, axis={axis})", holder, where)
    return "concat", _axis(holder, axis, 0, where), out


class BackboneBuilder:
    """Builds the modules of a ``model_config.backbone`` block graph, each block after the blocks
    it reads, checking shapes as it goes (a shape error names the block): ``modules[i]`` is a
    block's module and ``values[i]`` the ``Value`` it gives; ``index`` maps block names to
    positions; a package's blocks are built at its first call and shared by later ones."""

    def __init__(self, inputs: ModelInputs, backbone: BackboneConfig):
        self.backbone = backbone
        self.tables = inputs.tables()
        self.group_configs = {g.group_name: g for g in inputs.feature_groups}
        self.package_names = {p.name for p in self.backbone.packages}
        self.index: Dict[str, int] = {}
        self.values: List[Value] = []
        self.modules: List[nn.Module] = []
        self.groups: Dict[Tuple[str, Optional[int]], nn.Module] = {}
        # a package's blocks, built at its first call: (extra, layers, input value, output value), by (package, block)
        self.shared: Dict[Tuple[str, str], Tuple[Op, List[Op], Value, Value]] = {}
        self.auxiliary: List[int] = []  # the AuxiliaryLoss blocks: their losses join the training loss

    def build(self) -> None:
        """Every backbone block, in an order where each comes after the blocks it reads."""
        by_name = {b.name: b for b in self.backbone.blocks}
        for name in self.backbone.block_order():
            self.index[name] = self.add_block(by_name[name], f"backbone block {name!r}", {}, None)

    def group_input(self, name: str, wide_dim: Optional[int], where: str) -> nn.Module:
        if name not in self.group_configs:
            raise FusionrecError(f"{where}: feature_group_name {name!r} is not a feature group; groups are {sorted(self.group_configs)}")
        key = (name, wide_dim)
        if key not in self.groups:
            self.groups[key] = self.tables.group(self.group_configs[name], wide_dim)
        return self.groups[key]

    def add_input_block(self, key: str, block: Optional[BlockConfig], group_name: str, where: str) -> None:
        layer = block.input_layer if block is not None else None
        if layer is not None and layer.output_seq_and_normal_feature:
            if group_name not in self.group_configs:
                raise FusionrecError(f"{where}: feature_group_name {group_name!r} is not a feature group")
            slot = self.tables.sequence_input(self.group_configs[group_name], where)
            parts = [Value.tensor(-1, slot.history_dim), Value.tensor(-1)]  # -1: the batch's sequence length
            if slot.has_target:
                parts.append(Value.tensor(slot.dim))
            self.index[key] = len(self.modules)
            self.modules.append(SequenceInputBlock(slot))
            self.values.append(Value(tuple(p.shapes[0] for p in parts), True, tuple(parts)))
            return
        wide = self.group_configs.get(group_name) is not None and self.group_configs[group_name].wide_deep == "WIDE"
        wide_dim = layer.wide_output_dim if layer is not None and layer.wide_output_dim else None
        if wide and wide_dim is None:
            raise FusionrecError(f"{where}: feature group {group_name!r} is WIDE; its input_layer needs wide_output_dim")
        group = self.group_input(group_name, wide_dim if wide else None, where)
        dims = [int(d) for d in group.field_dims]
        if layer is not None and layer.only_output_feature_list:
            mode, value = "list", Value.of_list([(d,) for d in dims])
        elif layer is not None and layer.output_2d_tensor_and_feature_list:
            fields = Value.of_list([(d,) for d in dims])
            combined = Value.tensor(sum(dims))
            mode, value = "pair", Value(combined.shapes + fields.shapes, True, (combined, fields))
        elif layer is not None and layer.only_output_3d_tensor:
            if len(set(dims)) != 1:
                raise FusionrecError(f"{where}: only_output_3d_tensor stacks the fields, which need one width; got {dims}")
            mode, value = "3d", Value.tensor(len(dims), dims[0])
        else:
            mode, value = "concat", Value.tensor(sum(dims))
        if layer is not None and layer.do_batch_norm and layer.do_layer_norm:
            raise FusionrecError(f"{where}: do_batch_norm and do_layer_norm cannot both be set (EasyRec refuses it too)")
        norm = "batch" if layer is not None and layer.do_batch_norm else "layer" if layer is not None and layer.do_layer_norm else ""
        dropout = layer.dropout_rate if layer is not None else 0.0
        self.index[key] = len(self.modules)
        self.modules.append(InputBlock(group, mode, norm, dropout))
        self.values.append(value)

    def read_input(self, source, where: str, scope: Dict[str, int], package_input: Optional[int]) -> int:
        """The index of the value an input reads (a package called here gets its blocks appended)."""
        if source.use_package_input:
            if package_input is None:
                raise FusionrecError(f"{where}: use_package_input outside a package call")
            return package_input
        if source.package_name is not None:
            argument = None
            if source.package_input is not None:
                if source.package_input in self.package_names:
                    argument = self.call_package(source.package_input, None, where)
                elif source.package_input in scope:
                    argument = scope[source.package_input]
                elif source.package_input in self.index:
                    argument = self.index[source.package_input]
                else:
                    raise FusionrecError(f"{where}: package_input {source.package_input!r} is neither a block nor a package")
                if source.package_input_fn is not None:
                    op, value = compile_lambda(source.package_input_fn, self.values[argument], f"{where} package_input_fn")
                    self.modules.append(Block([argument], [op], "one", -1, Op(), []))
                    self.values.append(value)
                    argument = len(self.modules) - 1
            return self.call_package(source.package_name, argument, where)
        key = source.name
        if key in scope:
            return scope[key]
        if key not in self.index:  # a feature group read directly: EasyRec adds an input_layer block for it
            if source.feature_group_name is None:
                raise FusionrecError(f"{where}: input {key!r} is not a block")
            self.add_input_block(key, None, key, where)
        return self.index[key]

    def call_package(self, name: str, argument: Optional[int], where: str) -> int:
        """Append one call of package ``name`` on ``argument`` (the value its use_package_input
        blocks read); its layers are shared by every call. Returns its output's index."""
        package = self.backbone.package(name, where)
        scope: Dict[str, int] = {}
        for block_name in package.block_order():
            block = next(b for b in package.blocks if b.name == block_name)
            scope[block_name] = self.add_block(block, f"backbone package {name!r} block {block_name!r}", scope, argument, (name, block_name))
        return scope[package.output()]

    def add_block(self, block: BlockConfig, where: str, scope: Dict[str, int], package_input: Optional[int],
                  share: Optional[Tuple[str, str]] = None) -> int:  # fmt: skip
        if block.input_layer is not None:
            if share is not None:
                raise FusionrecError(f"{where}: an input_layer block inside a package is not implemented yet by fusionrec")
            self.add_input_block(block.name, block, block.inputs[0].feature_group_name, where)
            return self.index[block.name]
        sources, ops, in_values = [], [], []
        for source in block.inputs:
            at = self.read_input(source, where, scope, package_input)
            if source.ignore_input:
                continue
            op, value = Op(), self.values[at]
            steps: List[Op] = []
            if source.input_slice is not None:
                step, value = compile_lambda("lambda x: x" + source.input_slice.strip(), value, f"{where} input_slice")
                steps.append(step)
            if source.input_fn is not None:
                step, value = compile_lambda(source.input_fn, value, f"{where} input_fn")
                steps.append(step)
            if steps:
                op = Chain(steps)
            sources.append(at)
            ops.append(op)
            in_values.append(value)
        if not ops:
            raise FusionrecError(f"{where}: every input is ignore_input")
        if block.merge_inputs_into_list:
            if any(v.is_list for v in in_values):
                raise FusionrecError(f"{where}: merge_inputs_into_list of inputs that are lists (nested lists) is not "
                                     "implemented yet by fusionrec")  # fmt: skip
            merge, axis, value = "list", -1, Value.of_list([v.shapes[0] for v in in_values])
        else:
            merge, axis, value = merge_values(in_values, block.input_concat_axis, where)
        if share is not None and share in self.shared:  # a later call of a package: the same layers
            extra, layers, first_value, out_value = self.shared[share]
            if first_value != value:
                raise FusionrecError(f"{where}: this call gives the package {value.describe()}, its first call "
                                     f"{first_value.describe()}; the calls share the package's layers")  # fmt: skip
            value = out_value
        else:
            first_value = value
            extra = Op()
            if block.extra_input_fn is not None:
                extra, value = compile_lambda(block.extra_input_fn, value, f"{where} extra_input_fn")
            layers: List[Op] = []
            for i, layer in enumerate(block.layers or ([block] if _has_layer(block) else [])):
                op, value = build_layer(layer, value, where if not block.layers else f"{where} layer {i}")
                layers.append(op)
            if share is not None:
                self.shared[share] = (extra, layers, first_value, value)
        self.modules.append(Block(sources, ops, merge, axis, extra, layers))
        self.values.append(value)
        if _is_auxiliary_loss(block):
            self.auxiliary.append(len(self.modules) - 1)
        return len(self.modules) - 1


class Backbone(nn.Module):
    """The block graph of a ``model_config.backbone`` (built by ``BackboneBuilder``); ``forward``
    gives the merged output of ``concat_blocks`` (then ``top_mlp``) as a List[Tensor] described
    by ``self.value``."""

    def __init__(self, inputs: ModelInputs, backbone: BackboneConfig):
        super().__init__()
        builder = BackboneBuilder(inputs, backbone)
        builder.build()
        modules, values, index = builder.modules, builder.values, builder.index
        self.blocks = nn.ModuleList(modules)
        outputs = backbone.outputs()
        self.output_index: List[int] = [index[name] for name in outputs]
        self.auxiliary_index: List[int] = builder.auxiliary
        # the blocks the output reads; the others (an auxiliary loss's branch) run only in training
        self.serving: List[bool] = _reachable(modules, self.output_index)
        if backbone.output_blocks:  # a list: each block's output one element (a multi-task model's towers)
            for name in outputs:
                if values[index[name]].is_list:
                    raise FusionrecError(f"backbone output_blocks: block {name!r} gives {values[index[name]].describe()}; "
                                         "each output block gives one tensor")  # fmt: skip
            merge, axis, value = "list", -1, Value.of_list([values[index[name]].shapes[0] for name in outputs])
        else:
            merge, axis, value = merge_values([values[index[name]] for name in outputs], -1, "backbone concat_blocks")
        self.output_merge, self.output_axis = merge, axis
        self.has_top = backbone.top_mlp is not None
        if self.has_top:
            top = EasyRecMLP(_one_vector(value, "top_mlp", "backbone top_mlp"), backbone.top_mlp)
            value = Value.tensor(top.out_dim)
            self.top = top
        else:
            self.top = nn.Identity()
        self.value = value

    def forward(self, features: Dict[str, Tensor]) -> List[Tensor]:
        return self.output(self.block_values(features))

    @torch.jit.export
    def block_values(self, features: Dict[str, Tensor]) -> List[List[Tensor]]:
        """Every block's output, in order (a block only training reads: empty outside training)."""
        values: List[List[Tensor]] = []
        i = 0
        for block in self.blocks:
            if self.training or self.serving[i]:
                values.append(block(features, values))
            else:
                values.append([])
            i += 1
        return values

    @torch.jit.unused
    def auxiliary_loss(self, values: List[List[Tensor]]) -> Optional[Tensor]:
        """The sum of the AuxiliaryLoss blocks' losses (None without such blocks)."""
        total: Optional[Tensor] = None
        for i in self.auxiliary_index:
            loss = values[i][0]
            total = loss if total is None else total + loss
        return total

    @torch.jit.export
    def output(self, values: List[List[Tensor]]) -> List[Tensor]:
        gathered: List[Tensor] = []
        for i in self.output_index:
            gathered.extend(values[i])
        if self.output_merge == "concat":
            gathered = [torch.cat(gathered, dim=self.output_axis)]
        if self.has_top:
            return [self.top(gathered[0])]
        return gathered


def _is_auxiliary_loss(block: BlockConfig) -> bool:
    return block.keras_layer is not None and block.keras_layer.class_name == "AuxiliaryLoss"


def _reachable(modules: List[nn.Module], outputs: List[int]) -> List[bool]:
    """Which blocks the ``outputs`` read, directly or through other blocks."""
    seen = [False] * len(modules)
    stack = list(outputs)
    while stack:
        i = stack.pop()
        if seen[i]:
            continue
        seen[i] = True
        stack.extend(getattr(modules[i], "sources", []))
    return seen


def _has_layer(block: BlockConfig) -> bool:
    return any(getattr(block, n) is not None for n in ("keras_layer", "lambda_", "recurrent", "repeat"))


class BackboneModel(_MultiTask):
    """EasyRec's RankModel and MultiTaskModel on a backbone. RankModel: the backbone's output,
    then an output layer of num_class units unless it already has that width (a block ending
    in logits). MultiTaskModel: ``model_params.task_towers`` over the output, each tower its
    own element when the backbone gives one tensor per tower; towers as DBMTL's (``dnn``,
    then ``relation_dnn`` over the relation towers' outputs)."""

    def __init__(self, inputs: ModelInputs, params: BackboneConfig):
        super().__init__()
        towers = inputs.towers
        self.multi_task = bool(towers)
        if self.multi_task:
            self._set_towers(inputs)
        else:
            self._set_outputs(inputs)
            self.suffixes = [""]
        self.backbone = Backbone(inputs, params)
        value = self.backbone.value
        if any(len(s) != 1 for s in value.shapes) or value.parts:
            raise FusionrecError(f"backbone: the model reads (batch, D) tensors; the backbone gives {value.describe()}")
        if self.multi_task:
            if value.is_list and len(value.shapes) != len(towers):
                raise FusionrecError(f"backbone: gives {value.describe()}, for {len(towers)} task towers; a MultiTaskModel "
                                     "needs one tensor or one per tower")  # fmt: skip
            widths = [s[0] for s in value.shapes] if value.is_list else [value.shapes[0][0]] * len(towers)
            self.per_tower = value.is_list
            self.towers = RelationTowers(widths, towers)
            self.has_head = False
            self.head = nn.Identity()
        else:
            if value.is_list:
                raise FusionrecError(f"backbone: a RankModel needs the backbone to give one (batch, D) tensor; it gives "
                                     f"{value.describe()}")  # fmt: skip
            self.per_tower = False
            self.towers = RelationTowers([], [])
            width = value.shapes[0][0]
            self.has_head = width != self.n_outputs
            self.head = nn.Linear(width, self.n_outputs) if self.has_head else nn.Identity()

    @torch.jit.export
    def forward_heads(self, features: Dict[str, Tensor]) -> Dict[str, Tensor]:
        return self._heads(self.backbone(features))

    def training_heads(self, features: Dict[str, Tensor], weights: Optional[Tensor]) -> Tuple[object, Optional[Tensor]]:
        """(the logits, or a multi-task model's heads; the AuxiliaryLoss blocks' loss or None)."""
        values = self.backbone.block_values(features)
        heads = self._heads(self.backbone.output(values))
        return (heads if self.multi_task else heads[""]), self.backbone.auxiliary_loss(values)

    def _heads(self, out: List[Tensor]) -> Dict[str, Tensor]:
        if not self.multi_task:
            return {"": self._logits(self.head(out[0]))}
        inputs: List[Tensor] = out if self.per_tower else [out[0] for _ in self.suffixes]
        return self._named(self.towers(inputs))

"""The components of EasyRec's backbone, by EasyRec's ``class_name`` (``COMPONENTS``): each
builder takes the keras_layer config and the input's ``Value`` and returns an ``Op`` and its
output's ``Value``, so that a wrong input is an error naming the block. Each is registered
once, in ``fusionrec.ctr.config.COMPONENT_SPECS`` (its class names, its builder, the params
message it reads); a new component is its Op and builder (here or in a module of its own)
plus that one line, and its params message when it reads one.
"""

import importlib
from typing import Callable, List, Optional, Tuple

import torch
from torch import Tensor, nn

from fusionrec.ctr.backbone_ops import AddN, Op, Value, _same_shapes
from fusionrec.ctr.config import KerasLayerConfig
from fusionrec.ctr.config.backbone import COMPONENT_SPEC_OF
from fusionrec.ctr.models.multitask.base import MixtureOfExperts
from fusionrec.ctr.modules.cross import cross_v2_step
from fusionrec.ctr.modules.fm import FactorizationMachine
from fusionrec.ctr.modules.mlp import ACTIVATIONS, EasyRecMLP, mlp_layers
from fusionrec.ctr.modules.sequence import TextCNN
from fusionrec.ctr.modules.transformer import EmbeddingPostprocessor, TransformerEncoder
from fusionrec.errors import FusionrecError


class MLPLayer(Op):
    def __init__(self, mlp: EasyRecMLP):
        super().__init__()
        self.mlp = mlp

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        return [self.mlp(x[0])]


class FMLayer(Op):
    """FM's pairwise interactions (Rendle 2010) over fields (B, F, D): 0.5 x sum over the
    embedding of (sum^2 - sum of squares), (B, 1); ``use_variant`` keeps the D values."""

    def __init__(self, stack: bool, use_variant: bool):
        super().__init__()
        self.stack, self.use_variant = stack, use_variant
        self.fm = FactorizationMachine(keep_dim=use_variant)

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        return [self.fm(torch.stack(x, dim=1) if self.stack else x[0])]


class DotInteractionLayer(Op):
    """DLRM's dot interaction (Naumov et al. 2019, section 2.1.3): the dot products of every
    pair of fields i > j (and i = j with ``self_interaction``), in row-major lower-triangle order."""

    def __init__(self, stack: bool, n_fields: int, self_interaction: bool):
        super().__init__()
        self.stack = stack
        rows, cols = torch.tril_indices(n_fields, n_fields, offset=0 if self_interaction else -1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        fields = torch.stack(x, dim=1) if self.stack else x[0]
        products = torch.bmm(fields, fields.transpose(1, 2))
        return [products[:, self.rows, self.cols]]


class CrossLayer(Op):
    """One DCN-v2 cross layer (Wang et al. 2021, equation 1): x0 * (W x + b) + x, from [x0, x]
    or x0 = x."""

    def __init__(self, dim: int, pair: bool):
        super().__init__()
        self.pair = pair
        self.dense = nn.Linear(dim, dim)

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        xi = x[1] if self.pair else x[0]
        return [cross_v2_step(x[0], xi, self.dense(xi))]


class CINLayer(Op):
    """xDeepFM's Compressed Interaction Network (Lian et al., KDD 2018, equations 6-7): layer k
    = H_k feature maps from the outer products of layer k-1 and the input fields, each a
    1x1 convolution; every layer sum-pooled over the embedding and concatenated."""

    def __init__(self, stack: bool, n_fields: int, hidden_sizes: List[int]):
        super().__init__()
        self.stack = stack
        convs: List[nn.Module] = []
        previous = n_fields
        for size in hidden_sizes:
            convs.append(nn.Conv1d(previous * n_fields, size, kernel_size=1))
            previous = size
        self.convs = nn.ModuleList(convs)

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        x0 = torch.stack(x, dim=1) if self.stack else x[0]  # (B, F, D)
        batch, dim = x0.shape[0], x0.shape[2]
        hidden = x0
        pooled: List[Tensor] = []
        for conv in self.convs:
            outer = torch.einsum("bhd,bmd->bhmd", hidden, x0).reshape(batch, -1, dim)
            hidden = torch.relu(conv(outer))
            pooled.append(hidden.sum(dim=2))
        return [torch.cat(pooled, dim=1)]


class MMoELayer(Op):
    """EasyRec's MMoE layer: ``num_expert`` expert MLPs over the input, a softmax gate per
    task (Ma et al., KDD 2018); a list of ``num_task`` tensors."""

    def __init__(self, in_dim: int, params, where: str):
        super().__init__()
        experts = [EasyRecMLP(in_dim, params.expert_mlp) for _ in range(params.num_expert)]
        self.mixture = MixtureOfExperts(in_dim, [], params.num_task, where, experts=experts)

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        return self.mixture(x[0])


class SENetLayer(Op):
    """FiBiNET's SENET (Huang et al., RecSys 2019; FiBiNet++ grouping, Zhang et al. 2022) as
    EasyRec builds it: each field split into ``num_squeeze_group`` groups, squeezed to their max
    and mean; excitation = linear(relu(linear(z))) gives one weight per embedding value; the
    concatenated fields times the weights (+ the fields with ``use_skip_connection``), then a
    layer norm (``use_output_layer_norm``)."""

    def __init__(self, dims: List[int], params, where: str):
        super().__init__()
        groups = params.num_squeeze_group
        for dim in dims:
            if dim < groups or dim % groups:
                raise FusionrecError(f"{where}: field width {dim} is not a multiple of num_squeeze_group {groups}")
        self.groups = groups
        reduced = max(1, len(dims) * groups * 2 // params.reduction_ratio)
        self.reduce = nn.Linear(len(dims) * groups * 2, reduced)
        self.excite = nn.Linear(reduced, sum(dims))
        self.skip = params.use_skip_connection
        self.has_norm = params.use_output_layer_norm
        self.norm = nn.LayerNorm(sum(dims)) if self.has_norm else nn.Identity()

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        squeezed: List[Tensor] = []
        for field in x:
            grouped = field.reshape(field.shape[0], self.groups, -1)
            squeezed.append(grouped.max(dim=2).values)
            squeezed.append(grouped.mean(dim=2))
        weights = self.excite(torch.relu(self.reduce(torch.cat(squeezed, dim=1))))
        inputs = torch.cat(x, dim=1)
        output = inputs * weights
        if self.skip:
            output = output + inputs
        return [self.norm(output)]


class BilinearLayer(Op):
    """FiBiNET's bilinear interaction: for each field pair i < j, (W v_i) . v_j (``use_plus``,
    one number) or (W v_i) * v_j; W shared (``all``), per field (``each``) or per pair
    (``interaction``); then a linear layer of ``num_output_units``."""

    pairs: List[Tuple[int, int]]

    def __init__(self, dims: List[int], params, where: str):
        super().__init__()
        n = len(dims)
        if params.type != "interaction" and len(set(dims)) != 1:
            raise FusionrecError(f"{where}: bilinear type {params.type!r} needs fields of one width, got {dims}")
        self.pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
        self.kind = params.type
        self.plus = params.use_plus
        if params.type == "all":
            self.dense = nn.ModuleList([nn.Linear(dims[0], dims[0])])
        elif params.type == "each":
            self.dense = nn.ModuleList(nn.Linear(dims[i], dims[i]) for i in range(n - 1))
        else:
            self.dense = nn.ModuleList(nn.Linear(dims[i], dims[j]) for i, j in self.pairs)
        width = len(self.pairs) if self.plus else sum(dims[j] for _, j in self.pairs)
        self.output = nn.Linear(width, params.num_output_units)

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        products: List[Tensor] = []
        for k, (i, j) in enumerate(self.pairs):
            if self.kind == "all":
                left = self.dense[0](x[i])
            elif self.kind == "each":
                left = x[i]
                for index, dense in enumerate(self.dense):
                    if index == i:
                        left = dense(x[i])
            else:
                left = x[i]
                for index, dense in enumerate(self.dense):
                    if index == k:
                        left = dense(x[i])
            if self.plus:
                products.append((left * x[j]).sum(dim=1, keepdim=True))
            else:
                products.append(left * x[j])
        return [self.output(torch.cat(products, dim=1))]


class FiBiNetLayer(Op):
    """FiBiNet (FiBiNet++ as EasyRec builds it): [SENET(fields), bilinear(fields)] concatenated,
    then ``mlp``."""

    def __init__(self, dims: List[int], params, where: str):
        super().__init__()
        self.senet = SENetLayer(dims, params.senet, where)
        self.has_bilinear = params.bilinear is not None
        self.bilinear = BilinearLayer(dims, params.bilinear, where) if self.has_bilinear else Op()
        width = sum(dims) + (params.bilinear.num_output_units if self.has_bilinear else 0)
        self.has_mlp = params.mlp is not None
        self.mlp = EasyRecMLP(width, params.mlp) if self.has_mlp else nn.Identity()
        self.out_dim = self.mlp.out_dim if self.has_mlp else width

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        parts = self.senet(x)
        if self.has_bilinear:
            parts.extend(self.bilinear(x))
        feature = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        return [self.mlp(feature)]


class MaskBlockLayer(nn.Module):
    """MaskNet's MaskBlock (Wang et al. 2021, section 3.2) as EasyRec builds it: an
    instance-guided mask from the mask input (linear -> relu -> linear, aggregation_size
    wide, optionally through a projection_dim bottleneck) times the (layer-normed) input;
    with ``output_size``, a linear layer, layer norm and relu."""

    def __init__(self, input_dim: int, mask_input_dim: int, params):
        super().__init__()
        size = int(mask_input_dim * params.reduction_factor) if params.reduction_factor is not None else params.aggregation_size
        self.has_projection = params.projection_dim is not None
        self.projection = nn.Linear(mask_input_dim, params.projection_dim, bias=False) if self.has_projection else nn.Identity()
        self.aggregate = nn.Linear(params.projection_dim if self.has_projection else mask_input_dim, size)
        self.weights = nn.Linear(size, input_dim)
        self.input_norm_on = params.input_layer_norm
        self.input_norm = nn.LayerNorm(input_dim) if params.input_layer_norm else nn.Identity()
        self.has_output = params.output_size is not None
        self.output = nn.Linear(input_dim, params.output_size, bias=False) if self.has_output else nn.Identity()
        self.output_norm = nn.LayerNorm(params.output_size) if self.has_output else nn.Identity()
        self.out_dim = params.output_size if self.has_output else input_dim

    def forward(self, net: Tensor, mask_input: Tensor) -> Tensor:
        net = self.input_norm(net)
        masked = net * self.weights(torch.relu(self.aggregate(self.projection(mask_input))))
        if not self.has_output:
            return masked
        return torch.relu(self.output_norm(self.output(masked)))


class MaskBlockOp(Op):
    def __init__(self, block: MaskBlockLayer, pair: bool):
        super().__init__()
        self.block = block
        self.pair = pair

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        return [self.block(x[0], x[1] if self.pair else x[0])]


class MaskNetLayer(Op):
    """MaskNet (Wang et al. 2021) as EasyRec builds it: a layer norm of the input
    (``input_layer_norm``), then the mask blocks in parallel (concatenated) or serially
    (each masking the last output by the input), then ``mlp``."""

    def __init__(self, dim: int, params):
        super().__init__()
        self.norm_on = params.input_layer_norm
        self.norm = nn.LayerNorm(dim) if params.input_layer_norm else nn.Identity()
        self.parallel = params.use_parallel
        blocks: List[MaskBlockLayer] = []
        width = dim
        for block in params.mask_blocks:
            layer = MaskBlockLayer(dim if self.parallel else width, dim, block)
            blocks.append(layer)
            width = layer.out_dim
        self.blocks = nn.ModuleList(blocks)
        width = sum(b.out_dim for b in blocks) if self.parallel else width
        self.has_mlp = params.mlp is not None
        self.mlp = EasyRecMLP(width, params.mlp) if self.has_mlp else nn.Identity()
        self.out_dim = self.mlp.out_dim if self.has_mlp else width

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        inputs = self.norm(x[0])
        if self.parallel:
            outputs: List[Tensor] = []
            for block in self.blocks:
                outputs.append(block(inputs, inputs))
            net = torch.cat(outputs, dim=1)
        else:
            net = inputs
            for block in self.blocks:
                net = block(net, inputs)
        return [self.mlp(net)]


class HighwayLayer(Op):
    """A highway network (Srivastava et al. 2015) as EasyRec's Highway layer: the input
    projected to ``emb_size``, then per layer x = H(x) * T(x) + x * (1 - T(x)), T a sigmoid gate."""

    def __init__(self, dim: int, params):
        super().__init__()
        self.projection = nn.Linear(dim, params.emb_size)
        self.gates = nn.ModuleList(nn.Linear(params.emb_size, params.emb_size) for _ in range(params.num_layers))
        self.transforms = nn.ModuleList(nn.Linear(params.emb_size, params.emb_size) for _ in range(params.num_layers))
        self.activation = ACTIVATIONS[params.activation]()
        self.dropout = nn.Dropout(params.dropout_rate)

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        out = self.projection(x[0])
        for gate, transform in zip(self.gates, self.transforms):
            t = torch.sigmoid(gate(out))
            h = self.dropout(self.activation(transform(out)))
            out = h * t + out * (1.0 - t)
        return [out]


class WeightedGateLayer(Op):
    """EasyRec's Gate: the input at ``weight_index`` holds one weight per other input (B, n);
    the output is the weighted sum of the others, then ``mlp``."""

    def __init__(self, weight_index: int, n_inputs: int, mlp: Optional[EasyRecMLP]):
        super().__init__()
        self.weight_index = weight_index
        self.n_inputs = n_inputs
        self.has_mlp = mlp is not None
        self.mlp = mlp if mlp is not None else nn.Identity()

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        weights = x[self.weight_index]
        total = torch.zeros_like(x[1 if self.weight_index == 0 else 0])
        j = 0
        for i in range(self.n_inputs):
            if i != self.weight_index:
                total = total + weights[:, j : j + 1] * x[i]
                j += 1
        return [self.mlp(total)]


class DINLayer(Op):
    """EasyRec's DIN encoder (Zhou et al., KDD 2018) over a sequence input [history (B, L, Ds),
    mask, target (B, Dt)]: the target, zero-padded to Ds, scores each position with
    ``attention_dnn`` over [q, k, q - k, q * k] (its last layer linear, no batch norm, as
    EasyRec forces); padded positions masked; softmax (or sigmoid of score / sqrt(Ds)); the
    scored sum of the history's first Dt values, then the (padded) target with
    ``need_target_feature``."""

    def __init__(self, history_dim: int, target_dim: int, params):
        super().__init__()
        attention = params.attention_dnn.model_copy(update={"use_final_bn": False, "final_activation": "linear"})
        self.mlp = EasyRecMLP(4 * history_dim, attention)
        self.pad = history_dim - target_dim
        self.target_dim = target_dim
        self.history_dim = history_dim
        self.softmax = params.attention_normalizer == "softmax"
        self.need_target = params.need_target_feature
        self.out_dim = target_dim + (history_dim if params.need_target_feature else 0)

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        history, mask, query = x[0], x[1], x[2]
        if self.pad > 0:
            query = torch.nn.functional.pad(query, [0, self.pad])
        batch, length = history.shape[0], history.shape[1]
        queries = query.unsqueeze(1).expand(-1, length, -1)
        both = torch.cat([queries, history, queries - history, queries * history], dim=2)
        scores = self.mlp(both.reshape(batch * length, -1)).reshape(batch, length)  # batch norm over every position, as TF's
        scores = torch.where(mask, scores, torch.full_like(scores, -(2.0**32) + 1))
        if self.softmax:
            weights = torch.softmax(scores, dim=1)
        else:
            weights = torch.sigmoid(scores / (self.history_dim**0.5))
        attended = (weights.unsqueeze(2) * history[:, :, : self.target_dim]).sum(dim=1)
        if self.need_target:
            return [torch.cat([attended, query], dim=1)]
        return [attended]


class TextCNNLayer(Op):
    """EasyRec's TextCNN layer over a sequence input: the history (padded positions zeroed)
    through ``fusionrec.ctr.modules.sequence.TextCNN``, then ``mlp``."""

    def __init__(self, history_dim: int, params):
        super().__init__()
        self.cnn = TextCNN(history_dim, list(params.filter_sizes), list(params.num_filters), params.pad_sequence_length,
                           params.activation)  # fmt: skip
        self.has_mlp = params.mlp is not None
        self.mlp = EasyRecMLP(self.cnn.out_dim, params.mlp) if self.has_mlp else nn.Identity()
        self.out_dim = self.mlp.out_dim if self.has_mlp else self.cnn.out_dim

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        history = x[0] * x[1].unsqueeze(2).to(x[0].dtype)
        return [self.mlp(self.cnn(history))]


class BSTLayer(Op):
    """EasyRec's BST encoder (Chen et al., DLP-KDD 2019) over a sequence input [history (B, L, D),
    mask, target]: with ``output_all_token_embeddings`` the history padded (or cut) to
    ``max_position_embeddings`` positions; history and target projected to ``hidden_size``
    (linear + relu) when their width differs; the target put at the head or the tail
    (``target_item_position``; ``ignore`` drops it); BERT's position embeddings, layer norm and
    dropout, then the transformer layers, attending to the positions EasyRec keeps: those whose
    (projected) input is not all zeros. The output: every token flattened, or the first token.
    A history longer than max_position_embeddings is an error, as in EasyRec."""

    def __init__(self, history_dim: int, target_dim: int, params, where: str):
        super().__init__()
        hidden = params.hidden_size
        self.max_position = params.max_position_embeddings
        self.pad_all = params.output_all_token_embeddings
        self.project_history = history_dim != hidden
        self.history_projection = nn.Linear(history_dim, hidden) if self.project_history else nn.Identity()
        self.keep_target = target_dim > 0 and params.target_item_position in ("head", "tail")
        self.target_at_head = params.target_item_position == "head"
        self.project_target = self.keep_target and target_dim != hidden
        self.target_projection = nn.Linear(target_dim, hidden) if self.project_target else nn.Identity()
        positions = self.max_position + (1 if self.keep_target or params.reserve_target_position else 0)
        if self.pad_all and not self.keep_target and params.reserve_target_position:
            raise FusionrecError(f"{where}: BST with output_all_token_embeddings and reserve_target_position but no target "
                                 "is not supported (EasyRec's reshape to max_position_embeddings + 1 tokens fails too)")  # fmt: skip
        self.postprocess = EmbeddingPostprocessor(hidden, positions if params.use_position_embeddings else 0,
                                                  params.hidden_dropout_prob, params.initializer_range)  # fmt: skip
        self.encoder = TransformerEncoder(hidden, params.num_hidden_layers, params.num_attention_heads, params.intermediate_size,
                                          params.hidden_act, params.hidden_dropout_prob, params.attention_probs_dropout_prob,
                                          params.initializer_range)  # fmt: skip
        self.out_dim = positions * hidden if self.pad_all else hidden

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        history = x[0]
        if history.shape[1] > self.max_position:
            raise ValueError("BST: a sequence of " + str(history.shape[1]) + " positions is longer than max_position_embeddings "
                             + str(self.max_position) + "; set max_seq_len on the sequence features")
        if self.pad_all and history.shape[1] < self.max_position:
            history = torch.nn.functional.pad(history, [0, 0, 0, self.max_position - history.shape[1]])
        if self.project_history:
            history = torch.relu(self.history_projection(history))
        tokens = history
        if self.keep_target:
            target = x[2]
            if self.project_target:
                target = torch.relu(self.target_projection(target))
            if self.target_at_head:
                tokens = torch.cat([target.unsqueeze(1), history], dim=1)
            else:
                tokens = torch.cat([history, target.unsqueeze(1)], dim=1)
        mask = (tokens != 0).any(dim=2)  # EasyRec attends to the positions whose input is not all zeros
        encoded = self.encoder(self.postprocess(tokens, None), mask)
        if self.pad_all:
            return [encoded.reshape(encoded.shape[0], -1)]
        return [encoded[:, 0]]


class NumericEmbeddingOutput(Op):
    """The output forms of EasyRec's numeric embeddings: (B, N*D); with ``output_tensor_list``
    [that, each feature's (B, D)]; with ``output_3d_tensor`` [that, (B, N, D)]."""

    def __init__(self, form: str):
        super().__init__()
        self.form = form

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        embedded = x[0]  # (B, N, D)
        flat = embedded.reshape(embedded.shape[0], -1)
        if self.form == "list":
            return [flat] + list(embedded.unbind(dim=1))
        if self.form == "3d":
            return [flat, embedded]
        return [flat]


class PeriodicEmbeddingLayer(Op):
    """Periodic embeddings of N numbers (Gorishniy et al., NeurIPS 2022): per feature,
    [sin(2 pi c x), cos(2 pi c x)] with trainable c ~ N(0, sigma) (embedding_dim / 2 of them),
    then (``add_linear_layer``) a linear layer per feature and ``linear_activation``."""

    def __init__(self, n_features: int, params):
        super().__init__()
        half = params.embedding_dim // 2
        self.coefficients = nn.Parameter(torch.randn(1, n_features, half) * params.sigma)
        self.add_linear = params.add_linear_layer
        dim = params.embedding_dim
        self.weight = nn.Parameter(torch.empty(n_features, dim, dim))
        self.bias = nn.Parameter(torch.zeros(n_features, dim))
        nn.init.xavier_uniform_(self.weight)
        self.activation = ACTIVATIONS[params.linear_activation]()
        form = "list" if params.output_tensor_list else "3d" if params.output_3d_tensor else "flat"
        self.output = NumericEmbeddingOutput(form)

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        angles = 2 * 3.141592653589793 * self.coefficients * x[0].unsqueeze(2)  # (B, N, D/2)
        embedded = torch.cat([torch.sin(angles), torch.cos(angles)], dim=2)
        if self.add_linear:  # one linear layer per feature (EasyRec's NLinear)
            embedded = self.activation(torch.einsum("bnd,nde->bne", embedded, self.weight) + self.bias)
        return self.output([embedded])


class AutoDisEmbeddingLayer(Op):
    """AutoDis (Guo et al., KDD 2021) as EasyRec builds it: per feature, h = leaky_relu(w x)
    over num_bins (slope 0.2, TensorFlow's), y = W h + keep_prob * h, softmax(y / temperature)
    weighs the feature's num_bins meta-embeddings."""

    def __init__(self, n_features: int, params):
        super().__init__()
        self.meta = nn.Parameter(torch.empty(n_features, params.num_bins, params.embedding_dim))
        self.projection = nn.Parameter(torch.empty(1, n_features, params.num_bins))
        self.mixing = nn.Parameter(torch.empty(n_features, params.num_bins, params.num_bins))
        for weight in (self.meta, self.projection, self.mixing):
            nn.init.xavier_uniform_(weight)
        self.keep_prob = params.keep_prob
        self.temperature = params.temperature
        form = "list" if params.output_tensor_list else "3d" if params.output_3d_tensor else "flat"
        self.output = NumericEmbeddingOutput(form)

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        hidden = torch.nn.functional.leaky_relu(self.projection * x[0].unsqueeze(2), negative_slope=0.2)
        mixed = torch.einsum("nik,bnk->bni", self.mixing, hidden) + self.keep_prob * hidden
        weights = torch.softmax(mixed / self.temperature, dim=2)
        return self.output([torch.einsum("bnk,nkd->bnd", weights, self.meta)])


def _numeric_output(n: int, dim: int, params) -> Value:
    flat = Value.tensor(n * dim)
    if params.output_tensor_list:
        fields = Value.of_list([(dim,)] * n)
        return Value(flat.shapes + fields.shapes, True, (flat, fields))
    if params.output_3d_tensor:
        stacked = Value.tensor(n, dim)
        return Value(flat.shapes + stacked.shapes, True, (flat, stacked))
    return flat


def _build_periodic(layer: KerasLayerConfig, value: Value, where: str):
    n = _one_vector(value, "PeriodicEmbedding", where)
    params = layer.periodic_embedding
    return PeriodicEmbeddingLayer(n, params), _numeric_output(n, params.embedding_dim, params)


def _build_autodis(layer: KerasLayerConfig, value: Value, where: str):
    n = _one_vector(value, "AutoDisEmbedding", where)
    params = layer.auto_dis_embedding
    return AutoDisEmbeddingLayer(n, params), _numeric_output(n, params.embedding_dim, params)


class GateNN(nn.Module):
    """PEPNet's gate (Chang et al., KDD 2023) as EasyRec builds it: linear (no bias with batch
    norm) -> batch norm -> activation -> dropout -> linear -> sigmoid, times 2 (a gate around 1)."""

    def __init__(self, in_dim: int, out_dim: int, params):
        super().__init__()
        hidden = params.hidden_dim or out_dim
        layers: List[nn.Module] = [nn.Linear(in_dim, hidden, bias=not params.use_bn)]
        if params.use_bn:
            layers.append(nn.BatchNorm1d(hidden))
        layers.append(ACTIVATIONS[params.activation]())
        if params.dropout_rate > 0:
            layers.append(nn.Dropout(params.dropout_rate))
        layers.append(nn.Linear(hidden, out_dim, bias=not params.use_bn))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return 2.0 * torch.sigmoid(self.net(x))


class PPNetLayer(Op):
    """EasyRec's PPNet (PEPNet's parameter personalization): an MLP over the first input whose
    hidden layers' outputs are each scaled by a GateNN over the gate input (the second input,
    with ``full_gate_input`` joined by the first with its gradient stopped); ``mode: eager``
    gates the input and every hidden layer but the last, ``lazy`` every hidden layer. The MLP's
    unset fields take the PPNet layer's defaults: no biases, the last layer linear."""

    gated: List[bool]

    def __init__(self, in_dim: int, gate_in: int, params, where: str):
        super().__init__()
        mlp = params.mlp
        use_bias = mlp.use_bias if "use_bias" in mlp.model_fields_set else False
        gate_dim = gate_in + (in_dim if params.full_gate_input else 0)
        self.full_gate_input = params.full_gate_input
        self.eager = params.mode == "eager"
        if self.eager and params.gate_params.output_dim != in_dim:
            raise FusionrecError(f"{where}: PPNet mode eager gates its input of width {in_dim}; gate_params.output_dim is "
                                 f"{params.gate_params.output_dim}")  # fmt: skip
        self.input_gate = GateNN(gate_dim, in_dim, params.gate_params) if self.eager else nn.Identity()
        gates: List[nn.Module] = []
        last = len(mlp.hidden_units) - 1
        self.gated = []
        for i, units in enumerate(mlp.hidden_units):
            gated = i < last or not self.eager
            gates.append(GateNN(gate_dim, units, params.gate_params) if gated else nn.Identity())
            self.gated.append(gated)
        self.layers = nn.ModuleList(mlp_layers(in_dim, mlp, use_bias))
        self.gates = nn.ModuleList(gates)
        self.out_dim = mlp.hidden_units[-1]

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        out, gate_input = x[0], x[1]
        if self.full_gate_input:
            gate_input = torch.cat([out.detach(), gate_input], dim=1)
        if self.eager:
            out = out * self.input_gate(gate_input)
        for i, (layer, gate) in enumerate(zip(self.layers, self.gates)):
            out = layer(out)
            if self.gated[i]:
                out = out * gate(gate_input)
        return [out]


def _build_ppnet(layer: KerasLayerConfig, value: Value, where: str):
    if not value.is_list or len(value.shapes) != 2 or any(len(s) != 1 for s in value.shapes):
        raise FusionrecError(f"{where}: PPNet reads [input, gate input] of (batch, D) tensors, got {value.describe()}")
    module = PPNetLayer(value.shapes[0][0], value.shapes[1][0], layer.ppnet, where)
    return module, Value.tensor(module.out_dim)


class AITMLayer(Op):
    """AITM's tower (Xi et al., KDD 2021) as EasyRec's AITMTower: the current tower's output
    and the earlier towers' (gradient stopped, through ``transfer_mlp``: the information
    transfer), each projected to query, key and value; scaled dot-product attention over
    them; the current tower's row."""

    def __init__(self, widths: List[int], params):
        super().__init__()
        self.has_transfer = params.transfer_mlp is not None
        self.transfer = EasyRecMLP(widths[1], params.transfer_mlp) if self.has_transfer else nn.Identity()
        dim = params.project_dim or widths[0]
        in_dims = [widths[0]] + [self.transfer.out_dim if self.has_transfer else w for w in widths[1:]]
        self.queries = nn.ModuleList(nn.Linear(d, dim) for d in in_dims)
        self.keys = nn.ModuleList(nn.Linear(d, dim) for d in in_dims)
        self.values = nn.ModuleList(nn.Linear(d, dim) for d in in_dims)
        self.stop_gradient = params.stop_gradient
        self.scale = 1.0 / float(dim) ** 0.5
        self.out_dim = dim

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        queries: List[Tensor] = []
        keys: List[Tensor] = []
        values: List[Tensor] = []
        for i, (query, key, value) in enumerate(zip(self.queries, self.keys, self.values)):
            tower = x[i]
            if i > 0:
                if self.stop_gradient:
                    tower = tower.detach()
                tower = self.transfer(tower)
            queries.append(query(tower))
            keys.append(key(tower))
            values.append(value(tower))
        q, k, v = torch.stack(queries, dim=1), torch.stack(keys, dim=1), torch.stack(values, dim=1)
        weights = torch.softmax(torch.bmm(q, k.transpose(1, 2)) * self.scale, dim=2)
        return [torch.bmm(weights, v)[:, 0]]


def _build_aitm(layer: KerasLayerConfig, value: Value, where: str):
    from fusionrec.ctr.config import AITMTowerParams

    if not value.is_list or len(value.shapes) < 2 or any(len(s) != 1 for s in value.shapes):
        raise FusionrecError(f"{where}: AITMTower reads [this tower, earlier towers...] of (batch, D) tensors, got "
                             f"{value.describe()}")  # fmt: skip
    widths = [s[0] for s in value.shapes]
    if len(set(widths[1:])) > 1:
        raise FusionrecError(f"{where}: AITMTower's earlier towers share one transfer, so they need one width; got {widths[1:]}")
    module = AITMLayer(widths, layer.aitm or AITMTowerParams())
    return module, Value.tensor(module.out_dim)


class SeqAugmentLayer(Op):
    """CL4SRec's sequence augmentations (Xie et al., "Contrastive Learning for Sequential
    Recommendation", ICDE 2022, section 4.1) as EasyRec's SeqAugment: each row of a sequence
    input [history (B, L, D), mask (B, L), ...] gets one of the enabled augmentations, drawn
    uniformly: crop (keep floor(n x crop_rate) consecutive items from a random start, moved to
    the front; crop_rate < 1), mask (floor(n x mask_rate) random items replaced by a learned
    mask embedding) or reorder (a random span of floor(n x reorder_rate) items shuffled); n is
    the row's length. Only while training: at inference the input passes unchanged (EasyRec's
    augmented branch feeds only the auxiliary loss, which inference does not compute)."""

    def __init__(self, dim: int, mask_rate: float, crop_rate: float, reorder_rate: float):
        super().__init__()
        self.mask_embedding = nn.Parameter(torch.randn(dim) * 0.02)
        self.mask_rate = mask_rate
        self.crop_rate = crop_rate
        self.reorder_rate = reorder_rate
        self.methods: List[int] = [m for m, on in ((0, crop_rate < 1.0), (1, mask_rate > 0), (2, reorder_rate > 0)) if on]

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        if not self.training or len(self.methods) == 0:
            return x
        history, mask = x[0], x[1]
        batch, length = mask.shape[0], mask.shape[1]
        present = mask.to(torch.bool)
        lengths = present.sum(dim=1)
        positions = torch.arange(length, device=history.device).unsqueeze(0).expand(batch, length)
        choice = torch.tensor(self.methods, device=history.device)[torch.randint(len(self.methods), (batch,), device=history.device)]
        # crop: rows shifted left by a random start, floor(n x crop_rate) kept
        n_crop = torch.floor(lengths.to(torch.float32) * self.crop_rate).to(torch.int64)
        crop_start = torch.floor(torch.rand(batch, device=history.device) * (lengths - n_crop).clamp(min=1)).to(torch.int64)
        crop_source = (positions + crop_start.unsqueeze(1)).clamp(max=length - 1)
        crop_keep = positions < n_crop.unsqueeze(1)
        cropped = torch.gather(history, 1, crop_source.unsqueeze(2).expand_as(history)) * crop_keep.unsqueeze(2)
        # mask: the floor(n x mask_rate) present items of the smallest random keys
        n_mask = torch.floor(lengths.to(torch.float32) * self.mask_rate).to(torch.int64)
        keys = torch.rand(batch, length, device=history.device).masked_fill(~present, 2.0)
        ranks = keys.argsort(dim=1).argsort(dim=1)
        masked_items = (ranks < n_mask.unsqueeze(1)) & present
        masked = torch.where(masked_items.unsqueeze(2), self.mask_embedding.expand_as(history), history)
        # reorder: a random span of floor(n x reorder_rate) items, shuffled among themselves
        n_reorder = torch.floor(lengths.to(torch.float32) * self.reorder_rate).to(torch.int64)
        span_start = torch.floor(torch.rand(batch, device=history.device) * (lengths - n_reorder).clamp(min=1)).to(torch.int64)
        in_span = (positions >= span_start.unsqueeze(1)) & (positions < (span_start + n_reorder).unsqueeze(1))
        order_keys = torch.where(in_span, span_start.unsqueeze(1).to(torch.float32)
                                 + torch.rand(batch, length, device=history.device) * n_reorder.unsqueeze(1).to(torch.float32),
                                 positions.to(torch.float32))  # fmt: skip
        reordered = torch.gather(history, 1, order_keys.argsort(dim=1).unsqueeze(2).expand_as(history))
        pick = choice.view(batch, 1, 1)
        augmented = torch.where(pick == 0, cropped, torch.where(pick == 1, masked, reordered))
        new_mask = torch.where(choice.view(batch, 1) == 0, crop_keep, present)
        out = [augmented, new_mask.to(mask.dtype)]
        for i in range(2, len(x)):
            out.append(x[i])
        return out


class AuxiliaryLossLayer(Op):
    """EasyRec's AuxiliaryLoss over two (B, D) views: ``nce_loss`` (CL4SRec's NT-Xent: each of
    the 2B embeddings against its other view, the other 2B - 2 the negatives, similarities
    z z' / temperature), ``info_nce`` (the first view's rows against the second's, the
    diagonal the positives) or ``l2_loss`` (mean squared distance); times loss_weight. Its
    output is the loss, which the trainer adds to the training loss."""

    def __init__(self, kind: str, weight: float, temperature: float):
        super().__init__()
        self.kind = kind
        self.weight = weight
        self.temperature = temperature

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        first, second = x[0], x[1]
        batch = first.shape[0]
        if self.kind == "l2_loss":
            loss = (first - second).pow(2).sum(dim=1).mean()
        elif self.kind == "info_nce":
            logits = first @ second.t() / self.temperature
            loss = torch.nn.functional.cross_entropy(logits, torch.arange(batch, device=first.device))
        else:
            both = torch.cat([first, second], dim=0)
            similarity = both @ both.t() / self.temperature
            similarity = similarity.masked_fill(torch.eye(2 * batch, dtype=torch.bool, device=first.device), float("-inf"))
            targets = torch.cat([torch.arange(batch, 2 * batch), torch.arange(0, batch)]).to(first.device)
            loss = torch.nn.functional.cross_entropy(similarity, targets)
        return [loss * self.weight]


def _build_seq_augment(layer: KerasLayerConfig, value: Value, where: str):
    from fusionrec.ctr.config import SequenceAugmentParams

    history, _ = _sequence_input(value, "SeqAugment", where)
    params = layer.seq_aug or SequenceAugmentParams()
    return SeqAugmentLayer(history, params.mask_rate, params.crop_rate, params.reorder_rate), value


AUXILIARY_LOSSES = ("nce_loss", "info_nce", "l2_loss")


def _build_auxiliary_loss(layer: KerasLayerConfig, value: Value, where: str):
    params = dict(layer.st_params or {})
    kind = params.pop("loss_type", None)
    weight = float(params.pop("loss_weight", 1.0))
    temperature = float(params.pop("temperature", 0.1))
    if kind not in AUXILIARY_LOSSES:
        raise FusionrecError(f"{where}: AuxiliaryLoss st_params loss_type {kind!r}: it has {list(AUXILIARY_LOSSES)}")
    if params:
        raise FusionrecError(f"{where}: AuxiliaryLoss st_params {sorted(params)} are not EasyRec's (loss_type, loss_weight, temperature)")
    if not value.is_list or len(value.shapes) != 2 or value.shapes[0] != value.shapes[1] or len(value.shapes[0]) != 1:
        raise FusionrecError(f"{where}: AuxiliaryLoss reads two views of one (batch, D) shape (merge_inputs_into_list), "
                             f"got {value.describe()}")  # fmt: skip
    return AuxiliaryLossLayer(kind, weight, temperature), Value.tensor()


def _sequence_input(value: Value, name: str, where: str) -> Tuple[int, int]:
    """(history width, target width or 0) of a sequence input (input_layer output_seq_and_normal_feature)."""
    if not value.parts or len(value.parts) not in (2, 3) or len(value.parts[0].shapes[0]) != 2:
        raise FusionrecError(f"{where}: {name} reads a sequence input (an input_layer with output_seq_and_normal_feature), "
                             f"got {value.describe()}")  # fmt: skip
    history = value.parts[0].shapes[0][1]
    return history, value.parts[2].shapes[0][0] if len(value.parts) == 3 else 0


def _build_din(layer: KerasLayerConfig, value: Value, where: str):
    history, target = _sequence_input(value, "DIN", where)
    if target == 0:
        raise FusionrecError(f"{where}: DIN needs target features in the sequence group (EasyRec asserts it too)")
    if target > history:
        raise FusionrecError(f"{where}: DIN's target width {target} is larger than the sequence's {history} (EasyRec refuses it too)")
    module = DINLayer(history, target, layer.din)
    return module, Value.tensor(module.out_dim)


def _build_bst(layer: KerasLayerConfig, value: Value, where: str):
    history, target = _sequence_input(value, "BST", where)
    if target and target != history:
        raise FusionrecError(f"{where}: BST's target width {target} differs from the sequence's {history} "
                             "(EasyRec asserts they are equal)")  # fmt: skip
    module = BSTLayer(history, target, layer.bst, where)
    return module, Value.tensor(module.out_dim)


def _build_text_cnn(layer: KerasLayerConfig, value: Value, where: str):
    history, _ = _sequence_input(value, "TextCNN", where)
    module = TextCNNLayer(history, layer.text_cnn)
    return module, Value.tensor(module.out_dim)


def _fields(value: Value, name: str, where: str) -> Tuple[bool, int, int]:
    """(stack the list?, number of fields, field width) of an input of fields: a list of equal
    (D,) tensors or one (F, D) tensor."""
    if value.is_list:
        shape = _same_shapes(value, name, where)
        if len(shape) != 1:
            raise FusionrecError(f"{where}: {name} needs (batch, D) fields, got {value.describe()}")
        return True, len(value.shapes), shape[0]
    if len(value.shapes[0]) != 2:
        raise FusionrecError(f"{where}: {name} needs a list of fields or a (batch, fields, D) tensor, got {value.describe()}")
    return False, value.shapes[0][0], value.shapes[0][1]


def _one_vector(value: Value, name: str, where: str) -> int:
    if value.is_list or len(value.shapes[0]) != 1:
        raise FusionrecError(f"{where}: {name} needs one (batch, D) tensor, got {value.describe()}")
    return value.shapes[0][0]


def _build_mlp(layer: KerasLayerConfig, value: Value, where: str):
    mlp = EasyRecMLP(_one_vector(value, "MLP", where), layer.mlp)
    return MLPLayer(mlp), Value.tensor(mlp.out_dim)


def _build_fm(layer: KerasLayerConfig, value: Value, where: str):
    stack, _, dim = _fields(value, "FM", where)
    variant = layer.fm is not None and layer.fm.use_variant
    return FMLayer(stack, variant), Value.tensor(dim if variant else 1)


def _build_dot(layer: KerasLayerConfig, value: Value, where: str):
    params = layer.st_params or {}
    if params.get("skip_gather"):
        raise FusionrecError(f"{where}: DotInteraction skip_gather is not implemented yet by fusionrec")
    stack, n, _ = _fields(value, "DotInteraction", where)
    self_interaction = bool(params.get("self_interaction", False))
    return DotInteractionLayer(stack, n, self_interaction), Value.tensor(n * (n + 1) // 2 if self_interaction else n * (n - 1) // 2)


def _build_cross(layer: KerasLayerConfig, value: Value, where: str):
    params = layer.st_params or {}
    unknown = sorted(set(params) - {"use_bias"})
    if unknown or params.get("use_bias", True) is not True:
        raise FusionrecError(f"{where}: Cross params {unknown or ['use_bias']} are not implemented yet by fusionrec")
    if value.is_list:
        shape = _same_shapes(value, "Cross", where)
        if len(value.shapes) != 2 or len(shape) != 1:
            raise FusionrecError(f"{where}: Cross reads [x0, x] of one (batch, D) shape, got {value.describe()}")
        return CrossLayer(shape[0], True), Value.tensor(shape[0])
    return CrossLayer(_one_vector(value, "Cross", where), False), value


def _build_cin(layer: KerasLayerConfig, value: Value, where: str):
    stack, n, _ = _fields(value, "CIN", where)
    sizes = list(layer.cin.hidden_feature_sizes)
    return CINLayer(stack, n, sizes), Value.tensor(sum(sizes))


def _build_add(layer: KerasLayerConfig, value: Value, where: str):
    shape = _same_shapes(value, "Add", where)
    return AddN(), Value.tensor(*shape)  # keras' Add is tf.add_n


def _build_mmoe(layer: KerasLayerConfig, value: Value, where: str):
    module = MMoELayer(_one_vector(value, "MMoE", where), layer.mmoe, where)
    width = layer.mmoe.expert_mlp.hidden_units[-1]
    return module, Value.of_list([(width,)] * layer.mmoe.num_task)


def _field_list(value: Value, name: str, where: str) -> List[int]:
    if not value.is_list or any(len(shape) != 1 for shape in value.shapes):
        raise FusionrecError(f"{where}: {name} needs a list of (batch, D) fields (input_layer only_output_feature_list), "
                             f"got {value.describe()}")  # fmt: skip
    return [shape[0] for shape in value.shapes]


def _build_senet(layer: KerasLayerConfig, value: Value, where: str):
    from fusionrec.ctr.config import SENetParams

    dims = _field_list(value, "SENet", where)
    return SENetLayer(dims, layer.senet or SENetParams(), where), Value.tensor(sum(dims))


def _build_bilinear(layer: KerasLayerConfig, value: Value, where: str):
    module = BilinearLayer(_field_list(value, "Bilinear", where), layer.bilinear, where)
    return module, Value.tensor(layer.bilinear.num_output_units)


def _build_fibinet(layer: KerasLayerConfig, value: Value, where: str):
    module = FiBiNetLayer(_field_list(value, "FiBiNet", where), layer.fibinet, where)
    return module, Value.tensor(module.out_dim)


def _build_mask_block(layer: KerasLayerConfig, value: Value, where: str):
    if value.is_list:
        if len(value.shapes) < 2 or any(len(s) != 1 for s in value.shapes[:2]):
            raise FusionrecError(f"{where}: MaskBlock reads [input, mask input] of (batch, D) tensors, got {value.describe()}")
        block = MaskBlockLayer(value.shapes[0][0], value.shapes[1][0], layer.mask_block)
        return MaskBlockOp(block, True), Value.tensor(block.out_dim)
    dim = _one_vector(value, "MaskBlock", where)
    block = MaskBlockLayer(dim, dim, layer.mask_block)
    return MaskBlockOp(block, False), Value.tensor(block.out_dim)


def _build_masknet(layer: KerasLayerConfig, value: Value, where: str):
    module = MaskNetLayer(_one_vector(value, "MaskNet", where), layer.masknet)
    return module, Value.tensor(module.out_dim)


def _build_highway(layer: KerasLayerConfig, value: Value, where: str):
    return HighwayLayer(_one_vector(value, "Highway", where), layer.highway), Value.tensor(layer.highway.emb_size)


def _build_gate(layer: KerasLayerConfig, value: Value, where: str):
    from fusionrec.ctr.config import WeightedGateParams

    params = layer.gate or WeightedGateParams()
    if not value.is_list or len(value.shapes) < 2 or params.weight_index >= len(value.shapes):
        raise FusionrecError(f"{where}: Gate reads a list of [weights, inputs...] (weight_index {params.weight_index}), "
                             f"got {value.describe()}")  # fmt: skip
    others = [s for i, s in enumerate(value.shapes) if i != params.weight_index]
    weights = value.shapes[params.weight_index]
    if len(set(others)) != 1 or len(others[0]) != 1 or weights != (len(others),):
        raise FusionrecError(f"{where}: Gate needs (batch, {len(others)}) weights and inputs of one (batch, D) shape, "
                             f"got {value.describe()}")  # fmt: skip
    mlp = EasyRecMLP(others[0][0], params.mlp) if params.mlp is not None else None
    return WeightedGateLayer(params.weight_index, len(value.shapes), mlp), Value.tensor(mlp.out_dim if mlp else others[0][0])


def _builder(path: str) -> Callable:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


# EasyRec class_name -> builder(keras_layer config, input Value, where) -> (Op, output Value), as
# fusionrec.ctr.config.COMPONENT_SPECS registers each (a component of another module is imported here)
COMPONENTS = {name: _builder(spec.builder) for name, spec in COMPONENT_SPEC_OF.items()}
# they read a sequence input (history, mask, target)
SEQUENCE_COMPONENTS = tuple(name for name, spec in COMPONENT_SPEC_OF.items() if spec.sequence)


def build_component(layer: KerasLayerConfig, value: Value, where: str) -> Tuple[Op, Value]:
    if value.parts and layer.class_name not in SEQUENCE_COMPONENTS:
        raise FusionrecError(f"{where} ({layer.class_name}): reads {value.describe()}")
    return COMPONENTS[layer.class_name](layer, value, f"{where} ({layer.class_name})")



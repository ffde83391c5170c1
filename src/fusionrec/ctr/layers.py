"""Layers, one paper component each: MLP tower, DIN target attention, BST's sequence
transformer, DCN-v2 cross network, FM, AutoInt's interacting layer, variational dropout."""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from fusionrec.ctr.config import ACTIVATIONS as ACTIVATION_NAMES


def _softmax() -> nn.Module:
    return nn.Softmax(dim=-1)


# the torch module of each activation fusionrec.ctr.config.ACTIVATIONS names
ACTIVATION_MODULES = {
    "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "selu": nn.SELU,
    "gelu": nn.GELU, "prelu": nn.PReLU, "linear": nn.Identity, "swish": nn.SiLU, "softmax": _softmax,
}  # fmt: skip
# EasyRec's activation name -> its torch module
ACTIVATIONS = {name: ACTIVATION_MODULES[meaning] for name, meaning in ACTIVATION_NAMES.items()}


class MLP(nn.Module):
    """EasyRec's DNN: per hidden unit Linear -> BatchNorm (use_bn) -> activation -> dropout."""

    def __init__(self, in_dim: int, hidden_units: list[int], activation: str = "tf.nn.relu", use_bn: bool = True,
                 dropout_ratio: list[float] | None = None):  # fmt: skip
        super().__init__()
        layers: list[nn.Module] = []
        dims = [in_dim, *hidden_units]
        self.layer_ends: list[int] = []  # index in self.net of each hidden layer's last module
        for i, units in enumerate(hidden_units):
            layers.append(nn.Linear(dims[i], units, bias=not use_bn))
            if use_bn:
                layers.append(nn.BatchNorm1d(units))
            layers.append(ACTIVATIONS[activation]())
            if dropout_ratio and dropout_ratio[i] > 0:
                layers.append(nn.Dropout(dropout_ratio[i]))
            self.layer_ends.append(len(layers) - 1)
        self.net = nn.Sequential(*layers)
        self.out_dim = dims[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def hidden_outputs(self, x: Tensor) -> List[Tensor]:
        """The output of every hidden layer, first to last (the last is ``forward``'s)."""
        outputs: List[Tensor] = []
        for i, layer in enumerate(self.net):
            x = layer(x)
            if i in self.layer_ends:
                outputs.append(x)
        return outputs


class DINAttention(nn.Module):
    """Target attention of DIN (Zhou et al., KDD 2018), as EasyRec applies it.

    The candidate (query, B x D) scores each history item (B x L x D) with an MLP over
    [q, k, q - k, q * k] (``hidden_units``, then one score unit); scores of padded positions
    are masked out before a softmax over the sequence, and the output is the score-weighted
    sum of the history (B x D). A row with an empty history gets zeros. EasyRec's score unit
    is the last layer of a DNN whose hidden_units end with 1: in a feature group's
    ``sequence_features`` it takes the DNN's batch norm and activation like every layer
    (``score_activation``); in MultiTowerDIN's ``din_towers`` it is a plain linear unit.
    """

    def __init__(self, dim: int, hidden_units: list[int], activation: str = "tf.nn.sigmoid", use_bn: bool = False,
                 dropout_ratio: list[float] | None = None, score_activation: bool = False):  # fmt: skip
        super().__init__()
        self.mlp = MLP(4 * dim, hidden_units, activation, use_bn, dropout_ratio)
        self.score = nn.Linear(self.mlp.out_dim, 1, bias=not (use_bn and score_activation))
        post: list[nn.Module] = []
        if score_activation:
            if use_bn:
                post.append(nn.BatchNorm1d(1))
            post.append(ACTIVATIONS[activation]())
        self.score_post = nn.Sequential(*post)
        self.has_batch_norm = use_bn and (len(hidden_units) > 0 or score_activation)

    def forward(self, query: Tensor, keys: Tensor, mask: Tensor, values: Optional[Tensor] = None) -> Tensor:
        """The weighted sum of ``values`` (B x L x Dv; default the keys) by the attention
        weights of ``keys``: EasyRec's aux_hist_seq are attended with hist_seq's weights."""
        batch, length, dim = keys.shape
        if values is None:
            values = keys
        if len(self.mlp.net) == 0:  # no hidden layer: score [q, k, q - k, q * k] directly
            keys = keys * mask.unsqueeze(2).to(keys.dtype)  # EasyRec's padded history embeddings are zeros
            q = query.unsqueeze(1).expand(-1, length, -1)
            scores = self.score_post(self.score(torch.cat([q, keys, q - keys, q * keys], dim=-1)).view(-1, 1))
            scores = scores.view(batch, length)
            scores = scores.masked_fill(~mask, -1e9)
            weights = torch.softmax(scores, dim=1) * mask.to(scores.dtype)
            return torch.bmm(weights.unsqueeze(1), values * mask.unsqueeze(2).to(values.dtype)).squeeze(1)
        if self.has_batch_norm and self.training:
            return self._forward_with_padding_statistics(query, keys, mask, values)
        # Only the valid (unpadded) positions are scored: without batch norm, or in eval mode
        # (running statistics), padded positions cannot change the valid ones' scores.
        rows, positions, hidden = self._first_layer(query, self._query_part(query), keys, mask)
        for i, layer in enumerate(self.mlp.net):
            if i > 0:
                hidden = layer(hidden)
        valid_scores = self.score_post(self.score(hidden)).squeeze(1)
        return self._attend(valid_scores, rows, positions, values, mask)

    def _first_layer(self, query: Tensor, query_part: Tensor, keys: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """(rows, positions, first-layer pre-activations) of the valid positions. The first layer
        is linear in [q, k, q - k, q * k]: W [q; k; q-k; q*k] = (W1 + W3) q + (W2 - W3) k + W4 (q * k),
        so the query part (``_query_part``) is computed once per row and the 4D-wide input is
        never built."""
        dim = keys.shape[2]
        first = self.mlp.net[0]
        w = first.weight
        w_key = w[:, dim : 2 * dim] - w[:, 2 * dim : 3 * dim]
        w_product = w[:, 3 * dim :]
        where = torch.nonzero(mask)
        rows, positions = where[:, 0], where[:, 1]
        valid_keys = keys[rows, positions]  # n_valid x D
        hidden = query_part.index_select(0, rows) + valid_keys @ w_key.t()
        hidden = hidden + (query.index_select(0, rows) * valid_keys) @ w_product.t()
        return rows, positions, hidden

    def _query_part(self, query: Tensor) -> Tensor:
        """(W1 + W3) q + b: the first layer's output for a history embedding of zeros."""
        first = self.mlp.net[0]
        dim = query.shape[1]
        w = first.weight
        out = query @ (w[:, :dim] + w[:, 2 * dim : 3 * dim]).t()
        if first.bias is not None:
            out = out + first.bias
        return out

    def _attend(self, valid_scores: Tensor, rows: Tensor, positions: Tensor, values: Tensor, mask: Tensor) -> Tensor:
        batch, length = mask.shape
        scores = torch.full((batch, length), -1e9, dtype=valid_scores.dtype, device=values.device)
        scores = scores.index_put((rows, positions), valid_scores)
        weights = torch.softmax(scores, dim=1) * mask.to(scores.dtype)  # all-padded rows -> 0
        return torch.bmm(weights.unsqueeze(1), values).squeeze(1)

    @torch.jit.unused
    def _forward_with_padding_statistics(self, query, keys, mask, values):  # unannotated: TorchScript reads its stub as Tensors
        """Training with batch norm. EasyRec runs the MLP over every position, padding included
        (a padded history embedding is zeros), so its batch statistics count the padding. A
        padded position's input is [q, 0, q, 0]: the same for every padded position of a row.
        So the valid positions and one padded position per row, weighted by the row's number
        of padded positions, give exactly EasyRec's statistics (and gradients) at the cost of
        the valid positions only."""
        batch, length, _ = keys.shape
        query_part = self._query_part(query)  # also the first layer of each row's padded positions
        rows, positions, hidden = self._first_layer(query, query_part, keys, mask)
        n_padded = (length - mask.sum(dim=1)).to(hidden.dtype)
        x = torch.cat([hidden, query_part])
        weights = torch.cat([torch.ones(hidden.shape[0], dtype=hidden.dtype, device=hidden.device), n_padded])
        layers = [layer for i, layer in enumerate(self.mlp.net) if i > 0] + [self.score] + list(self.score_post)
        for layer in layers:
            x = weighted_batch_norm(x, weights, layer) if isinstance(layer, nn.BatchNorm1d) else layer(x)
        return self._attend(x[: hidden.shape[0]].squeeze(1), rows, positions, values, mask)


def weighted_batch_norm(x: Tensor, weights: Tensor, bn: nn.BatchNorm1d) -> Tensor:
    """Training-mode batch norm of the rows of ``x``, row i counted ``weights[i]`` times:
    identical (values, gradients, running statistics) to ``bn`` over the expanded batch."""
    total = weights.sum()
    w = (weights / total).unsqueeze(1)
    mean = (w * x).sum(dim=0)
    var = (w * (x - mean).pow(2)).sum(dim=0)
    with torch.no_grad():
        momentum = bn.momentum if bn.momentum is not None else 0.1
        bn.running_mean.mul_(1 - momentum).add_(momentum * mean)
        bn.running_var.mul_(1 - momentum).add_(momentum * var * total / (total - 1).clamp(min=1))
        bn.num_batches_tracked.add_(1)
    return (x - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias


class BehaviorSequenceTransformer(nn.Module):
    """BST (Chen et al., "Behavior Sequence Transformer for E-commerce Recommendation in
    Alibaba", DLP-KDD 2019) as EasyRec's MultiTowerBST builds it: the history (cut or padded
    to seq_size - 1 positions) and the candidate form seq_size tokens; the embedding is split
    into ``head_count`` slices, each attends with its own query / key / value layers
    (unscaled dot products, padded history positions masked); the heads are concatenated and
    projected, then add & layer norm, a linear feed-forward layer, add & layer norm; the
    tokens are flattened (B x seq_size * D)."""

    def __init__(self, dim: int, seq_size: int, head_count: int):
        super().__init__()
        width = int(math.ceil(dim / head_count))
        self.slices = [(start, min(start + width, dim)) for start in range(0, dim, width)]
        self.queries = nn.ModuleList(nn.Linear(b - a, b - a) for a, b in self.slices)
        self.keys = nn.ModuleList(nn.Linear(b - a, b - a) for a, b in self.slices)
        self.values = nn.ModuleList(nn.Linear(b - a, b - a) for a, b in self.slices)
        self.merge = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)  # EasyRec's LayerNormalization epsilon
        self.feed_forward = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.n_history = seq_size - 1
        self.out_dim = seq_size * dim

    def forward(self, candidate: Tensor, history: Tensor, mask: Tensor) -> Tensor:
        length = history.shape[1]
        if length < self.n_history:
            history = torch.nn.functional.pad(history, (0, 0, 0, self.n_history - length))
            mask = torch.nn.functional.pad(mask, (0, self.n_history - length))
        else:
            history, mask = history[:, : self.n_history], mask[:, : self.n_history]
        history = history * mask.unsqueeze(2).to(history.dtype)  # EasyRec's padded history embeddings are zeros
        tokens = torch.cat([history, candidate.unsqueeze(1)], dim=1)  # B x seq_size x D
        key_mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        heads: List[Tensor] = []
        i = 0
        for query, key, value in zip(self.queries, self.keys, self.values):
            start, stop = self.slices[i]
            part = tokens[:, :, start:stop]
            scores = torch.matmul(query(part), key(part).transpose(1, 2))
            scores = scores.masked_fill(~key_mask.unsqueeze(1), -(2.0**32) + 1)
            heads.append(torch.matmul(torch.softmax(scores, dim=-1), value(part)))
            i += 1
        x = self.norm1(tokens + self.merge(torch.cat(heads, dim=2)))
        x = self.norm2(x + self.feed_forward(x))
        return x.flatten(1)


class TextCNN(nn.Module):
    """Kim (EMNLP 2014): per filter size, a 1-D convolution of ``num_filters`` channels over an
    embedded sequence (B, L, D) (padded with zero embeddings to ``pad_sequence_length`` and to
    at least the filter size), the activation, then the maximum over time; concatenated."""

    def __init__(self, in_dim: int, filter_sizes: List[int], num_filters: List[int], pad_sequence_length: int, activation: str):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(in_dim, n, k) for k, n in zip(filter_sizes, num_filters))
        self.activation = ACTIVATIONS[activation]()
        self.min_length = max(max(filter_sizes), pad_sequence_length)
        self.out_dim = sum(num_filters)

    def forward(self, embedded: Tensor) -> Tensor:
        if embedded.shape[1] < self.min_length:
            embedded = torch.nn.functional.pad(embedded, (0, 0, 0, self.min_length - embedded.shape[1]))
        x = embedded.transpose(1, 2)  # B x D x L
        pooled: List[Tensor] = []
        for conv in self.convs:
            pooled.append(self.activation(conv(x)).max(dim=2).values)
        return torch.cat(pooled, dim=1)


class CrossNet(nn.Module):
    """DCN's cross layers (Wang et al., ADKDD 2017, eq. 3), as EasyRec's DCN builds them:
    x_{l+1} = x_0 (x_l . w_l) + b_l + x_l, with one weight vector and one bias per layer."""

    def __init__(self, dim: int, n_layers: int):
        super().__init__()
        bound = (3.0 / dim) ** 0.5  # Glorot uniform for a (dim,) vector, TensorFlow's default initializer
        self.weights = nn.ParameterList(nn.Parameter(torch.empty(dim).uniform_(-bound, bound)) for _ in range(n_layers))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(dim)) for _ in range(n_layers))
        self.out_dim = dim

    def forward(self, x0: Tensor) -> Tensor:
        x = x0
        for w, b in zip(self.weights, self.biases):
            x = x0 * (x @ w).unsqueeze(1) + b + x
        return x


class CrossNetV2(nn.Module):
    """DCN-v2 cross layers (Wang et al., WWW 2021, eq. 1): x_{l+1} = x_0 * (W_l x_l + b_l) + x_l."""

    def __init__(self, dim: int, n_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n_layers))
        self.out_dim = dim

    def forward(self, x0: Tensor) -> Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


class FactorizationMachine(nn.Module):
    """Second-order FM term (Rendle 2010, eq. 4): 0.5 * sum_f [(sum_i v_if)^2 - sum_i v_if^2].

    With ``keep_dim`` the sum over f is left out: (B, D), the per-dimension interactions that
    EasyRec's DeepFM feeds to its final_dnn; otherwise (B, 1)."""

    def __init__(self, keep_dim: bool = False):
        super().__init__()
        self.keep_dim = keep_dim

    def forward(self, embeddings: Tensor) -> Tensor:  # B x n_fields x D -> B x D or B x 1
        square_of_sum = embeddings.sum(dim=1).pow(2)
        sum_of_square = embeddings.pow(2).sum(dim=1)
        interactions = 0.5 * (square_of_sum - sum_of_square)
        if self.keep_dim:
            return interactions
        return interactions.sum(dim=1, keepdim=True)


class InteractingLayer(nn.Module):
    """AutoInt's interacting layer (Song et al., CIKM 2019, eqs. 5-8): multi-head self-attention
    over the fields, plus a projected residual, then ReLU. Attention scores are scaled by
    1 / sqrt(head_size), as EasyRec's multi-head attention does."""

    def __init__(self, in_dim: int, head_num: int, head_size: int):
        super().__init__()
        self.head_num, self.head_size = head_num, head_size
        self.query = nn.Linear(in_dim, head_num * head_size, bias=False)
        self.key = nn.Linear(in_dim, head_num * head_size, bias=False)
        self.value = nn.Linear(in_dim, head_num * head_size, bias=False)
        self.residual = nn.Linear(in_dim, head_num * head_size, bias=False)
        self.out_dim = head_num * head_size

    def forward(self, fields: Tensor) -> Tensor:  # B x n_fields x in_dim -> B x n_fields x out_dim
        batch, n_fields = fields.shape[0], fields.shape[1]
        shape = [batch, n_fields, self.head_num, self.head_size]
        q = self.query(fields).view(shape).transpose(1, 2)  # B x heads x n_fields x head_size
        k = self.key(fields).view(shape).transpose(1, 2)
        v = self.value(fields).view(shape).transpose(1, 2)
        weights = torch.softmax(q @ k.transpose(2, 3) / self.head_size**0.5, dim=-1)
        attended = (weights @ v).transpose(1, 2).reshape(batch, n_fields, self.out_dim)
        return torch.relu(attended + self.residual(fields))


CONCRETE_TEMPERATURE = 0.1  # EasyRec's temperature of the concrete (relaxed Bernoulli) keep mask
CONCRETE_EPSILON = 2.220446049250313e-16  # numpy's float eps, which EasyRec adds inside the logs


class VariationalDropout(nn.Module):
    """Dropout feature ranking (Chang et al., "Dropout Feature Ranking for Deep Learning Models",
    arXiv:1712.08645) as EasyRec's variational_dropout on a feature group: a learned dropout
    rate p = sigmoid(logit_p) per feature (per embedding dimension when ``embedding_wise``).
    Training multiplies the group's concatenated output by the concrete relaxation of a
    Bernoulli keep mask (eq. 6, temperature 0.1); evaluation by its expectation 1 - p.
    ``penalty`` is the regularizer lambda / B * sum(1 - p), which pushes rates up so that
    only the features the model needs keep a low one (the ranking)."""

    def __init__(self, field_dims: List[int], regularization_lambda: float, embedding_wise: bool):
        super().__init__()
        n_rates = sum(field_dims) if embedding_wise else len(field_dims)
        limit = math.sqrt(3.0 / n_rates)  # TensorFlow's default glorot_uniform for a vector
        self.logit_p = nn.Parameter(torch.empty(n_rates).uniform_(-limit, limit))
        expand = torch.arange(sum(field_dims)) if embedding_wise else torch.repeat_interleave(
            torch.arange(len(field_dims)), torch.tensor(field_dims))  # fmt: skip
        self.register_buffer("expand", expand, persistent=False)
        self.regularization_lambda = regularization_lambda
        self.temperature = CONCRETE_TEMPERATURE
        self.eps = CONCRETE_EPSILON

    def forward(self, x: Tensor) -> Tensor:
        p = torch.sigmoid(self.logit_p)
        if not self.training:
            return x * (1.0 - p)[self.expand]
        u = torch.rand(x.shape[0], p.shape[0], dtype=x.dtype)
        eps = self.eps
        relaxed = (torch.log(p + eps) - torch.log(1.0 - p + eps) + torch.log(u + eps) - torch.log(1.0 - u + eps))
        keep = 1.0 - torch.sigmoid(relaxed / self.temperature)
        return x * keep[:, self.expand]

    def penalty(self, batch_size: int) -> Tensor:
        return self.regularization_lambda / batch_size * (1.0 - torch.sigmoid(self.logit_p)).sum()

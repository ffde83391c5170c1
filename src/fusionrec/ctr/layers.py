"""Layers, one paper component each: MLP tower, DIN target attention, DCN-v2 cross network, FM,
AutoInt's interacting layer."""

from __future__ import annotations

import torch
from torch import Tensor, nn

# EasyRec writes TensorFlow activation paths; both spellings map to the same torch module.
ACTIVATIONS = {
    "tf.nn.relu": nn.ReLU, "relu": nn.ReLU, "tf.nn.sigmoid": nn.Sigmoid, "sigmoid": nn.Sigmoid,
    "tf.nn.tanh": nn.Tanh, "tanh": nn.Tanh, "tf.nn.leaky_relu": nn.LeakyReLU, "leaky_relu": nn.LeakyReLU,
    "tf.nn.elu": nn.ELU, "elu": nn.ELU, "tf.nn.selu": nn.SELU, "selu": nn.SELU, "tf.nn.gelu": nn.GELU,
    "gelu": nn.GELU, "dice": nn.PReLU, "prelu": nn.PReLU,
}  # fmt: skip


class MLP(nn.Module):
    """EasyRec's DNN: per hidden unit Linear -> BatchNorm (use_bn) -> activation -> dropout."""

    def __init__(self, in_dim: int, hidden_units: list[int], activation: str = "tf.nn.relu", use_bn: bool = True,
                 dropout_ratio: list[float] | None = None):  # fmt: skip
        super().__init__()
        layers: list[nn.Module] = []
        dims = [in_dim, *hidden_units]
        for i, units in enumerate(hidden_units):
            layers.append(nn.Linear(dims[i], units, bias=not use_bn))
            if use_bn:
                layers.append(nn.BatchNorm1d(units))
            layers.append(ACTIVATIONS[activation]())
            if dropout_ratio and dropout_ratio[i] > 0:
                layers.append(nn.Dropout(dropout_ratio[i]))
        self.net = nn.Sequential(*layers)
        self.out_dim = dims[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class DINAttention(nn.Module):
    """Target attention of DIN (Zhou et al., KDD 2018), as EasyRec applies it.

    The candidate (query, B x D) scores each history item (B x L x D) with an MLP over
    [q, k, q - k, q * k]; scores of padded positions are masked out before a softmax over
    the sequence, and the output is the score-weighted sum of the history (B x D). A row
    with an empty history gets zeros.
    """

    def __init__(self, dim: int, hidden_units: list[int], activation: str = "tf.nn.sigmoid", use_bn: bool = False,
                 dropout_ratio: list[float] | None = None):  # fmt: skip
        super().__init__()
        self.mlp = MLP(4 * dim, hidden_units, activation, use_bn, dropout_ratio)
        self.score = nn.Linear(self.mlp.out_dim, 1)
        self.has_batch_norm = use_bn and len(hidden_units) > 0

    def forward(self, query: Tensor, keys: Tensor, mask: Tensor) -> Tensor:
        batch, length, dim = keys.shape
        if len(self.mlp.net) == 0:  # no hidden layer: score [q, k, q - k, q * k] directly
            q = query.unsqueeze(1).expand(-1, length, -1)
            scores = self.score(torch.cat([q, keys, q - keys, q * keys], dim=-1)).squeeze(2)
            scores = scores.masked_fill(~mask, -1e9)
            weights = torch.softmax(scores, dim=1) * mask.to(scores.dtype)
            return torch.bmm(weights.unsqueeze(1), keys).squeeze(1)
        # The first layer is linear in [q, k, q - k, q * k]: W [q; k; q-k; q*k] =
        # (W1 + W3) q + (W2 - W3) k + W4 (q * k). The query part is computed once per row,
        # not once per history position, and the 4D-wide input is never built. Without batch
        # norm only the valid (unpadded) positions go through the MLP; with it, every
        # position does, so that the batch statistics are EasyRec's (padding included).
        first = self.mlp.net[0]
        w = first.weight
        w_query = w[:, :dim] + w[:, 2 * dim : 3 * dim]
        w_key = w[:, dim : 2 * dim] - w[:, 2 * dim : 3 * dim]
        w_product = w[:, 3 * dim :]
        where = torch.nonzero(mask if not self.has_batch_norm else torch.ones_like(mask))
        rows, positions = where[:, 0], where[:, 1]
        valid_keys = keys[rows, positions]  # n_valid x D
        q_rows = query.index_select(0, rows)
        hidden = (query @ w_query.t()).index_select(0, rows) + valid_keys @ w_key.t() + (q_rows * valid_keys) @ w_product.t()
        if first.bias is not None:
            hidden = hidden + first.bias
        for i, layer in enumerate(self.mlp.net):
            if i > 0:
                hidden = layer(hidden)
        valid_scores = self.score(hidden).squeeze(1)
        scores = torch.full((batch, length), -1e9, dtype=valid_scores.dtype, device=keys.device)
        scores = scores.index_put((rows, positions), valid_scores)
        if self.has_batch_norm:
            scores = scores.masked_fill(~mask, -1e9)
        weights = torch.softmax(scores, dim=1) * mask.to(scores.dtype)  # all-padded rows -> 0
        return torch.bmm(weights.unsqueeze(1), keys).squeeze(1)


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
    """Second-order FM term (Rendle 2010, eq. 4): 0.5 * sum_f [(sum_i v_if)^2 - sum_i v_if^2]."""

    def forward(self, embeddings: Tensor) -> Tensor:  # B x n_fields x D -> B x 1
        square_of_sum = embeddings.sum(dim=1).pow(2)
        sum_of_square = embeddings.pow(2).sum(dim=1)
        return 0.5 * (square_of_sum - sum_of_square).sum(dim=1, keepdim=True)


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

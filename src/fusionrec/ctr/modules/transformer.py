"""Transformer parts of EasyRec's multi-modal models (CMBF, Uniter), after BERT (Devlin et al.,
NAACL 2019) as EasyRec's ``multihead_cross_attention`` writes them.

- ``MultiHeadAttention``: scaled dot-product attention of ``from`` positions over ``to``
  positions ("Attention Is All You Need", Vaswani et al. 2017, eq. 1), masked positions get
  -10000 before the softmax, dropout on the attention probabilities.
- ``TransformerEncoder``: BERT's layers (attention, projection, residual + layer norm; feed-forward,
  residual + layer norm).
- ``CrossAttentionTower``: CMBF's cross-modal layers: each side attends to the other, then to
  itself, then a ReLU feed-forward, with residuals and layer norms (Chen et al., "CMBF", Sensors 2021).
- ``EmbeddingPostprocessor``: token-type and position embeddings added, layer norm, dropout.

Layer norms use TensorFlow's epsilon 1e-12; dense kernels start from a truncated normal of
standard deviation ``initializer_range`` (0.02), as in BERT.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

LAYER_NORM_EPS = 1e-12
# EasyRec's hidden_act names -> torch modules (gelu is BERT's tanh approximation)
TRANSFORMER_ACTIVATIONS = {"gelu": lambda: nn.GELU(approximate="tanh"), "relu": nn.ReLU, "tanh": nn.Tanh,
                           "swish": nn.SiLU}  # fmt: skip


def dense(in_dim: int, out_dim: int, initializer_range: float = 0.02) -> nn.Linear:
    layer = nn.Linear(in_dim, out_dim)
    layer.kernel_initializer = None  # BERT's truncated normal, below: tf_defaults leaves it
    nn.init.trunc_normal_(layer.weight, std=initializer_range, a=-2 * initializer_range, b=2 * initializer_range)
    nn.init.zeros_(layer.bias)
    return layer


class MultiHeadAttention(nn.Module):
    def __init__(self, from_dim: int, to_dim: int, n_heads: int, head_size: int, attention_dropout: float,
                 initializer_range: float = 0.02):  # fmt: skip
        super().__init__()
        self.query = dense(from_dim, n_heads * head_size, initializer_range)
        self.key = dense(to_dim, n_heads * head_size, initializer_range)
        self.value = dense(to_dim, n_heads * head_size, initializer_range)
        self.dropout = nn.Dropout(attention_dropout)
        self.n_heads = n_heads
        self.head_size = head_size
        self.out_dim = n_heads * head_size

    def _heads(self, x: Tensor) -> Tensor:  # B x L x (N*H) -> B x N x L x H
        return x.view(x.shape[0], x.shape[1], self.n_heads, self.head_size).transpose(1, 2)

    def forward(self, from_x: Tensor, to_x: Tensor, to_mask: Optional[Tensor]) -> Tensor:
        q, k, v = self._heads(self.query(from_x)), self._heads(self.key(to_x)), self._heads(self.value(to_x))
        scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(float(self.head_size))
        if to_mask is not None:  # B x T, True where attended
            scores = scores + (1.0 - to_mask.to(scores.dtype))[:, None, None, :] * -10000.0
        probs = self.dropout(torch.softmax(scores, dim=-1))
        context = torch.matmul(probs, v).transpose(1, 2)
        return context.reshape(context.shape[0], context.shape[1], self.out_dim)


class TransformerEncoderLayer(nn.Module):
    def __init__(self, hidden: int, n_heads: int, intermediate: int, activation: str, hidden_dropout: float,
                 attention_dropout: float, initializer_range: float):  # fmt: skip
        super().__init__()
        self.attention = MultiHeadAttention(hidden, hidden, n_heads, hidden // n_heads, attention_dropout, initializer_range)
        self.attention_output = dense(hidden, hidden, initializer_range)
        self.attention_norm = nn.LayerNorm(hidden, eps=LAYER_NORM_EPS)
        self.intermediate = dense(hidden, intermediate, initializer_range)
        self.activation = TRANSFORMER_ACTIVATIONS[activation]()
        self.output = dense(intermediate, hidden, initializer_range)
        self.output_norm = nn.LayerNorm(hidden, eps=LAYER_NORM_EPS)
        self.dropout = nn.Dropout(hidden_dropout)

    def forward(self, x: Tensor, mask: Optional[Tensor]) -> Tensor:
        attended = self.attention_norm(self.dropout(self.attention_output(self.attention(x, x, mask))) + x)
        return self.output_norm(self.dropout(self.output(self.activation(self.intermediate(attended)))) + attended)


class TransformerEncoder(nn.Module):
    """``n_layers`` BERT layers of width ``hidden`` (a multiple of ``n_heads``); 0 layers: identity."""

    def __init__(self, hidden: int, n_layers: int, n_heads: int, intermediate: int, activation: str = "gelu",
                 hidden_dropout: float = 0.0, attention_dropout: float = 0.0, initializer_range: float = 0.02):  # fmt: skip
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(hidden, n_heads, intermediate, activation, hidden_dropout, attention_dropout,
                                    initializer_range)  # fmt: skip
            for _ in range(n_layers)
        )

    def forward(self, x: Tensor, mask: Optional[Tensor]) -> Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return x


class CrossAttentionBlock(nn.Module):
    """One side of a CMBF cross-modal layer: attend to the other side, then to itself (no
    projection), residual + layer norm; ReLU feed-forward, residual + layer norm."""

    def __init__(self, from_dim: int, to_dim: int, n_heads: int, head_size: int, intermediate: int,
                 hidden_dropout: float, attention_dropout: float):  # fmt: skip
        super().__init__()
        width = n_heads * head_size
        self.cross = MultiHeadAttention(from_dim, to_dim, n_heads, head_size, attention_dropout)
        self.self_attention = MultiHeadAttention(width, width, n_heads, head_size, attention_dropout)
        self.attention_norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.intermediate = dense(width, intermediate)
        self.output = dense(intermediate, width)
        self.output_norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.dropout = nn.Dropout(hidden_dropout)
        self.out_dim = width

    def forward(self, from_x: Tensor, to_x: Tensor, to_mask: Optional[Tensor], self_mask: Optional[Tensor]) -> Tensor:
        crossed = self.cross(from_x, to_x, to_mask)
        attended = self.attention_norm(self.dropout(self.self_attention(crossed, crossed, self_mask)) + crossed)
        return self.output_norm(self.dropout(self.output(torch.relu(self.intermediate(attended)))) + attended)


class CrossAttentionTower(nn.Module):
    """``n_layers`` cross-modal layers between a left (image) and a right (text) sequence."""

    def __init__(self, left_dim: int, right_dim: int, n_layers: int, n_heads: int, left_head_size: int,
                 right_head_size: int, hidden_dropout: float, attention_dropout: float):  # fmt: skip
        super().__init__()
        left_blocks, right_blocks = [], []
        for _ in range(n_layers):
            left_blocks.append(CrossAttentionBlock(left_dim, right_dim, n_heads, left_head_size, 4 * n_heads * left_head_size,
                                                   hidden_dropout, attention_dropout))  # fmt: skip
            right_blocks.append(CrossAttentionBlock(right_dim, left_dim, n_heads, right_head_size,
                                                    4 * n_heads * right_head_size, hidden_dropout, attention_dropout))  # fmt: skip
            left_dim, right_dim = n_heads * left_head_size, n_heads * right_head_size
        self.left_blocks = nn.ModuleList(left_blocks)
        self.right_blocks = nn.ModuleList(right_blocks)
        self.left_dim, self.right_dim = left_dim, right_dim

    def forward(self, left: Tensor, right: Tensor, right_mask: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        for left_block, right_block in zip(self.left_blocks, self.right_blocks):
            left, right = left_block(left, right, right_mask, None), right_block(right, left, None, right_mask)
        return left, right


class EmbeddingPostprocessor(nn.Module):
    """BERT's embedding post-processing of one input: + a token-type embedding (a row of a table
    the caller shares), + position embeddings (``max_positions`` > 0), layer norm, dropout."""

    def __init__(self, width: int, max_positions: int, dropout: float, initializer_range: float = 0.02):
        super().__init__()
        self.use_positions = max_positions > 0
        self.positions = nn.Parameter(torch.empty(max(max_positions, 1), width))
        nn.init.trunc_normal_(self.positions, std=initializer_range, a=-2 * initializer_range, b=2 * initializer_range)
        self.norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, token_type: Optional[Tensor]) -> Tensor:
        if token_type is not None:
            x = x + token_type
        if self.use_positions:
            x = x + self.positions[: x.shape[1]].unsqueeze(0)
        return self.dropout(self.norm(x))


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over the valid positions of B x L x D (zeros for a row with none)."""
    weights = mask.to(x.dtype).unsqueeze(2)
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)

"""AutoInt's interacting layer (Song et al., CIKM 2019): multi-head self-attention over the
fields."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class InteractingLayer(nn.Module):
    """AutoInt's interacting layer (Song et al., CIKM 2019, eqs. 5-8): multi-head self-attention
    over the fields, plus a projected residual, then ReLU. Attention scores are multiplied by
    sqrt(head_size), as EasyRec's MultiHeadAttention computes them (``q k^T / head_size**-0.5``;
    the paper's eq. 5 has no scale, Transformer's divides by sqrt(d)): the EasyRec config
    means EasyRec's model."""

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
        weights = torch.softmax(q @ k.transpose(2, 3) * self.head_size**0.5, dim=-1)
        attended = (weights @ v).transpose(1, 2).reshape(batch, n_fields, self.out_dim)
        return torch.relu(attended + self.residual(fields))

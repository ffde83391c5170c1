"""Sequence encoders: BST's transformer over the behaviour sequence (Chen et al., 2019) and Kim's
TextCNN."""

from __future__ import annotations

import math
from typing import List

import torch
from torch import Tensor, nn

from fusionrec.ctr.modules.mlp import ACTIVATIONS


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

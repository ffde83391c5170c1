"""DIN's target attention (Zhou et al., KDD 2018) as EasyRec's sequence feature layer applies it."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from fusionrec.ctr.modules.mlp import ACTIVATIONS, MLP


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
    y, mean, var, total = _WeightedBatchNorm.apply(x, weights, bn.weight, bn.bias, bn.eps)
    with torch.no_grad():
        momentum = bn.momentum if bn.momentum is not None else 0.1
        bn.running_mean.mul_(1 - momentum).add_(momentum * mean)
        bn.running_var.mul_(1 - momentum).add_(momentum * var * total / (total - 1).clamp(min=1))
        bn.num_batches_tracked.add_(1)
    return y


class _WeightedBatchNorm(torch.autograd.Function):
    """Batch norm with row weights w (normalized to sum 1), in few passes over x: DIN's attention
    normalizes one row per valid history position (50,000 x 128 on a 4,096-row taobao batch),
    where autograd's graph of the same formula made about 30 passes over it.

    Forward: mu = w^T x, c = x - mu, var = w^T c^2, y = gamma * c / sqrt(var + eps) + beta.
    Backward (the chain rule through mu and var, as for batch norm (Ioffe & Szegedy, ICML 2015,
    section 3) with 1/m replaced by w_i): with a = gamma * r, r = (var + eps)^-1/2,
    dx_i = a * (g_i - w_i * sum_j g_j - w_i * r^2 * c_i * sum_j g_j c_j)."""

    @staticmethod
    def forward(ctx, x, weights, gamma, beta, eps: float):
        total = weights.sum()
        w = weights / total
        mean = w @ x
        centered = x - mean
        var = w @ (centered * centered)
        rstd = torch.rsqrt(var + eps)
        scale = gamma * rstd
        y = torch.addcmul(beta, centered, scale)
        ctx.save_for_backward(centered, w, rstd, scale)
        ctx.mark_non_differentiable(mean, var, total)
        return y, mean, var, total

    @staticmethod
    def backward(ctx, grad, _mean, _var, _total):
        centered, w, rstd, scale = ctx.saved_tensors
        grad_sum = grad.sum(dim=0)
        grad_dot = (grad * centered).sum(dim=0)  # sum_j g_j c_j
        grad_x = grad * scale
        grad_x.addr_(w, scale * grad_sum, alpha=-1.0)
        grad_x.addcmul_(centered * w.unsqueeze(1), scale * rstd * rstd * grad_dot, value=-1.0)
        return grad_x, None, grad_dot * rstd, grad_sum, None

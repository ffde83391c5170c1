"""EasyRec's variational dropout of feature groups (concrete relaxation of a Bernoulli keep mask)."""

from __future__ import annotations

import math
from typing import List

import torch
from torch import Tensor, nn

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

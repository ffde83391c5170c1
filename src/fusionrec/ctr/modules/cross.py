"""Cross networks: DCN's (Wang et al., ADKDD 2017) and DCN-v2's (Wang et al., WWW 2021), with the
one DCN-v2 step the backbone's Cross layer applies too."""

from __future__ import annotations

import torch
from torch import Tensor, nn


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


def cross_v2_step(x0: Tensor, x: Tensor, projected: Tensor) -> Tensor:
    """One DCN-v2 cross layer (Wang et al., WWW 2021, eq. 1) given ``projected`` = W x + b:
    x0 * (W x + b) + x. The backbone's Cross layer and ``CrossNetV2`` both step through it."""
    return x0 * projected + x


class CrossNetV2(nn.Module):
    """DCN-v2 cross layers (Wang et al., WWW 2021, eq. 1): x_{l+1} = x_0 * (W_l x_l + b_l) + x_l."""

    def __init__(self, dim: int, n_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n_layers))
        self.out_dim = dim

    def forward(self, x0: Tensor) -> Tensor:
        x = x0
        for layer in self.layers:
            x = cross_v2_step(x0, x, layer(x))
        return x

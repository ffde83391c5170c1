"""Factorization machine interactions (Rendle 2010, eq. 4)."""

from __future__ import annotations

from torch import Tensor, nn


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

"""EasyRec's RocketLaunching (Zhou et al., AAAI 2018): a light net trained beside a booster net."""

from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fusionrec.ctr.config import RocketLaunchingConfig
from fusionrec.ctr.models.base import ModelInputs, _Base, _mlp
from fusionrec.ctr.tasks import sum_by_nonzero_weights


class RocketLaunching(_Base):
    """Rocket Launching (Zhou et al., AAAI 2018) as EasyRec's RocketLaunching: over the group
    ``all`` (through ``share_dnn`` if set), a large booster net and a light net are trained
    together; the light net sees the shared input with its gradient stopped and learns the
    labels plus the booster's logits (the hint loss, eq. 3, squared error); with
    ``feature_based_distillation``, each light hidden layer is also pulled towards the first
    booster hidden layer of the same width. ``forward`` is the light net: what is served."""

    def __init__(self, inputs: ModelInputs, params: RocketLaunchingConfig):
        super().__init__()
        self._set_outputs(inputs)
        groups, _ = inputs.groups(None)
        self.input = self._group(groups, "all", "rocket_launching (EasyRec's RocketLaunching needs a feature group named 'all')")
        self.share = _mlp(self.input.out_dim, params.share_dnn)
        self.booster = _mlp(self.share.out_dim, params.booster_dnn)
        self.light = _mlp(self.share.out_dim, params.light_dnn)
        self.booster_head = nn.Linear(self.booster.out_dim, self.n_outputs)
        self.light_head = nn.Linear(self.light.out_dim, self.n_outputs)
        self.feature_based = params.feature_based_distillation
        self.similarity = params.feature_distillation_function
        booster_units = list(params.booster_dnn.hidden_units)
        # (light layer, booster layer) pairs: each light layer with the first booster layer of its width
        self.distilled_pairs = [(i, booster_units.index(u)) for i, u in enumerate(params.light_dnn.hidden_units)
                                if u in booster_units]  # fmt: skip

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        shared = self.share(self.input(features))
        return self._logits(self.light_head(self.light(shared)))

    @torch.jit.export
    def forward_heads(self, features: Dict[str, Tensor]) -> Dict[str, Tensor]:
        shared = self.share(self.input(features))
        return {"_light": self._logits(self.light_head(self.light(shared))),
                "_booster": self._logits(self.booster_head(self.booster(shared)))}  # fmt: skip

    @torch.jit.ignore
    def training_heads(self, features: Dict[str, Tensor], weights: Tensor | None) -> tuple[Dict[str, Tensor], Tensor]:
        """Logits of both nets and the distillation loss: the hint loss (light logits against
        the booster's, gradient stopped) and, with feature_based_distillation, -0.1 x the mean
        cosine (or inner product) of each paired hidden layer, or +0.1 x their Euclidean
        distance (EasyRec subtracts the distance too, which pushes the nets apart)."""
        shared = self.share(self.input(features))
        light_hidden = self.light.hidden_outputs(shared.detach())
        booster_hidden = self.booster.hidden_outputs(shared)
        light_input = light_hidden[-1] if light_hidden else shared.detach()
        booster_input = booster_hidden[-1] if booster_hidden else shared
        heads = {"_light": self._logits(self.light_head(light_input)), "_booster": self._logits(self.booster_head(booster_input))}
        hint = (heads["_light"] - heads["_booster"].detach()).pow(2)
        if hint.dim() > 1:
            hint = hint.mean(dim=1)
        loss = sum_by_nonzero_weights(hint, weights)
        if self.feature_based:
            for i, j in self.distilled_pairs:
                light, booster = light_hidden[i], booster_hidden[j].detach()
                if self.similarity == "EUCLID":
                    loss = loss + 0.1 * (booster - light).pow(2).sum().sqrt()
                    continue
                if self.similarity == "COSINE":
                    light, booster = F.normalize(light, dim=1), F.normalize(booster, dim=1)
                loss = loss - 0.1 * (light * booster).sum(dim=1).mean()
        return heads, loss

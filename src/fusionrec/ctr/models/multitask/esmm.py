"""EasyRec's ESMM (Ma et al., SIGIR 2018) and its loss over the whole impression space (equation 3)."""

from typing import Dict, List

import torch
from torch import Tensor, nn

from fusionrec.ctr.config import ESMMConfig, PipelineConfig
from fusionrec.ctr.models.base import ModelInputs, _mlp
from fusionrec.ctr.models.multitask.base import ALL_GROUP, TaskHead, _MultiTask
from fusionrec.ctr.modules.mlp import MLP


class ESMM(_MultiTask):
    """Entire Space Multi-task Model (Ma et al., SIGIR 2018) as EasyRec builds it: each of
    ``groups`` through its DNN, concatenated (or the ``all`` group when there are none); a CVR
    tower and a CTR tower over that; pCTCVR = pCTR x pCVR (``derived_outputs``: probs_ctcvr, or
    y_ctcvr for an L2_LOSS cvr tower)."""

    def __init__(self, model_inputs: ModelInputs, params: ESMMConfig):
        super().__init__()
        towers = self._set_towers(model_inputs)
        groups, _ = model_inputs.groups(None)
        inputs: List[nn.Module] = []
        dnns: List[nn.Module] = []
        if params.groups:
            for tower in params.groups:
                group = self._group(groups, tower.input, "esmm.groups")
                inputs.append(group)
                dnns.append(_mlp(group.out_dim, tower.dnn))
        else:
            group = self._input_group(model_inputs, ALL_GROUP)
            inputs.append(group)
            dnns.append(MLP(group.out_dim, []))
        self.inputs = nn.ModuleList(inputs)
        self.group_dnns = nn.ModuleList(dnns)
        width = sum(d.out_dim for d in dnns)
        self.heads = nn.ModuleList(TaskHead(width, t) for t in towers)
        self.cvr_is_regression = params.cvr_tower.loss_type == "L2_LOSS"

    @torch.jit.export
    def forward_heads(self, features: Dict[str, Tensor]) -> Dict[str, Tensor]:
        parts: List[Tensor] = []
        for group, dnn in zip(self.inputs, self.group_dnns):
            parts.append(dnn(group(features)))
        shared = torch.cat(parts, dim=1)
        logits: List[Tensor] = []
        for head in self.heads:
            logits.append(head(shared))
        return self._named(logits)

    @torch.jit.export
    def derived_outputs(self, outputs: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """pCTCVR = pCTR x pCVR, from the named outputs of both towers."""
        cvr, ctr = self.suffixes[0], self.suffixes[1]
        out: Dict[str, Tensor] = {}
        if self.cvr_is_regression:
            out["y_ctcvr"] = outputs["y" + cvr] * outputs["probs" + ctr]
        else:
            out["probs_ctcvr"] = outputs["probs" + cvr] * outputs["probs" + ctr]
        return out


KERAS_EPSILON = 1e-7  # Keras' backend epsilon, which its binary_crossentropy clips and adds


def esmm_loss(heads: Dict[str, Tensor], labels: Dict[str, Tensor], config: PipelineConfig,
              weights: Tensor | None, head_labels: Dict[str, str] | None = None) -> Tensor:  # fmt: skip
    """ESMM's loss as EasyRec computes it (Ma et al. 2018, equation 3): the CTR tower's
    sigmoid cross-entropy and the CTCVR cross-entropy of pCTR x pCVR against click x
    conversion, both over every impression and summed over the batch (EasyRec reduces with
    tf.reduce_sum), each times its tower's ``weight``. An L2_LOSS cvr tower: the squared error
    of y_cvr x pCTR against the label x click, weighted by the sample weights (their nonzero
    count divides), as tf.losses.mean_squared_error does."""
    params = config.model_config_.esmm
    head_labels = head_labels if head_labels is not None else config.head_labels()
    ctr_suffix, cvr_suffix = "_" + params.ctr_tower.tower_name, "_" + params.cvr_tower.tower_name
    ctr_labels, cvr_labels = labels[head_labels[ctr_suffix]], labels[head_labels[cvr_suffix]]
    ctr_logits, cvr_logits = heads[ctr_suffix], heads[cvr_suffix]
    ctr_loss = nn.functional.binary_cross_entropy_with_logits(ctr_logits, ctr_labels, reduction="sum")
    ctcvr_labels = cvr_labels * ctr_labels
    if params.cvr_tower.loss_type == "L2_LOSS":
        errors = (cvr_logits * torch.sigmoid(ctr_logits) - ctcvr_labels).pow(2)
        if weights is None:
            cvr_loss = errors.mean()
        else:
            cvr_loss = (errors * weights).sum() / (weights != 0).sum().clamp(min=1)
    else:
        proba = (torch.sigmoid(cvr_logits) * torch.sigmoid(ctr_logits)).clamp(KERAS_EPSILON, 1 - KERAS_EPSILON)
        cvr_loss = -(ctcvr_labels * torch.log(proba + KERAS_EPSILON)
                     + (1 - ctcvr_labels) * torch.log(1 - proba + KERAS_EPSILON)).sum()  # fmt: skip
    return params.ctr_tower.weight * ctr_loss + params.cvr_tower.weight * cvr_loss

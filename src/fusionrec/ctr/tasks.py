"""What a ranking model predicts, from EasyRec's ``num_class`` and ``loss_type``.

EasyRec's RankModel has three outputs, and so does fusionrec:

- binary (``CLASSIFICATION``, ``num_class: 1``): one logit per row; ``probs`` = sigmoid(logits);
  labels 0 / 1 (or a probability in [0, 1]); sigmoid cross-entropy.
- multi-class (``CLASSIFICATION`` or ``SOFTMAX_CROSS_ENTROPY`` with ``num_class`` > 1): one
  logit per class; ``probs`` = softmax(logits), ``y`` = the argmax class, ``probs_y`` /
  ``logits_y`` = the largest probability / logit; labels are class ids 0 .. num_class - 1;
  softmax cross-entropy over the class ids.
- regression (``L2_LOSS``; ``SIGMOID_L2_LOSS`` squashes the output by a sigmoid first): one
  output ``y``; labels any finite number (in [0, 1] for SIGMOID_L2_LOSS); squared error.

Two of EasyRec's ``losses`` shape the outputs themselves:

- ``JRC_LOSS`` (``num_class: 2``): a binary task scored by two logits; ``probs`` = softmax(logits)[:, 1],
  ``pos_logits`` = logits[:, 1] (Sheng et al., "Joint Optimization of Ranking and Calibration with
  Contextualized Hybrid Model", KDD 2023).
- ``ZILN_LOSS`` (``num_class: 3``): the zero-inflated lognormal of a value such as lifetime value
  (Wang et al., "A Deep Probabilistic Model for Customer Lifetime Value Prediction", 2019):
  ``probs`` = p(value > 0) and ``y`` the predicted mean; labels any number >= 0.

Losses reduce as TensorFlow's ``tf.losses`` do by default: sum(w * loss) / count(w != 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

BINARY, MULTICLASS, REGRESSION, ZILN = "binary", "multiclass", "regression", "ziln"
JRC_LOSS, ZILN_LOSS = "JRC_LOSS", "ZILN_LOSS"
# the number of logits each output-shaping loss needs (EasyRec asserts num_class equal to it)
SHAPING_LOSS_CLASSES = {JRC_LOSS: 2, ZILN_LOSS: 3}

# EasyRec's model-level loss_type values fusionrec trains, and the task each one means
LOSS_TYPE_TASKS = {"CLASSIFICATION": None, "SOFTMAX_CROSS_ENTROPY": MULTICLASS, "L2_LOSS": REGRESSION,
                   "SIGMOID_L2_LOSS": REGRESSION}  # fmt: skip


@dataclass(frozen=True)
class Task:
    kind: str  # BINARY, MULTICLASS, REGRESSION or ZILN
    n_classes: int = 1
    squash: bool = False  # SIGMOID_L2_LOSS: the regression output is sigmoid(logits)
    shaping_loss: str = ""  # JRC_LOSS or ZILN_LOSS: the loss that gives the outputs their meaning
    # ZILN_LOSS's prediction: (max_sigma, max_log_clip_value, return_log_pred_value as 0 / 1)
    head_params: tuple[float, ...] = ()

    @classmethod
    def of(cls, loss_type: str, num_class: int, losses: list | tuple = ()) -> "Task":
        """The task of a model_config's (or task tower's) ``loss_type``, ``num_class`` and
        ``losses`` (validated by the config: a shaping loss is the only one of its ``losses``)."""
        for entry in losses:
            if entry.loss_type == JRC_LOSS:
                return cls(BINARY, 1, shaping_loss=JRC_LOSS)
            if entry.loss_type == ZILN_LOSS:
                params = entry.ziln_loss  # the config fills EasyRec's defaults
                head_params = (params.max_sigma, params.max_log_clip_value, float(params.return_log_pred_value))
                return cls(ZILN, 1, shaping_loss=ZILN_LOSS, head_params=head_params)
        kind = LOSS_TYPE_TASKS[loss_type] or (MULTICLASS if num_class > 1 else BINARY)
        return cls(kind, num_class if kind == MULTICLASS else 1, loss_type == "SIGMOID_L2_LOSS")

    @property
    def n_outputs(self) -> int:
        """Width of the model's last layer: one logit per class, the shaping loss's, else one."""
        if self.shaping_loss:
            return SHAPING_LOSS_CLASSES[self.shaping_loss]
        return self.n_classes if self.kind == MULTICLASS else 1

    @property
    def head(self) -> str:
        """How the logits become outputs (``task_outputs``): the kind, or the shaping loss."""
        return self.shaping_loss or self.kind

    @property
    def output_names(self) -> tuple[str, ...]:
        """The outputs EasyRec's exported model has (predict's ``ALL_COLUMNS``), sorted by name."""
        return {BINARY: ("logits", "probs"), MULTICLASS: ("logits", "logits_y", "probs", "probs_y", "y"),
                REGRESSION: ("y",), JRC_LOSS: ("logits", "pos_logits", "probs"), ZILN_LOSS: ("logits", "probs", "y")}[self.head]  # fmt: skip

    @property
    def label_rule(self) -> str:
        if self.kind == MULTICLASS:
            return f"is not a class id (an integer 0 .. {self.n_classes - 1}, num_class {self.n_classes})"
        if self.kind == REGRESSION and not self.squash:
            return "is not a finite number"
        if self.kind == ZILN:
            return "is not a number >= 0 (ZILN_LOSS models a value that is zero or lognormal)"
        if self.shaping_loss == JRC_LOSS:
            return "is not 0 or 1 (JRC_LOSS reads the label as the class of two logits)"
        return "is not a binary label (0 or 1, or a probability in [0, 1])"

    def bad_labels(self, values: np.ndarray) -> np.ndarray:
        """Mask of the label values this task cannot learn from (see ``label_rule``)."""
        with np.errstate(invalid="ignore"):
            if self.kind == MULTICLASS:
                return ~((values >= 0) & (values < self.n_classes) & (values == np.floor(values)))
            if self.kind == REGRESSION and not self.squash:
                return ~np.isfinite(values)
            if self.kind == ZILN:
                return ~(np.isfinite(values) & (values >= 0))
            if self.shaping_loss == JRC_LOSS:  # the class id of two logits
                return ~((values == 0) | (values == 1))
            return ~((values >= 0) & (values <= 1))

    def score(self, logits: Tensor) -> Tensor:
        """The model's main prediction: probabilities (binary: (B,), multi-class: (B, C)) or y."""
        return task_score(logits, self.head, self.squash, list(self.head_params))

    def eval_scores(self, logits: Tensor) -> Tensor:
        """What evaluation scores: ``score``, except for ZILN (B, 2): p(value > 0) and y."""
        if self.kind == ZILN:
            probs, value = ziln_prediction(logits, *self.head_params)
            return torch.stack([probs, value], dim=1)
        return self.score(logits)

    def loss(self, logits: Tensor, labels: Tensor, weights: Tensor | None) -> Tensor:
        """The loss of the model-level ``loss_type`` (binary: see ``fusionrec.ctr.losses``)."""
        if self.kind == MULTICLASS:
            per_row = F.cross_entropy(logits, labels.long(), reduction="none")
        elif self.kind == REGRESSION:
            per_row = (task_score(logits, self.kind, self.squash, []) - labels).pow(2)
        else:
            raise ValueError("binary losses live in fusionrec.ctr.losses")
        return sum_by_nonzero_weights(per_row, weights)


def task_score(logits: Tensor, head: str, squash: bool, head_params: List[float]) -> Tensor:
    """The served prediction of a ``Task.head`` (TorchScript-able: the export runs it)."""
    if head == "multiclass":
        return torch.softmax(logits, dim=1)
    if head == "regression" and not squash:
        return logits
    if head == "JRC_LOSS":
        return torch.softmax(logits, dim=1)[:, 1]
    if head == "ZILN_LOSS":  # EasyRec serves the predicted value
        return ziln_prediction(logits, head_params[0], head_params[1], head_params[2])[1]
    return torch.sigmoid(logits)


def ziln_prediction(logits: Tensor, max_sigma: float, max_log_clip: float, return_log: float) -> Tuple[Tensor, Tensor]:
    """p(value > 0) and the predicted mean of a zero-inflated lognormal with logits (B, 3) =
    (positive logit, mu, pre-softplus sigma): E[value] = p * exp(mu + sigma^2 / 2), sigma clipped
    to [sqrt(1e-7), max_sigma] and the log of the mean to [-100, max_log_clip] as EasyRec's
    zero_inflated_lognormal_pred; with ``return_log`` the log of the mean, unclipped."""
    probs = torch.sigmoid(logits[:, 0])
    sigma = ziln_sigma(logits[:, 2], max_sigma)
    log_mean = F.logsigmoid(logits[:, 0]) + logits[:, 1] + 0.5 * sigma * sigma
    if return_log > 0.5:
        return probs, log_mean
    return probs, torch.exp(log_mean.clamp(min=-100.0, max=max_log_clip))


def ziln_sigma(raw: Tensor, max_sigma: float) -> Tensor:
    """The lognormal's sigma from its logit: softplus, clipped to [sqrt(1e-7), max_sigma]
    (1e-7 is Keras' epsilon, EasyRec's lower clip)."""
    return F.softplus(raw).clamp(min=math.sqrt(1e-7), max=max_sigma)


def task_outputs(logits: Tensor, head: str, squash: bool, head_params: List[float]) -> Dict[str, Tensor]:
    """Every output of ``Task.output_names`` (TorchScript-able: the export runs it)."""
    outputs: Dict[str, Tensor] = {}
    if head == "JRC_LOSS":
        outputs["logits"] = logits
        outputs["pos_logits"] = logits[:, 1]
        outputs["probs"] = torch.softmax(logits, dim=1)[:, 1]
    elif head == "ZILN_LOSS":
        probs, value = ziln_prediction(logits, head_params[0], head_params[1], head_params[2])
        outputs["logits"] = logits
        outputs["probs"] = probs
        outputs["y"] = value
    elif head == "multiclass":
        probs = torch.softmax(logits, dim=1)
        outputs["logits"] = logits
        outputs["probs"] = probs
        outputs["logits_y"] = logits.max(dim=1).values
        outputs["probs_y"] = probs.max(dim=1).values
        outputs["y"] = logits.argmax(dim=1)
    elif head == "regression":
        outputs["y"] = torch.sigmoid(logits) if squash else logits
    else:
        outputs["logits"] = logits
        outputs["probs"] = torch.sigmoid(logits)
    return outputs


def output_name(name: str, suffix: str) -> str:
    """EasyRec's name of output ``name`` of the head ``suffix``: the suffix goes before a
    trailing "_y" (``logits_light_y``, ``probs_light_y``, ``y_light``)."""
    if name.endswith("_y"):
        return name[: len(name) - 2] + suffix + "_y"
    return name + suffix


def sum_by_nonzero_weights(values: Tensor, weights: Tensor | None) -> Tensor:
    """TensorFlow's default loss reduction: sum(w * loss) / count(w != 0) (the mean without weights)."""
    if weights is None:
        return values.mean()
    return (values * weights).sum() / (weights != 0).sum().clamp(min=1)

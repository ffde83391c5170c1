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

Losses reduce as TensorFlow's ``tf.losses`` do by default: sum(w * loss) / count(w != 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

BINARY, MULTICLASS, REGRESSION = "binary", "multiclass", "regression"

# EasyRec's model-level loss_type values fusionrec trains, and the task each one means
LOSS_TYPE_TASKS = {"CLASSIFICATION": None, "SOFTMAX_CROSS_ENTROPY": MULTICLASS, "L2_LOSS": REGRESSION,
                   "SIGMOID_L2_LOSS": REGRESSION}  # fmt: skip


@dataclass(frozen=True)
class Task:
    kind: str  # BINARY, MULTICLASS or REGRESSION
    n_classes: int = 1
    squash: bool = False  # SIGMOID_L2_LOSS: the regression output is sigmoid(logits)

    @classmethod
    def of(cls, loss_type: str, num_class: int) -> "Task":
        """The task of a model_config's ``loss_type`` and ``num_class`` (validated by the config)."""
        kind = LOSS_TYPE_TASKS[loss_type] or (MULTICLASS if num_class > 1 else BINARY)
        return cls(kind, num_class if kind == MULTICLASS else 1, loss_type == "SIGMOID_L2_LOSS")

    @property
    def n_outputs(self) -> int:
        """Width of the model's last layer: one logit per class, else one."""
        return self.n_classes if self.kind == MULTICLASS else 1

    @property
    def output_names(self) -> tuple[str, ...]:
        """The outputs EasyRec's exported model has (predict's ``ALL_COLUMNS``), sorted by name."""
        return {BINARY: ("logits", "probs"), MULTICLASS: ("logits", "logits_y", "probs", "probs_y", "y"),
                REGRESSION: ("y",)}[self.kind]  # fmt: skip

    @property
    def label_rule(self) -> str:
        if self.kind == MULTICLASS:
            return f"is not a class id (an integer 0 .. {self.n_classes - 1}, num_class {self.n_classes})"
        if self.kind == REGRESSION and not self.squash:
            return "is not a finite number"
        return "is not a binary label (0 or 1, or a probability in [0, 1])"

    def bad_labels(self, values: np.ndarray) -> np.ndarray:
        """Mask of the label values this task cannot learn from (see ``label_rule``)."""
        with np.errstate(invalid="ignore"):
            if self.kind == MULTICLASS:
                return ~((values >= 0) & (values < self.n_classes) & (values == np.floor(values)))
            if self.kind == REGRESSION and not self.squash:
                return ~np.isfinite(values)
            return ~((values >= 0) & (values <= 1))

    def score(self, logits: Tensor) -> Tensor:
        """The model's main prediction: probabilities (binary: (B,), multi-class: (B, C)) or y."""
        return task_score(logits, self.kind, self.squash)

    def loss(self, logits: Tensor, labels: Tensor, weights: Tensor | None) -> Tensor:
        """The loss of the model-level ``loss_type`` (binary: see ``fusionrec.ctr.losses``)."""
        if self.kind == MULTICLASS:
            per_row = F.cross_entropy(logits, labels.long(), reduction="none")
        elif self.kind == REGRESSION:
            per_row = (task_score(logits, self.kind, self.squash) - labels).pow(2)
        else:
            raise ValueError("binary losses live in fusionrec.ctr.losses")
        return sum_by_nonzero_weights(per_row, weights)


def task_score(logits: Tensor, kind: str, squash: bool) -> Tensor:
    if kind == "multiclass":
        return torch.softmax(logits, dim=1)
    if kind == "regression" and not squash:
        return logits
    return torch.sigmoid(logits)


def task_outputs(logits: Tensor, kind: str, squash: bool) -> Dict[str, Tensor]:
    """Every output of ``Task.output_names`` (TorchScript-able: the export runs it)."""
    outputs: Dict[str, Tensor] = {}
    if kind == "multiclass":
        probs = torch.softmax(logits, dim=1)
        outputs["logits"] = logits
        outputs["probs"] = probs
        outputs["logits_y"] = logits.max(dim=1).values
        outputs["probs_y"] = probs.max(dim=1).values
        outputs["y"] = logits.argmax(dim=1)
    elif kind == "regression":
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

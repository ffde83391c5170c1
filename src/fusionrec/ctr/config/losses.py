"""``losses``: EasyRec's Loss entries and the rules for combining them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from fusionrec.ctr.config._base import _only_implemented, _Strict
from fusionrec.ctr.tasks import BINARY, SHAPING_LOSS_CLASSES, Task


class F1ReweightedLoss(_Strict):
    f1_beta_square: float = Field(1.0, gt=0)
    label_smoothing: float = Field(0.0, ge=0, le=1)


class BinaryFocalLoss(_Strict):
    gamma: float = Field(2.0, ge=0)
    alpha: float | None = Field(None, ge=0, le=1)
    ohem_ratio: float = Field(1.0, gt=0, le=1)
    label_smoothing: float = Field(0.0, ge=0, le=1)


class PairwiseLoss(_Strict):
    margin: float = 0.0
    temperature: float = Field(1.0, gt=0)
    session_name: str | None = None

    @field_validator("session_name")
    @classmethod
    def _no_sessions(cls, value):
        return _only_implemented("session_name", value, None, "pairs are formed over the whole batch")


class PairwiseLogisticLoss(_Strict):
    temperature: float = Field(1.0, gt=0)
    session_name: str | None = None
    ohem_ratio: float = 1.0
    use_label_margin: bool = False

    @model_validator(mode="after")
    def _plain(self):
        _only_implemented("session_name", self.session_name, None, "pairs are formed over the whole batch")
        _only_implemented("ohem_ratio", self.ohem_ratio, 1.0, "every pair counts")
        _only_implemented("use_label_margin", self.use_label_margin, False, "no label margin")
        return self


class JRCLoss(_Strict):
    """EasyRec's JRCLoss: ``session_name`` is the input field whose equal values form a session."""

    session_name: str = Field(min_length=1)
    alpha: float = Field(0.5, ge=0, le=1)
    same_label_loss: bool = True
    loss_weight_strategy: Literal["fixed", "random_uniform", "random_normal", "random_bernoulli", "uncertainty"] = "fixed"

    @field_validator("loss_weight_strategy")
    @classmethod
    def _strategy(cls, value):
        if value == "uncertainty":
            raise ValueError("jrc_loss.loss_weight_strategy 'uncertainty' (learned weights) is not implemented yet by fusionrec; "
                             "it has fixed, random_uniform, random_normal, random_bernoulli")  # fmt: skip
        return value


class ZILNLoss(_Strict):
    mu_regularization: float = Field(0.01, ge=0)
    sigma_regularization: float = Field(0.01, ge=0)
    max_log_clip_value: float = 20.0
    max_sigma: float = Field(5.0, gt=0)
    return_log_pred_value: bool = False
    classification_weight: float = Field(1.0, ge=0)
    regression_weight: float = Field(1.0, ge=0)


# loss_type -> the parameter block it reads (None: it has none)
LOSS_TYPES = {"CLASSIFICATION": None, "F1_REWEIGHTED_LOSS": "f1_reweighted_loss", "PAIR_WISE_LOSS": "pairwise_loss",
              "PAIRWISE_LOGISTIC_LOSS": "pairwise_logistic_loss", "BINARY_FOCAL_LOSS": "binary_focal_loss",
              "ORDER_CALIBRATE_LOSS": None, "JRC_LOSS": "jrc_loss", "ZILN_LOSS": "ziln_loss"}  # fmt: skip


class LossConfig(_Strict):
    loss_type: str
    weight: float = Field(1.0, ge=0)
    loss_name: str = ""
    learn_loss_weight: bool = False
    f1_reweighted_loss: F1ReweightedLoss | None = None
    pairwise_loss: PairwiseLoss | None = None
    pairwise_logistic_loss: PairwiseLogisticLoss | None = None
    binary_focal_loss: BinaryFocalLoss | None = None
    jrc_loss: JRCLoss | None = None
    ziln_loss: ZILNLoss | None = None

    @model_validator(mode="after")
    def _known(self):
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"losses: loss_type {self.loss_type!r} is not implemented yet by fusionrec; it has {list(LOSS_TYPES)}")
        _only_implemented("learn_loss_weight", self.learn_loss_weight, False, "the configured weight")
        if self.loss_type == "JRC_LOSS" and self.jrc_loss is None:
            raise ValueError("losses: JRC_LOSS needs its jrc_loss { session_name: ... } (EasyRec's JRCLoss requires session_name)")
        if self.loss_type == "ZILN_LOSS" and self.ziln_loss is None:  # EasyRec's defaults, for the loss and the prediction
            self.ziln_loss = ZILNLoss()
        return self


def check_losses(losses: list[LossConfig], loss_type: str, num_class: int, where: str) -> None:
    """EasyRec's rules for ``losses``: JRC_LOSS (num_class 2) and ZILN_LOSS (num_class 3) give
    the outputs their meaning, so each is its tower's only loss; the others are binary (num_class 1)."""
    shaping = [entry.loss_type for entry in losses if entry.loss_type in SHAPING_LOSS_CLASSES]
    if shaping:
        if len(losses) > 1:
            raise ValueError(f"{where}: losses: {shaping[0]} shapes the outputs ({SHAPING_LOSS_CLASSES[shaping[0]]} logits); "
                             f"it cannot be combined with {[e.loss_type for e in losses if e.loss_type != shaping[0]]}")  # fmt: skip
        if loss_type != "CLASSIFICATION" or num_class != SHAPING_LOSS_CLASSES[shaping[0]]:
            raise ValueError(f"{where}: losses: {shaping[0]} needs num_class {SHAPING_LOSS_CLASSES[shaping[0]]} and "
                             f"loss_type CLASSIFICATION, got num_class {num_class}, loss_type {loss_type}")  # fmt: skip
    elif losses and Task.of(loss_type, num_class).kind != BINARY:
        raise ValueError(f"{where}: losses: the losses of `losses` are binary ranking losses; this is a "
                         f"{Task.of(loss_type, num_class).kind} task (loss_type {loss_type}, num_class {num_class})")  # fmt: skip

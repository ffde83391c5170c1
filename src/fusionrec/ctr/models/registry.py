"""The model of a config: ``build_model`` builds ``model_config.model_class`` as its
``MODEL_SPECS`` entry names it."""

from __future__ import annotations

import importlib

from torch import nn

from fusionrec.ctr.config import PipelineConfig
from fusionrec.ctr.features import FeatureTransform
from fusionrec.ctr.models.base import ModelInputs
from fusionrec.ctr.modules.tf_defaults import initialize_as_tensorflow_


def build_model(config: PipelineConfig, transform: FeatureTransform, *, batch_norm_momentum: float | None = None) -> nn.Module:
    """The model of ``model_config.model_class``, as its ``MODEL_SPECS`` entry names it, with
    TensorFlow's batch-norm constants and initializers (``modules.tf_defaults``): what the
    EasyRec config means. ``batch_norm_momentum``: fusionrec's option to replace TensorFlow's."""
    module_name, attribute = config.model_config_.spec.module.split(":")
    model_class = getattr(importlib.import_module(module_name), attribute)
    model = model_class(ModelInputs.of(config, transform), config.model_config_.block)
    return initialize_as_tensorflow_(model, batch_norm_momentum)

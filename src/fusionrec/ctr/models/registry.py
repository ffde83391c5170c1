"""The model of a config: ``build_model`` builds ``model_config.model_class`` as its
``MODEL_SPECS`` entry names it."""

from __future__ import annotations

import importlib

from torch import nn

from fusionrec.ctr.config import PipelineConfig
from fusionrec.ctr.features import FeatureTransform
from fusionrec.ctr.models.base import ModelInputs


def build_model(config: PipelineConfig, transform: FeatureTransform) -> nn.Module:
    """The model of ``model_config.model_class``, as its ``MODEL_SPECS`` entry names it."""
    module_name, attribute = config.model_config_.spec.module.split(":")
    model_class = getattr(importlib.import_module(module_name), attribute)
    return model_class(ModelInputs.of(config, transform), config.model_config_.block)

"""Config-driven deep CTR trainer (EasyRec-compatible), in PyTorch.

Stages, one module each, data flowing one way: ``config`` (EasyRec text format or YAML ->
typed config) -> ``data`` (pyarrow batches) -> ``features`` (ids, masks, values; TorchScript)
-> ``embedding`` (feature groups) -> ``models`` (logits) -> ``trainer`` (loss, optimizer,
checkpoints, evaluation) -> ``export`` (TorchScript scoring model, batch prediction).
"""

import importlib

from fusionrec.ctr.config import PipelineConfig, load_config
from fusionrec.ctr.export import export, load_export, predict  # binds `export` the function, not the module

# Loaded when first asked for (PEP 562): `fusionrec ctr predict` imports what it uses, not the
# trainer's scikit-learn metrics nor CTRClassifier (a second of start-up, -X importtime).
_LAZY = {"CTRClassifier": "fusionrec.ctr.sklearn", "Trainer": "fusionrec.ctr.trainer"}

__all__ = ["CTRClassifier", "PipelineConfig", "Trainer", "export", "load_config", "load_export", "predict"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'fusionrec.ctr' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)

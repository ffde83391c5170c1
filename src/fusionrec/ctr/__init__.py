"""Config-driven deep CTR trainer (EasyRec-compatible), in PyTorch.

Stages, one module each, data flowing one way: ``config`` (EasyRec text format or YAML ->
typed config) -> ``data`` (pyarrow batches) -> ``features`` (ids, masks, values; TorchScript)
-> ``embedding`` (feature groups) -> ``models`` (logits) -> ``trainer`` (loss, optimizer,
checkpoints, evaluation) -> ``export`` (TorchScript scoring model, batch prediction).
"""

import importlib

# Loaded when first asked for (PEP 562): `fusionrec ctr predict` and `eval` import what they use,
# not scikit-learn through CTRClassifier (a second of start-up, measured with -X importtime).
_WHERE = {"CTRClassifier": "fusionrec.ctr.sklearn", "PipelineConfig": "fusionrec.ctr.config",
          "load_config": "fusionrec.ctr.config", "Trainer": "fusionrec.ctr.trainer", "export": "fusionrec.ctr.export",
          "load_export": "fusionrec.ctr.export", "predict": "fusionrec.ctr.export"}  # fmt: skip

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'fusionrec.ctr' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)

"""Config-driven deep CTR trainer (EasyRec-compatible), in PyTorch.

Stages, one module each, data flowing one way: ``config`` (EasyRec text format or YAML ->
typed config) -> ``data`` (pyarrow batches) -> ``features`` (ids, masks, values; TorchScript)
-> ``embedding`` (feature groups) -> ``models`` (logits) -> ``trainer`` (loss, optimizer,
checkpoints, evaluation) -> ``export`` (TorchScript scoring model, batch prediction).
"""

from fusionrec.ctr.config import PipelineConfig, load_config
from fusionrec.ctr.export import export, load_export, predict
from fusionrec.ctr.sklearn import CTRClassifier
from fusionrec.ctr.trainer import Trainer

__all__ = ["CTRClassifier", "PipelineConfig", "Trainer", "export", "load_config", "load_export", "predict"]

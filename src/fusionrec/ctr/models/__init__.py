"""The models of EasyRec's model zoo, one per module; ``multitask/`` holds the multi-task ones.

Each is a pure ``nn.Module`` whose ``forward(features)`` returns logits: (B,) for one
output, (B, num_class) for a multi-class model (``fusionrec.ctr.tasks``). ``features`` is the
output of ``FeatureTransform`` (ids, masks and dense values by feature name). Loss, optimizer,
schedule and checkpoints live in the trainer. ``build_model`` builds a config's
``model_class`` as its ``MODEL_SPECS`` entry (``fusionrec.ctr.config.model_config``) names it.
"""

from fusionrec.ctr.models.registry import build_model

__all__ = ["build_model"]

"""Stage 2: raw column tensors -> feature ids, masks and values, in TorchScript-able torch ops.

One module per EasyRec feature type (``id``, ``raw``, ``tag``, ``sequence``, ``combo``,
``expr``, ``lookup``) on ``base.FeatureModule``; ``transform.FEATURE_MODULES`` registers them
and ``FeatureTransform`` runs every configured feature. The same modules run in training and
inside the exported TorchScript model, so an export needs no feature code of ours and cannot
disagree with training. ``ops`` holds the string and number operations they share.
"""

from fusionrec.ctr.features.base import FeatureModule
from fusionrec.ctr.features.ops import (
    feature_counts,
    fnv1a,
    hash_strings,
    pad_tokens,
    parse_decimals,
    read_vocab_file,
    run_expression,
    split_tokens,
    tensor_digest,
    vocab_key,
)
from fusionrec.ctr.features.transform import FEATURE_MODULES, FeatureTransform

__all__ = ["FEATURE_MODULES", "FeatureModule", "FeatureTransform", "feature_counts", "fnv1a", "hash_strings", "pad_tokens",
           "parse_decimals", "read_vocab_file", "run_expression", "split_tokens", "tensor_digest", "vocab_key"]

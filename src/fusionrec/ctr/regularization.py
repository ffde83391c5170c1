"""EasyRec's ``embedding_regularization``: what it penalizes and how.

EasyRec builds ``l2_regularizer(embedding_regularization)`` and applies it to the *outputs* of
the embedding columns each time its input layer builds a feature group (``InputLayer`` calls
``apply_regularization`` on every embedding column's output tensor, the wide part's included;
its sequence-feature layer on the seq_att_groups' key and history embeddings). So the penalty
is ``scale * sum(output^2) / 2`` (TensorFlow's ``l2_loss`` halves) over the batch's rows, not
over the table: a pooled tag list is penalized as its pooled vector, an id repeated in the
batch once per row, a feature in two groups once per group.

``EmbeddingRegularizer`` gives the same: while training, a forward hook on every embedding
slot (``fusionrec.ctr.embedding``) adds its output's sum of squares; a seq_att_group's key and
history embeddings are summed from its ids (each valid position once, padding excluded). The
hooks exist only inside ``attached()`` (TorchScript cannot compile a Python hook: an export
never sees them)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from fusionrec.ctr.embedding import (AttentionPoolSlot, BagSlot, IdSlot, RawProjectionSlot, SequenceGroupSlot,
                                     SequenceSlot, TextCNNSlot)  # fmt: skip

# slots whose output is an embedding column's output (a raw value passed through is not)
EMBEDDING_OUTPUT_SLOTS = (IdSlot, BagSlot, AttentionPoolSlot, TextCNNSlot, SequenceSlot, RawProjectionSlot)


class EmbeddingRegularizer:
    """``scale * sum(embedding outputs^2) / 2`` of the forward passes made inside ``attached()``
    (which attaches nothing when the model's ``scale`` is 0)."""

    def __init__(self, model: nn.Module, scale: float):
        self.scale = scale
        self.slots = [m for m in model.modules() if isinstance(m, EMBEDDING_OUTPUT_SLOTS)]
        self.sequence_groups = [m for m in model.modules() if isinstance(m, SequenceGroupSlot)]
        self._sums: list[Tensor] = []

    @contextmanager
    def attached(self) -> Iterator[None]:
        if self.scale <= 0:
            yield
            return
        handles = [slot.register_forward_hook(self._add_output) for slot in self.slots]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
            self._sums.clear()

    def _add_output(self, module: nn.Module, inputs, output) -> None:
        if module.training and torch.is_grad_enabled():
            embedded = output[0] if isinstance(output, tuple) else output  # SequenceSlot: (embeddings, mask)
            self._sums.append(embedded.pow(2).sum())

    def penalty(self, features: dict[str, Tensor], like: Tensor, scale: float) -> Tensor:
        """``scale`` times the penalty of the forward pass just made (its hooked outputs are
        then forgotten)."""
        total = like.new_zeros(())
        if scale <= 0:
            self._sums.clear()
            return total
        for value in self._sums:
            total = total + value
        self._sums.clear()
        for group in self.sequence_groups:
            for table, name in [*zip(group.key_tables, group.keys), *zip(group.hist_tables, group.hists)]:
                total = total + _sum_of_squares(table, name, features)
        return scale * 0.5 * total


def _sum_of_squares(table: nn.Embedding, name: str, features: dict[str, Tensor]) -> Tensor:
    """sum over the feature's valid positions of ||row||^2, each distinct id looked up once."""
    ids = features[name]
    if name + ".multi_mask" in features:  # seq_multi_sep: (B, L, K) ids, the values marked
        ids = ids[features[name + ".multi_mask"]]
    elif name + ".mask" in features:
        ids = ids[features[name + ".mask"]]
    unique, counts = torch.unique(ids, return_counts=True)
    rows = torch.nn.functional.embedding(unique, table.weight, sparse=table.sparse)
    return (rows.pow(2).sum(dim=1) * counts.to(rows.dtype)).sum()

"""What every feature's transform shares: its configured constants and buffers, its id space.

One class per EasyRec feature type derives from ``FeatureModule`` (``fusionrec.ctr.features``'s
registry ``FEATURE_MODULES``); each ``forward(columns, out)`` adds ``name`` (and ``name.mask``,
``.length``, ``.weight`` or counts) to ``out``. The same modules run in training and inside
the exported TorchScript model. Every type keeps the same buffers (``vocab_keys``,
``vocab_index``, ``boundaries``) so checkpoints name them alike.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import Tensor, nn

from fusionrec.ctr.config import FeatureConfig
from fusionrec.ctr.expressions import Program, compile_expression
from fusionrec.ctr.features.ops import _vocab_keys, _weighted_keys, fnv1a, pad_tokens, split_tokens, vocab_key


class FeatureModule(nn.Module):
    """Base: one configured feature. ``forward`` adds ``name`` (and ``name.mask``) to ``out``."""

    def __init__(self, config: FeatureConfig, input_types: Dict[str, str], vocab: List[str]):
        super().__init__()
        self.name = config.name
        self.inputs = list(config.input_names)
        self.input_type = input_types[config.input_names[0]]
        self.hash_bucket_size = int(config.hash_bucket_size)
        self.num_buckets = int(config.num_buckets)
        self.separator = ord(config.separator) if len(config.separator.encode()) == 1 else 0
        self.max_seq_len = int(config.max_seq_len or 0)
        self.multi = config.feature_type in ("TagFeature", "SequenceFeature") or any(config.combo_input_seps)
        self.kv_separator = ord(config.kv_separator) if config.kv_separator else 0
        self.lookup_max = int(config.lookup_max_sel_elem_num)
        self.has_vocab = len(vocab) > 0
        keys, order = _vocab_keys(vocab)
        self.register_buffer("vocab_keys", keys, persistent=True)
        self.register_buffer("vocab_index", order, persistent=True)
        self.n_vocab = len(vocab)
        self.register_buffer("boundaries", torch.tensor(config.bucket_boundaries, dtype=torch.float64), persistent=True)
        self.min_val = float(config.min_val)
        self.max_val = float(config.max_val)
        self.is_raw = config.feature_type in ("RawFeature", "PassThroughFeature")  # PassThrough: never scaled
        self.is_raw_sequence = config.is_raw_sequence
        self.sequence_length = int(config.sequence_length)
        self.multi_sep = ord(config.seq_multi_sep) if config.seq_multi_sep else 0
        self.raw_input_dim = int(config.raw_input_dim)
        self.embedding_dim = int(config.embedding_dim)
        self.is_combo = config.feature_type == "ComboFeature"
        self.is_expr = config.feature_type == "ExprFeature"
        program = compile_expression(config.expression, list(config.input_names)) if self.is_expr else Program()
        self.register_buffer("expr_opcodes", torch.tensor(program.opcodes, dtype=torch.int64), persistent=False)
        self.register_buffer("expr_operands", torch.tensor(program.operands, dtype=torch.int64), persistent=False)
        self.register_buffer("expr_constants", torch.tensor(program.constants + [0.0], dtype=torch.float64), persistent=False)
        self.combo_is_text = [input_types[name] == "STRING" for name in config.input_names]
        self.combo_join_bytes = list((config.combo_join_sep or "_").encode())
        seps = list(config.combo_input_seps) or [""] * len(config.input_names)
        self.combo_splits = [ord(sep) if sep else 0 for sep in seps]
        self.n_ids = self.table_rows()


    def table_rows(self) -> int:
        """Embedding table rows of the ids: the hash buckets, num_buckets, or the vocabulary
        (out-of-vocabulary values share row 0 with the first word, as in EasyRec)."""
        if self.hash_bucket_size > 0:
            return self.hash_bucket_size
        if self.num_buckets > 0:
            return self.num_buckets
        return self.n_vocab

    def _ids_from_strings(self, data: Tensor, starts: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """(ids, how many were out of the vocabulary); EasyRec's default_value=0 for the latter."""
        if self.has_vocab:
            key = vocab_key(data, starts, lengths)
            where = torch.searchsorted(self.vocab_keys, key).clamp(max=self.n_vocab - 1)
            found = self.vocab_keys[where] == key
            return torch.where(found, self.vocab_index[where], torch.zeros_like(key)), (~found).sum()
        h = fnv1a(data, starts, lengths, torch.full_like(starts, 2166136261))
        return torch.remainder(h, self.hash_bucket_size), torch.zeros((), dtype=torch.int64)


    def _token_ids(self, data: Tensor, offsets: Tensor, out: Dict[str, Tensor]) -> None:
        """A multi-value STRING field (TagFeature, SequenceFeature): its tokens split at
        ``separator`` into (B, L) ids, ``.mask`` and ``.length``; with ``kv_separator`` each
        token is key<kv>weight, the keys the values and ``.weight`` their weights."""
        starts, lengths, row = split_tokens(data, offsets, self.separator)
        if self.kv_separator > 0:  # key<kv>weight tokens: the keys are the values, weighted
            starts, lengths, weights = _weighted_keys(data, starts, lengths, self.kv_separator)
            index = torch.arange(weights.shape[0], dtype=torch.int64)  # each token's weight, placed as its id is
            placed, placed_mask, _ = pad_tokens(index, row, offsets.shape[0] - 1, self.max_seq_len)
            padded_weights = weights[placed] if weights.shape[0] > 0 else torch.zeros(placed.shape, dtype=torch.float64)
            out[self.name + ".weight"] = (padded_weights * placed_mask.to(torch.float64)).to(torch.float32)
        ids, n_oov = self._ids_from_strings(data, starts, lengths)
        padded, mask, lengths = pad_tokens(ids, row, offsets.shape[0] - 1, self.max_seq_len)
        out[self.name] = padded
        out[self.name + ".mask"] = mask
        out[self.name + ".length"] = lengths  # before truncation: parallel lists are checked on it
        if self.max_seq_len > 0:
            out[self.name + ".truncated"] = (lengths > self.max_seq_len).sum()
        if self.has_vocab:
            out[self.name + ".out_of_vocabulary"] = n_oov

    def forward(self, columns: Dict[str, Tensor], out: Dict[str, Tensor]) -> None:
        raise NotImplementedError

"""The numba twins of the feature transforms' string operations (fusionrec.ctr.features._kernels)
against the TorchScript code an export runs: bit-equal on awkward strings (empty rows, leading,
trailing and repeated separators, multi-byte UTF-8, one very long value)."""

import numpy as np
import pytest
import torch

from fusionrec.ctr.features import _kernels, ops

SCRIPTED_FNV1A = torch.jit.script(ops.fnv1a)
SCRIPTED_SPLIT = torch.jit.script(ops.split_tokens)
SCRIPTED_PAD = torch.jit.script(ops.pad_tokens)


def _strings(seed: int, n_rows: int) -> list[str]:
    rng = np.random.default_rng(seed)
    alphabet = list("ab|c|9") + ["é", "中", "|", ""]
    rows = ["".join(rng.choice(alphabet, size=rng.integers(0, 12))) for _ in range(n_rows)]
    rows += ["", "|", "||a||", "a" * 300, "中文|é|"]
    return rows


def _arrow_layout(rows: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    encoded = [r.encode() for r in rows]
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in encoded])]).astype(np.int64)
    data = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
    return torch.from_numpy(data), torch.from_numpy(offsets)


@pytest.mark.parametrize("seed", range(4))
def test_fnv1a_matches_the_torchscript_hash(seed):
    data, offsets = _arrow_layout(_strings(seed, 200))
    starts, lengths = offsets[:-1], offsets[1:] - offsets[:-1]
    for basis in (2166136261, 3735928559):
        state = torch.full_like(starts, basis)
        assert torch.equal(ops.fnv1a(data, starts, lengths, state), SCRIPTED_FNV1A(data, starts, lengths, state))
    # the known FNV-1a 32-bit value of "a" (Fowler, Noll, Vo reference table)
    a = torch.tensor([97], dtype=torch.uint8)
    assert int(ops.fnv1a(a, torch.tensor([0]), torch.tensor([1]), torch.tensor([2166136261]))[0]) == 0xE40C292C


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("max_len", [0, 1, 3])
def test_splitting_and_padding_lists_match_the_torchscript_code(seed, max_len):
    data, offsets = _arrow_layout(_strings(seed, 200))
    separator = ord("|")
    eager, scripted = ops.split_tokens(data, offsets, separator), SCRIPTED_SPLIT(data, offsets, separator)
    for ours, theirs in zip(eager, scripted):
        assert torch.equal(ours, theirs)
    starts, lengths, rows = eager
    ids = torch.arange(starts.shape[0], dtype=torch.int64) * 7 + 1
    n_rows = offsets.shape[0] - 1
    for ours, theirs in zip(ops.pad_tokens(ids, rows, n_rows, max_len), SCRIPTED_PAD(ids, rows, n_rows, max_len)):
        assert ours.dtype == theirs.dtype and torch.equal(ours, theirs)


def test_no_bytes_and_no_rows():
    empty = torch.zeros(0, dtype=torch.uint8)
    for ours, theirs in zip(ops.split_tokens(empty, torch.tensor([0, 0, 0]), 124),
                            SCRIPTED_SPLIT(empty, torch.tensor([0, 0, 0]), 124)):  # fmt: skip
        assert torch.equal(ours, theirs)
    none = torch.zeros(0, dtype=torch.int64)
    for ours, theirs in zip(ops.pad_tokens(none, none, 3, 2), SCRIPTED_PAD(none, none, 3, 2)):
        assert torch.equal(ours, theirs)
    assert ops.fnv1a(empty, none, none, none).shape == (0,)
    assert _kernels.fnv1a(empty, none, none, none).dtype == torch.int64

"""Data-parallel training of the deep CTR models under ``torchrun`` (torch.distributed).

``torchrun --nproc_per_node N -m fusionrec.cli ctr train_eval --pipeline_config_path C`` starts N
processes; each finds its place in the environment torchrun sets (``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` ...) and joins one process group (gloo on CPU, nccl with GPUs). As in EasyRec,
``batch_size`` is each worker's: a step reads a global batch of N x batch_size rows and process
r trains on its rows r, r + N, r + 2N ... (every process reads and checks every row, and
embeds and trains only its own). ``DistributedDataParallel`` averages the gradients (the
embedding tables' sparse ones included), so the step is the one-process step on the global
batch. Only rank 0 writes checkpoints, evaluation results and input reports; evaluation scores
each process's share of the rows and gathers them, so its metrics cover every row.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Dict, Optional, Tuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

from fusionrec.errors import FusionrecError

# how long a collective waits for the other processes before failing (a dead peer, a hang)
COLLECTIVE_TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class World:
    """This process's place among the data-parallel training processes."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.size > 1


def world_from_env(env: Optional[Dict[str, str]] = None) -> World:
    """The World torchrun describes in the environment (``WORLD_SIZE``, ``RANK``), joining its
    process group; one process without them."""
    env = dict(os.environ) if env is None else env
    size_text, rank_text = env.get("WORLD_SIZE", "1"), env.get("RANK", "0")
    try:
        size, rank = int(size_text), int(rank_text)
    except ValueError:
        raise FusionrecError(f"WORLD_SIZE {size_text!r} / RANK {rank_text!r}: must be integers (torchrun sets them)") from None
    if size < 1 or not 0 <= rank < size:
        raise FusionrecError(f"RANK {rank} of WORLD_SIZE {size}: a rank is 0 .. WORLD_SIZE - 1")
    if size == 1:
        return World()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=size, timeout=COLLECTIVE_TIMEOUT)
    return World(rank, size)


def gather_objects(world: World, value: Any) -> list:
    """Every process's ``value``, in rank order (on every process)."""
    if not world.is_distributed:
        return [value]
    out: list = [None] * world.size
    dist.all_gather_object(out, value)
    return out


def merge_feature_counts(report, per_process: list[dict]) -> None:
    """Set ``report``'s per-feature counts (out of vocabulary, truncated, ...) to the sum over
    the processes' counts, each of which covers the rows that process transformed."""
    total: Dict[str, Counter] = {}
    for counts in per_process:
        for feature, kinds in counts.items():
            total.setdefault(feature, Counter()).update(kinds)
    report.features = total


class TrainingStep(nn.Module):
    """The model's training forward as one module, for DistributedDataParallel to wrap: (the
    logits, or the heads of a model with several; the model's auxiliary loss or None)."""

    def __init__(self, model: nn.Module, multi_head: bool):
        super().__init__()
        self.model = model
        self.multi_head = multi_head

    def forward(self, features: Dict[str, Tensor], weights: Optional[Tensor]) -> Tuple[Any, Optional[Tensor]]:
        if hasattr(self.model, "training_heads"):  # a backbone's auxiliary losses, a distillation loss
            return self.model.training_heads(features, weights)
        if self.multi_head:
            return self.model.forward_heads(features), None
        return self.model(features), None


def data_parallel(step: TrainingStep) -> nn.Module:
    """``step`` under DistributedDataParallel. Parameters a step may not reach (a branch only
    some batches take) are allowed, at the cost of a graph walk per step."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(step, find_unused_parameters=True)

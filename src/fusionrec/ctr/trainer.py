"""Stage 5: the trainer. Loss, optimizer, learning-rate schedule, checkpoints, evaluation.

Checkpoints are ``torch.save`` files of tensors and plain values only, loaded with
``weights_only=True`` (no code is unpickled), written atomically. A checkpoint holds the
model and optimizer state, the step, the epoch, the batches consumed in that epoch and the
torch RNG state, and every epoch's shuffle is seeded by (seed, epoch): so ``--continue_train``
after an interruption ends in the same state as an uninterrupted run.
"""

from __future__ import annotations

import io
import json
import math
import re
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from fusionrec._atomic import atomic_write_bytes, check_writable_dir, verify_sidecar
from fusionrec.callbacks import CallbackContainer, TrainingCallback
from fusionrec.ctr import losses
from fusionrec.ctr.callbacks import CheckpointSaver, EasyRecEarlyStop, EvaluateAtCheckpoints, StepLogger, StepResult
from fusionrec.ctr.config import (
    AdamOptimizer,
    BinaryFocalLoss,
    F1ReweightedLoss,
    Optimizer,
    PairwiseLogisticLoss,
    PairwiseLoss,  # fmt: skip
    PipelineConfig,
    dump_config,
)
from fusionrec.ctr._memory import keep_freed_memory
from fusionrec.ctr.data import TableReader, iter_batches, reader_for, resolve_paths
from fusionrec.ctr.distributed import (
    TrainingStep,
    World,
    data_parallel,
    gather_objects,
    merge_feature_counts,
    world_from_env,  # fmt: skip
)
from fusionrec.ctr.features import FeatureTransform, feature_counts
from fusionrec.ctr.metrics import evaluate_metrics
from fusionrec.ctr.models import build_model
from fusionrec.ctr.models.multitask.base import tower_weights
from fusionrec.ctr.models.multitask.esmm import esmm_loss
from fusionrec.ctr.modules.dropout import VariationalDropout
from fusionrec.ctr.modules.tf_defaults import (TF_BATCH_NORM_EPSILON, TORCH_BATCH_NORM_EPSILON, batch_norm_epsilons,
                                               set_batch_norm_epsilon_)  # fmt: skip
from fusionrec.ctr.optimizers import SPARSE_GRADIENTS, Optimizers, make_part
from fusionrec.ctr.regularization import EmbeddingRegularizer
from fusionrec.errors import FusionrecError

SEED = 2026
CHECKPOINT_FORMAT = "fusionrec.ctr.checkpoint"
# 2: batch norms use TensorFlow's epsilon and the checkpoint records it (version 1: torch's 1e-5)
CHECKPOINT_VERSION = 2
CHECKPOINT_RE = re.compile(r"^model\.ckpt-(\d+)\.pt$")


def learning_rate_at(step: int, schedule) -> float:
    """EasyRec's schedules: constant, exponential decay (floored at min_learning_rate), cosine with warmup."""
    if schedule.exponential_decay_learning_rate is not None:
        s = schedule.exponential_decay_learning_rate
        exponent = step / s.decay_steps
        if s.staircase:
            exponent = math.floor(exponent)
        return max(s.initial_learning_rate * s.decay_factor**exponent, s.min_learning_rate)
    if schedule.cosine_decay_learning_rate is not None:
        s = schedule.cosine_decay_learning_rate
        if step < s.warmup_steps:
            return s.warmup_learning_rate + (s.learning_rate_base - s.warmup_learning_rate) * step / s.warmup_steps
        if step < s.warmup_steps + s.hold_base_rate_steps:
            return s.learning_rate_base
        span = max(1, s.total_steps - s.warmup_steps - s.hold_base_rate_steps)
        progress = min(1.0, (step - s.warmup_steps - s.hold_base_rate_steps) / span)
        return 0.5 * s.learning_rate_base * (1 + math.cos(math.pi * progress))
    if schedule.constant_learning_rate is not None:
        return schedule.constant_learning_rate.learning_rate
    return 0.002


class Trainer:
    """Builds the feature transform and model of a pipeline config and trains / evaluates them."""

    def __init__(self, config: PipelineConfig, model_dir: str | Path | None = None, base_dir: str = ".",
                 seed: int = SEED, world: World | None = None, *, batch_norm_momentum: float | None = None):  # fmt: skip
        """``batch_norm_momentum``: fusionrec's option (torch's convention, the new batch's
        weight, in (0, 1]) replacing TensorFlow's 0.01 that EasyRec's layers use; faster-moving
        statistics can help a short run. Training only: evaluation and exports use the
        statistics as they are."""
        if batch_norm_momentum is not None and not 0.0 < batch_norm_momentum <= 1.0:
            raise FusionrecError(f"batch_norm_momentum {batch_norm_momentum!r}: must be in (0, 1] (torch's convention: "
                                 "the weight of the new batch's statistics; TensorFlow's momentum 0.99 is 0.01)")  # fmt: skip
        self.config = config
        # this process among torchrun's data-parallel processes (one process without torchrun)
        self.world = world if world is not None else world_from_env()
        self._data_parallel: torch.nn.Module | None = None
        model_dir = model_dir or config.model_dir
        if not model_dir:
            raise FusionrecError("model_dir: not set in the config and not given with --model_dir")
        self.model_dir = Path(model_dir)
        self.base_dir = base_dir
        train = config.train_config
        if train.intra_op_parallelism_threads:
            torch.set_num_threads(train.intra_op_parallelism_threads)
        self.seed = seed
        torch.manual_seed(seed)
        self.task = config.model_config_.task
        self.head_tasks = config.model_config_.head_tasks  # the task of each output head, by suffix
        self.towers = config.model_config_.towers  # a multi-task model's task towers (EasyRec's order)
        self.head_labels = config.head_labels()  # the label field of each output head, by suffix
        # the input fields whose values group a batch's rows into sessions (EasyRec's JRC_LOSS)
        self.session_fields = sorted({entry.jrc_loss.session_name for tower in self.towers or [config.model_config_]
                                      for entry in tower.losses if entry.jrc_loss is not None})  # fmt: skip
        self.transform = FeatureTransform(config, base_dir)
        self.model = build_model(config, self.transform, batch_norm_momentum=batch_norm_momentum)
        self._training_step = TrainingStep(self.model, bool(self.towers))
        self._set_sparse_tables()
        self._optimizer: Optimizers | None = None  # made when training needs it (``optimizer``)
        self.step = 0
        self.epoch = 0
        self.batches_in_epoch = 0
        self.best_metric: float | None = None
        self.best_step = 0
        self.last_step: StepResult | None = None  # what the last training step did (for the callbacks)
        self.checkpoint_step: int | None = None  # the step of the last checkpoint of this run
        self.evaluated_step: int | None = None  # the step of the last evaluation during training
        self.embedding_regularizer = EmbeddingRegularizer(self.model, config.model_config_.embedding_regularization)
        model_config = config.model_config_
        # the model block's l2_regularization (CMBF and Uniter have none)
        self.l2_regularization = model_config.l2_regularization
        self.dense_weights = self.model.dense_weights()
        self.variational_dropouts = [m for m in self.model.modules() if isinstance(m, VariationalDropout)]

    # -- set-up ---------------------------------------------------------------------
    @property
    def optimizer(self) -> Optimizers:
        """The configured optimizers, made on first use: evaluation and export never pay for
        torch's optimizer constructors (their first call imports torch._dynamo, ~3 s)."""
        if self._optimizer is None:
            self._optimizer = self._make_optimizer()
        return self._optimizer

    def _configured_optimizers(self) -> list:
        return self.config.train_config.optimizer_config or [Optimizer(adam_optimizer=AdamOptimizer())]

    def _set_sparse_tables(self) -> None:
        """Embedding tables get sparse gradients (only the rows a batch looks up) where the
        optimizer takes them (``optimizers.SPARSE_GRADIENTS``); gradient clipping needs dense
        gradients."""
        configured = self._configured_optimizers()
        clipping = self.config.train_config.gradient_clipping_by_norm > 0
        for entry, (_, tables) in zip(configured, self._variable_groups(len(configured))):
            for table in tables:
                table.sparse = entry.chosen[0] in SPARSE_GRADIENTS and not clipping

    def _make_optimizer(self) -> Optimizers:
        """The configured optimizers over EasyRec's variable groups (``fusionrec.ctr.optimizers``).
        Embedding tables form their own parameter group, whose learning rate is EasyRec's
        ``embedding_learning_rate_multiplier`` times the schedule's (``lr_multiplier``)."""
        configured = self._configured_optimizers()
        parts = []
        for entry, (dense, tables) in zip(configured, self._variable_groups(len(configured))):
            name, params = entry.chosen
            parts.extend(make_part(name, params, dense, tables, entry.embedding_learning_rate_multiplier))
        return Optimizers(parts)

    def _variable_groups(self, n_optimizers: int) -> list[tuple[list[torch.nn.Parameter], list[torch.nn.Embedding]]]:
        """(dense parameters, embedding tables) per optimizer, as EasyRec's get_grouped_vars: one
        group of everything; two: (embedding tables, the rest), WideAndDeep (WIDE tables, the
        rest); three (WideAndDeep): (WIDE tables, other tables, the rest)."""
        tables = self._embedding_tables()
        table_params = {id(t.weight) for t in tables}
        dense = [p for p in self.model.parameters() if id(p) not in table_params]
        if n_optimizers == 1:
            return [(dense, tables)]
        wide_groups = getattr(self.model, "wide_groups", None)
        if self.config.model_config_.model_class == "WideAndDeep" and wide_groups is not None:
            wide_ids = {id(m) for m in wide_groups.modules() if isinstance(m, torch.nn.Embedding)}
            wide = [t for t in tables if id(t) in wide_ids]
            other = [t for t in tables if id(t) not in wide_ids]
            if n_optimizers == 2:
                return [([], wide), (dense, other)]
            return [([], wide), ([], other), (dense, [])]
        return [([], tables), (dense, [])]

    def _embedding_tables(self) -> list[torch.nn.Embedding]:
        """Each embedding table once (shared tables appear in several slots)."""
        return list({id(m): m for m in self.model.modules() if isinstance(m, torch.nn.Embedding)}.values())

    def _reader(self, *, labels: bool = True, collect_rejects: bool = False) -> TableReader:
        return reader_for(self.config, labels=labels, collect_rejects=collect_rejects)

    # -- loss -----------------------------------------------------------------------
    def loss(self, logits, labels: torch.Tensor, weights: torch.Tensor | None, features,
             auxiliary: torch.Tensor | None = None, label_columns: dict[str, torch.Tensor] | None = None,
             sessions: dict[str, torch.Tensor] | None = None) -> torch.Tensor:  # fmt: skip
        """The training loss: the data loss (summed over the heads when ``logits`` is a dict of
        them; a multi-task model's towers each against their label in ``label_columns``), a
        model's ``auxiliary`` loss (distillation), and the regularizers. ``sessions``: the
        batch's codes of each ``session_fields`` field."""
        sessions = sessions or {}
        if self.towers:
            loss = self.multi_task_loss(logits, label_columns or {}, weights, sessions)
        elif isinstance(logits, dict):
            loss = sum(self.data_loss(head, labels, weights, sessions) for head in logits.values())
        else:
            loss = self.data_loss(logits, labels, weights, sessions)
        if auxiliary is not None:
            loss = loss + auxiliary
        if self.l2_regularization > 0:  # TensorFlow's l2_regularizer: scale * sum(w^2) / 2
            loss = loss + self.l2_regularization * 0.5 * sum(w.pow(2).sum() for w in self.dense_weights)
        for dropout in self.variational_dropouts:  # EasyRec's variational_dropout_loss
            loss = loss + dropout.penalty(labels.shape[0])
        scale = self.config.model_config_.embedding_regularization
        if scale > 0:  # EasyRec's: on the embedding outputs (fusionrec.ctr.regularization)
            loss = loss + self.embedding_regularizer.penalty(features, loss, scale)
        return loss

    def multi_task_loss(self, heads: dict[str, torch.Tensor], labels: dict[str, torch.Tensor],
                        weights: torch.Tensor | None, sessions: dict[str, torch.Tensor] | None = None) -> torch.Tensor:  # fmt: skip
        """EasyRec's MultiTaskModel loss: the sum over task towers of each tower's loss on its
        label, with the tower's weights (``fusionrec.ctr.models.multitask.base.tower_weights``); ESMM's own."""
        if self.config.model_config_.model_class == "ESMM":
            return esmm_loss(heads, labels, self.config, weights, self.head_labels)
        head_labels = self.head_labels
        total = None
        for tower in self.towers:
            suffix = "_" + tower.tower_name
            label = labels[head_labels[suffix]]
            tower_weight = tower_weights(tower, labels, weights, label.shape[0])
            value = self.task_loss(heads[suffix], label, tower_weight, tower.task, tower.losses, sessions)
            for entry in tower.losses:  # EasyRec's ORDER_CALIBRATE_LOSS: p(tower) should not exceed p(relation tower)
                if entry.loss_type == "ORDER_CALIBRATE_LOSS":
                    for name in getattr(tower, "relation_tower_names", []):
                        gap = torch.sigmoid(heads[suffix]) - torch.sigmoid(heads["_" + name])
                        value = value + entry.weight * torch.relu(gap).mean()
            total = value if total is None else total + value
        return total

    def data_loss(self, logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None,
                  sessions: dict[str, torch.Tensor] | None = None) -> torch.Tensor:  # fmt: skip
        """The loss of a one-task model (``model_config.loss_type`` and ``losses``)."""
        return self.task_loss(logits, labels, weights, self.task, self.config.model_config_.losses, sessions)

    def task_loss(self, logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None, task,
                  configured: list, sessions: dict[str, torch.Tensor] | None = None) -> torch.Tensor:  # fmt: skip
        """EasyRec's: the loss of the task's ``loss_type`` (binary: sigmoid cross-entropy), or
        the weighted sum of the ``configured`` losses."""
        if task.kind != "binary" and not task.shaping_loss:
            return task.loss(logits, labels, weights)
        if not configured:
            return losses.classification(logits, labels, weights)
        total = logits.new_zeros(())
        for entry in configured:
            if entry.loss_type == "ORDER_CALIBRATE_LOSS":  # across towers: multi_task_loss adds it
                continue
            if entry.loss_type == "CLASSIFICATION":
                value = losses.classification(logits, labels, weights)
            elif entry.loss_type == "F1_REWEIGHTED_LOSS":
                params = entry.f1_reweighted_loss or F1ReweightedLoss()
                value = losses.f1_reweighted(logits, labels, weights, params.f1_beta_square, params.label_smoothing)
            elif entry.loss_type == "PAIR_WISE_LOSS":
                params = entry.pairwise_loss or PairwiseLoss()
                value = losses.pairwise(logits, labels, weights, params.margin, params.temperature)
            elif entry.loss_type == "BINARY_FOCAL_LOSS":
                params = entry.binary_focal_loss or BinaryFocalLoss()
                value = losses.binary_focal(logits, labels, weights, params.gamma, params.alpha, params.ohem_ratio,
                                            params.label_smoothing)  # fmt: skip
            elif entry.loss_type == "JRC_LOSS":
                params = entry.jrc_loss
                if sessions is None or params.session_name not in sessions:
                    raise FusionrecError(f"JRC_LOSS: the batch has no session codes of {params.session_name!r}")
                value = losses.jrc(logits, labels, sessions[params.session_name], weights, params.alpha,
                                   params.same_label_loss, params.loss_weight_strategy)  # fmt: skip
            elif entry.loss_type == "ZILN_LOSS":
                params = entry.ziln_loss
                value = losses.ziln(logits, labels, weights, params.mu_regularization, params.sigma_regularization,
                                    params.max_sigma, params.classification_weight, params.regression_weight)  # fmt: skip
            else:  # PAIRWISE_LOGISTIC_LOSS
                params = entry.pairwise_logistic_loss or PairwiseLogisticLoss()
                value = losses.pairwise_logistic(logits, labels, weights, params.temperature)
            total = total + entry.weight * value
        return total

    # -- checkpoints ----------------------------------------------------------------
    def checkpoints(self) -> list[tuple[int, Path]]:
        if not self.model_dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.model_dir.iterdir() if (m := CHECKPOINT_RE.match(p.name))]
        return sorted(found)

    def _checkpoint_bytes(self, *, with_optimizer: bool = True) -> bytes:
        """A checkpoint: tensors and plain values only (loaded with weights_only=True), with the
        resolved feature layout so that a resume with other features is refused by name."""
        state = {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict() if with_optimizer else {},
            "step": self.step, "epoch": self.epoch, "batches_in_epoch": self.batches_in_epoch if with_optimizer else 0,
            "torch_rng": torch.get_rng_state(),
            "best_metric": self.best_metric if self.best_metric is not None else float("nan"), "best_step": self.best_step,
            "feature_layout": json.dumps(self.transform.layout(), sort_keys=True),
            "batch_norm_epsilon": max(batch_norm_epsilons(self.model), default=TF_BATCH_NORM_EPSILON),
        }  # fmt: skip
        buffer = io.BytesIO()
        torch.save(state, buffer)
        return buffer.getvalue()

    def save_checkpoint(self) -> Path:
        path = self.model_dir / f"model.ckpt-{self.step}.pt"
        if not self.world.is_main:  # rank 0 writes for every data-parallel process
            return path
        self._make_model_dir()
        atomic_write_bytes(path, self._checkpoint_bytes())
        keep = self.config.train_config.keep_checkpoint_max
        for _, old in self.checkpoints()[:-keep]:
            old.unlink(missing_ok=True)
            old.with_name(old.name + ".sha256").unlink(missing_ok=True)
        atomic_write_bytes(self.model_dir / "pipeline.json", json.dumps(dump_config(self.config), indent=1).encode())
        return path

    def _make_model_dir(self) -> None:
        try:
            self.model_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise FusionrecError(f"model_dir {str(self.model_dir)!r}: cannot be created ({error.strerror})") from None

    def load_checkpoint(self, path: Path, *, weights_only_model: bool = False) -> None:
        where = f"checkpoint {str(path)!r}"
        try:
            raw = Path(path).read_bytes()
        except OSError as error:
            raise FusionrecError(f"{where}: cannot be read ({error.strerror})") from None
        verify_sidecar(Path(path), raw, "checkpoint")
        try:
            state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        except Exception as error:  # a damaged file, or one holding pickled code: name it
            raise FusionrecError(f"{where}: cannot be loaded ({type(error).__name__}: {error})") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise FusionrecError(f"{where}: not a fusionrec CTR checkpoint")
        if state.get("version", 0) > CHECKPOINT_VERSION:
            raise FusionrecError(f"{where}: format version {state['version']} is newer than this fusionrec ({CHECKPOINT_VERSION})")
        if "feature_layout" in state:
            changes = _layout_changes(json.loads(state["feature_layout"]), self.transform.layout())
            if changes:
                raise FusionrecError(f"{where}: was written with other features than this config: " + "; ".join(changes))
        changes = _shape_changes(state["model"], self.model.state_dict())
        if changes:
            raise FusionrecError(f"{where}: does not fit this model config: " + "; ".join(changes))
        self.model.load_state_dict(state["model"])
        # a model is scored with the batch-norm epsilon it was trained with (version 1: torch's)
        set_batch_norm_epsilon_(self.model, state.get("batch_norm_epsilon", TORCH_BATCH_NORM_EPSILON))
        if weights_only_model:
            return
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.epoch, self.batches_in_epoch = state["step"], state["epoch"], state["batches_in_epoch"]
        torch.set_rng_state(state["torch_rng"])
        best = state.get("best_metric", float("nan"))
        self.best_metric = None if best != best else best
        self.best_step = state.get("best_step", self.step)

    # -- training -------------------------------------------------------------------
    def _start_or_resume(self, continue_train: bool, num_steps: int | None, num_epochs: int | None) -> bool:
        """Load what the run starts from; False when the resumed run has already finished."""
        existing = self.checkpoints()
        if existing and not continue_train:  # never mix two runs, fine-tuned or not
            raise FusionrecError(
                f"model_dir {str(self.model_dir)!r} already holds checkpoints (latest {existing[-1][1].name}); "
                "pass --continue_train to resume that run or choose another model_dir"
            )
        if existing:
            self.load_checkpoint(existing[-1][1])
            # a finished run resumes to nothing: no step past num_steps, no new checkpoint
            return not ((num_steps is not None and self.step >= num_steps) or (num_epochs is not None and self.epoch >= num_epochs))
        if self.config.train_config.fine_tune_checkpoint:
            self.load_checkpoint(Path(self.config.train_config.fine_tune_checkpoint), weights_only_model=True)
        return True

    def train(self, *, continue_train: bool = False, callbacks: list[TrainingCallback] | None = None,
              evaluate_at_checkpoints: bool = True, progress: bool = True, save_checkpoints: bool = True) -> dict:  # fmt: skip
        """Train to num_steps / num_epochs from the start or (``continue_train``) the last
        checkpoint. ``save_checkpoints`` False writes none (a fit that is never resumed and is
        exported from memory, ``export(current=True)``: a pipeline's fold). Between steps the
        callbacks of ``fusionrec.ctr.callbacks`` log, save checkpoints, evaluate and stop early;
        ``callbacks`` (``fusionrec.callbacks.TrainingCallback``) run after them."""
        config, train = self.config, self.config.train_config
        if not config.train_input_path:
            raise FusionrecError("train_input_path: not set")
        paths = resolve_paths(config.train_input_path, "train_input_path")
        num_steps = train.num_steps or None
        num_epochs = config.data_config.num_epochs or None
        if num_steps is None and num_epochs is None:
            raise FusionrecError("train_config.num_steps and data_config.num_epochs are both 0: training would never end")
        if save_checkpoints and self.world.is_main:
            check_writable_dir(self.model_dir, "model_dir")  # before training, not at the first checkpoint
        if not self._start_or_resume(continue_train, num_steps, num_epochs):
            return self._finished_report(progress)
        progress = progress and self.world.is_main
        if progress and train.train_distribute != "NoStrategy" and not self.world.is_distributed:
            print(f"train_distribute {train.train_distribute}: training in this one process (start it with torchrun "
                  "for data-parallel workers)")  # fmt: skip
        if self.world.is_distributed and self._data_parallel is None:
            self._data_parallel = data_parallel(self._training_step)
        reader = self._reader()
        keep_freed_memory()
        start_time = time.perf_counter()
        self.model.train()
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("step {task.completed}"),
                      TimeElapsedColumn(), disable=not progress, transient=True) as bar:  # fmt: skip
            task = bar.add_task("training", total=num_steps)
            bar.update(task, completed=self.step)
            logger = StepLogger(train.log_step_count_steps, bar.console.print if progress else None)
            early_stop = EasyRecEarlyStop(config.export_config.max_check_steps)
            loop = [logger]
            if save_checkpoints:
                loop.append(CheckpointSaver(train.save_checkpoints_steps, train.save_checkpoints_secs))
                if evaluate_at_checkpoints and config.eval_input_path:
                    loop.append(EvaluateAtCheckpoints())
                    if config.export_config.enable_early_stop:
                        loop.append(early_stop)
            container = CallbackContainer(loop + list(callbacks or []))
            container.before_training(self)
            with closing(self._training_batches(reader, paths, num_epochs)) as batches, self.embedding_regularizer.attached():
                for batch, features in batches:
                    self.last_step = self._train_step(batch, features)
                    bar.update(task, completed=self.step)
                    if container.after_iteration(self, self.step, {}) or (num_steps is not None and self.step >= num_steps):
                        break
        container.after_training(self)
        if self.step == 0:
            raise FusionrecError(f"train_input_path {config.train_input_path!r}: no training rows were read")
        if save_checkpoints and (not self.checkpoints() or self.checkpoints()[-1][0] != self.step):
            self.save_checkpoint()
        elapsed = time.perf_counter() - start_time
        report = {"steps": self.step, "epochs_completed": self.epoch, "examples": logger.n_examples,
                  "examples_per_sec": logger.n_examples / max(elapsed, 1e-9), "history": logger.history,
                  "input": reader.report.as_dict(), "world_size": self.world.size}  # fmt: skip
        if early_stop.stopped:
            report["early_stopped"] = {"best_step": self.best_step, "best_metric": self.best_metric}
            if progress:
                print(f"early stop at step {self.step}: {config.export_config.best_exporter_metric} last improved at step "
                      f"{self.best_step} ({self.best_metric:.6g}), max_check_steps {config.export_config.max_check_steps}")
        if self.world.is_distributed:  # each process transformed its own rows: the feature counts add up
            merge_feature_counts(reader.report, gather_objects(self.world, reader.report.features))
            report["input"] = reader.report.as_dict()
        self._write_read_report("train", reader, progress=progress)
        if config.eval_input_path:
            report["eval"] = self.evaluate_and_track()
        return report

    def _finished_report(self, progress: bool) -> dict:
        """The report of a resumed run that had already finished: nothing trained."""
        if progress:
            print(f"model_dir {str(self.model_dir)!r}: the run finished at step {self.step}; nothing to train")
        report = {"steps": self.step, "epochs_completed": self.epoch, "examples": 0, "examples_per_sec": 0.0,
                  "history": [], "already_finished": True}  # fmt: skip
        if self.config.eval_input_path:
            report["eval"] = self.evaluate_and_track()
        return report

    def _training_batches(self, reader: TableReader, paths: list[str], num_epochs: int | None):
        """(batch, features) of every epoch from where the run stands (``epoch``, ``batches_in_epoch``);
        an epoch read to its end advances ``epoch`` (one the caller stops in does not)."""
        data, world = self.config.data_config, self.world
        while num_epochs is None or self.epoch < num_epochs:
            batches = iter_batches(reader, paths, data.batch_size, shuffle=data.shuffle,
                                   shuffle_rows=data.shuffle_buffer_size, seed=self.seed + self.epoch,
                                   skip_batches=self.batches_in_epoch, shard=(world.rank, world.size),
                                   even_shards=True)  # fmt: skip
            # read and transformed here, between steps, not on a prefetch thread: the step's
            # kernels already use every core, and a thread beside them (holding the GIL for the
            # transform's Python) made DCN's steps 1.5x slower on 2 cores (docs/benchmarks.md)
            featured = self._with_features(batches, reader, self.epoch, self.batches_in_epoch)
            try:
                yield from featured
            finally:
                featured.close()
            self.epoch += 1
            self.batches_in_epoch = 0

    def _train_step(self, batch, features) -> StepResult:
        """One optimizer step on one batch; a non-finite loss stops training before it is applied."""
        lr = self.optimizer.set_learning_rates(self.step, learning_rate_at)
        try:
            logits, auxiliary = self._training_forward(features, batch.weights)
        except ValueError as error:  # data the model refuses (lists that should be parallel, ...)
            raise FusionrecError(
                f"train_input_path {self.config.train_input_path!r}, epoch {self.epoch}, batch "
                f"{self.batches_in_epoch + 1}: {error}"
            ) from None
        sessions = {name: batch.codes(name) for name in self.session_fields}
        loss = self.loss(logits, batch.labels, batch.weights, features, auxiliary, batch.label_columns, sessions)
        if not bool(torch.isfinite(loss)):
            last = self.checkpoints()
            raise FusionrecError(
                f"step {self.step + 1} (epoch {self.epoch}, batch {self.batches_in_epoch + 1}): the loss is "
                f"{float(loss.detach())}; training stopped before applying it"
                + (f"; the last checkpoint {last[-1][1].name} is intact" if last else "")
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.config.train_config.gradient_clipping_by_norm
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.optimizer.step()
        self.step += 1
        self.batches_in_epoch += 1
        # every process trains as many rows
        return StepResult(float(loss.detach()), lr, len(batch.labels) * self.world.size)

    def _training_forward(self, features, weights):
        """(logits, auxiliary loss or None): a model with several heads (``training_heads``)
        gives each head's logits and its distillation loss; a multi-task model each tower's."""
        return (self._data_parallel or self._training_step)(features, weights)

    def _with_features(self, batches, reader: TableReader, epoch: int, first_batch: int):
        """(batch, features) pairs, transformed on the training thread (see _training_batches)."""
        number = first_batch
        for batch in batches:
            number += 1
            try:
                with torch.no_grad():  # not around the yield: the grad mode is the consumer's there
                    features = self.transform(batch.columns)
            except ValueError as error:  # data the features refuse
                raise FusionrecError(
                    f"train_input_path {self.config.train_input_path!r}, epoch {epoch}, batch {number}: {error}"
                ) from None
            reader.report.add_feature_counts(feature_counts(features))
            yield batch, features

    def _write_read_report(self, stage: str, reader: TableReader, *, progress: bool = True) -> None:
        if not self.world.is_main:
            return
        info = reader.report.as_dict()
        if progress:
            print(f"{stage} input: {reader.report.summary()}")
        self._make_model_dir()
        atomic_write_bytes(self.model_dir / f"{stage}_input_report.json", json.dumps(info, indent=1).encode(), checksum=False)

    def evaluate_and_track(self) -> dict:
        """Evaluate; track the best ``best_exporter_metric`` (for exporter_type "best", whose
        checkpoint goes to best.pt, and for early stopping)."""
        result = self.evaluate()
        export = self.config.export_config
        if export.exporter_type == "best" or export.enable_early_stop:
            metric = result.get(export.best_exporter_metric)
            if metric is None:
                raise FusionrecError(
                    f"export_config.best_exporter_metric {export.best_exporter_metric!r} is not computed; "
                    f"eval gives {sorted(result)}"
                )
            better = self.best_metric is None or (metric > self.best_metric if export.metric_bigger else metric < self.best_metric)
            if better:
                self.best_metric, self.best_step = metric, self.step
                if export.exporter_type == "best" and self.world.is_main:
                    atomic_write_bytes(self.model_dir / "best.pt", self._checkpoint_bytes(with_optimizer=False))
        return result

    # -- evaluation and prediction --------------------------------------------------
    @torch.no_grad()
    def predict_table(self, paths: list[str], reader: TableReader, max_rows: int = 0, *, heads: bool = False,
                      shard: tuple[int, int] = (0, 1)):  # fmt: skip
        """(labels or None, scores, the typed tables) over the rows of ``paths`` (the first
        ``max_rows`` when it is positive; this process's rows of ``shard``, see iter_batches);
        scores are ``Task.score``: probabilities or y, of the served output, or with ``heads`` a
        dict of every head's ``Task.eval_scores`` by suffix."""
        self.model.eval()
        scores: dict[str, list] = {}
        labels, tables, n_rows = [], [], 0
        for batch in iter_batches(reader, paths, max(self.config.data_config.batch_size, 1024), shuffle=False,
                                  shuffle_rows=0, seed=0, shard=shard):  # fmt: skip
            features = self.transform(batch.columns)
            reader.report.add_feature_counts(feature_counts(features))
            by_head = self.model.forward_heads(features) if heads else {"": self.model(features)}
            for suffix, logits in by_head.items():
                task = self.head_tasks.get(suffix, self.task)
                scores.setdefault(suffix, []).append((task.eval_scores(logits) if heads else task.score(logits)).numpy())
            if batch.labels is not None:
                labels.append(batch.labels.numpy())
            tables.append(batch.table)
            n_rows += batch.table.num_rows
            if max_rows and n_rows >= max_rows:
                break
        joined = {suffix: np.concatenate(parts) for suffix, parts in scores.items()}
        if not tables:
            joined = {suffix: np.zeros(0) for suffix in self.config.model_config_.head_suffixes}
        return (np.concatenate(labels) if labels else None), (joined if heads else joined.get("", np.zeros(0))), tables

    def evaluate(self, checkpoint: Path | None = None) -> dict:
        config = self.config
        if not config.eval_input_path:
            raise FusionrecError("eval_input_path: not set")
        if checkpoint is not None:
            self.load_checkpoint(checkpoint, weights_only_model=True)
        reader = self._reader()
        limit = config.eval_config.num_examples
        world = self.world
        # each data-parallel process scores its share of the rows; the metrics cover all of them
        labels, by_head, tables = self.predict_table(resolve_paths(config.eval_input_path, "eval_input_path"), reader,
                                                     -(-limit // world.size) if limit else 0, heads=True,
                                                     shard=(world.rank, world.size))  # fmt: skip
        groups = config.metric_groups()
        metrics = [m for group in groups for m in group.metrics]
        needed = {m.gauc.uid_field for m in metrics if m.gauc} | {m.session_auc.session_id_field for m in metrics if m.session_auc}
        needed |= set(config.data_config.label_fields)
        columns = {name: _concat([t.column(name).to_numpy(zero_copy_only=False) for t in tables]) for name in needed}
        if world.is_distributed:
            merge_feature_counts(reader.report, gather_objects(world, reader.report.features))
            parts = gather_objects(world, (labels, by_head, columns))
            labels = _concat([p[0] for p in parts if p[0] is not None]) if any(p[0] is not None for p in parts) else None
            by_head = {suffix: _concat([p[1][suffix] for p in parts]) for suffix in by_head}
            columns = {name: _concat([p[2][name] for p in parts]) for name in columns}
        if limit and labels is not None and len(labels) > limit:
            labels = labels[:limit]
            by_head = {suffix: scores[:limit] for suffix, scores in by_head.items()}
            columns = {name: values[:limit] for name, values in columns.items()}
        if labels is None or len(labels) == 0:
            raise FusionrecError(f"eval_input_path {config.eval_input_path!r}: no evaluation rows were read")
        result = {}
        for group in groups:  # EasyRec names each head's (each task tower's) metrics with its suffix
            group_labels, scores = columns[group.label].astype(np.float64), by_head[group.head]
            if group.times_head is not None:  # ESMM's CTCVR
                group_labels = group_labels * columns[group.times_label]
                scores = scores * by_head[group.times_head]
            group_columns = columns
            if group.only_positive is not None:  # ESMM's CVR on the clicked impressions
                clicked = columns[group.only_positive] > 0
                group_labels, scores = group_labels[clicked], scores[clicked]
                group_columns = {name: values[clicked] for name, values in columns.items()}
            if len(group_labels) == 0:
                continue
            values = evaluate_metrics(list(group.metrics), group_labels, scores, group_columns, group.task)
            result.update({name + group.suffix: value for name, value in values.items()})
        result["step"] = self.step
        result["n_rows"] = int(len(labels))
        self._write_read_report("eval", reader)
        if world.is_main:
            # the input counts beside the metrics (ids mapped to 0, defaults, skipped rows), as in eval_input_report.json
            written = {**result, "input": reader.report.as_dict()}
            atomic_write_bytes(self.model_dir / "eval_result.json", json.dumps(written, indent=1).encode(), checksum=False)
        return result


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    """The arrays joined; a process with no rows gives an empty one, left out."""
    present = [a for a in arrays if len(a)]
    return np.concatenate(present) if present else (arrays[0] if arrays else np.zeros(0))


def _layout_changes(saved: dict, current: dict) -> list[str]:
    """What differs between two feature layouts (``FeatureTransform.layout``), by feature name."""
    changes = [f"feature {name!r} is not in this config" for name in saved if name not in current]
    changes += [f"feature {name!r} is new in this config" for name in current if name not in saved]
    for name in saved:
        if name in current:
            for key in sorted(set(saved[name]) | set(current[name])):
                if saved[name].get(key) != current[name].get(key):
                    changes.append(f"feature {name!r}: {key} {saved[name].get(key)!r} -> {current[name].get(key)!r}")
    return changes


def _shape_changes(saved: dict, current: dict) -> list[str]:
    """Parameters missing, unexpected or of another shape, by name (torch's strict load, in words)."""
    changes = [f"parameter {key} is not in this model" for key in saved if key not in current]
    changes += [f"parameter {key} is missing from the checkpoint" for key in current if key not in saved]
    changes += [
        f"parameter {key}: shape {tuple(saved[key].shape)} in the checkpoint, {tuple(current[key].shape)} here"
        for key in saved if key in current and tuple(saved[key].shape) != tuple(current[key].shape)
    ]  # fmt: skip
    return changes

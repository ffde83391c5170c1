"""The deep CTR trainer's training-loop callbacks (``fusionrec.callbacks.TrainingCallback``).

``Trainer.train`` is a loop over training steps; what happens between steps is one callback
each, called in this order after every step: :class:`StepLogger` (the loss, learning rate and
examples/s every ``log_step_count_steps``), :class:`CheckpointSaver` (every
``save_checkpoints_steps`` or ``save_checkpoints_secs``), :class:`EvaluateAtCheckpoints` (the
eval input after each checkpoint, tracking the best ``best_exporter_metric``) and
:class:`EasyRecEarlyStop` (``export_config.enable_early_stop``). A user's callbacks follow.
They read the trainer's ``step``, ``last_step`` (the step's loss, learning rate and examples)
and ``checkpoint_step`` / ``evaluated_step`` (the step of the last checkpoint / evaluation).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from fusionrec.callbacks import TrainingCallback

if TYPE_CHECKING:
    from fusionrec.ctr.trainer import Trainer


@dataclass(frozen=True)
class StepResult:
    """What one training step did: its loss, learning rate and the rows it trained on (every process's)."""

    loss: float
    learning_rate: float
    n_examples: int


class StepLogger(TrainingCallback):
    """Every ``every`` steps: a ``history`` entry (step, loss, learning rate, examples/s since the
    last entry), printed through ``print_line`` when given."""

    def __init__(self, every: int, print_line: Callable[[str], None] | None = None):
        self.every = every
        self.print_line = print_line
        self.history: list[dict] = []
        self.n_examples = 0

    def before_training(self, model: Any) -> Any:
        self._last = (time.perf_counter(), 0)
        return model

    def after_iteration(self, trainer: "Trainer", epoch: int, evals_log) -> bool:
        step = trainer.last_step
        self.n_examples += step.n_examples
        if trainer.step % self.every == 0:
            now = time.perf_counter()
            rate = (self.n_examples - self._last[1]) / max(now - self._last[0], 1e-9)
            self._last = (now, self.n_examples)
            self.history.append({"step": trainer.step, "loss": step.loss, "learning_rate": step.learning_rate,
                                 "examples_per_sec": rate})  # fmt: skip
            if self.print_line is not None:
                self.print_line(f"step {trainer.step}: loss {step.loss:.5f} lr {step.learning_rate:.6g} {rate:,.0f} examples/s")
        return False


class CheckpointSaver(TrainingCallback):
    """EasyRec's checkpoint cadence: every ``save_checkpoints_steps`` steps, or every
    ``save_checkpoints_secs`` seconds when set; sets the trainer's ``checkpoint_step``."""

    def __init__(self, every_steps: int, every_secs: int | None):
        self.every_steps = every_steps
        self.every_secs = every_secs

    def before_training(self, model: Any) -> Any:
        self._last_save = time.monotonic()
        return model

    def after_iteration(self, trainer: "Trainer", epoch: int, evals_log) -> bool:
        due_by_time = self.every_secs and time.monotonic() - self._last_save >= self.every_secs
        if trainer.step % self.every_steps == 0 or due_by_time:
            trainer.save_checkpoint()
            trainer.checkpoint_step = trainer.step
            self._last_save = time.monotonic()
        return False


class EvaluateAtCheckpoints(TrainingCallback):
    """EasyRec's train_and_evaluate: the eval input after each checkpoint (tracking the best
    ``best_exporter_metric``); sets the trainer's ``evaluated_step``."""

    def after_iteration(self, trainer: "Trainer", epoch: int, evals_log) -> bool:
        if trainer.checkpoint_step == trainer.step:
            trainer.evaluate_and_track()
            trainer.model.train()
            trainer.evaluated_step = trainer.step
        return False


class EasyRecEarlyStop(TrainingCallback):
    """EasyRec's early stop (TensorFlow's stop_if_no_increase_hook / stop_if_no_decrease_hook),
    checked after each evaluation: the best_exporter_metric has not improved for
    max_check_steps steps. ``stopped`` says whether it stopped the run."""

    def __init__(self, max_check_steps: int):
        self.max_check_steps = max_check_steps
        self.stopped = False

    def after_iteration(self, trainer: "Trainer", epoch: int, evals_log) -> bool:
        if trainer.evaluated_step != trainer.step or trainer.best_metric is None:
            return False
        self.stopped = trainer.step - trainer.best_step >= self.max_check_steps
        return self.stopped

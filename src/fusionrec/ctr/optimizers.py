"""EasyRec's optimizers (``train_config.optimizer_config``) in torch, with TensorFlow's semantics.

One ``optimizer_config`` trains every variable. Several train disjoint variable groups, as
EasyRec's ``get_grouped_vars`` splits them: two are (embedding tables, everything else), and for
WideAndDeep (WIDE embedding tables, everything else); three, WideAndDeep only, are (WIDE tables,
other tables, everything else). Each optimizer keeps its own learning-rate schedule.

Where torch's optimizer differs from TensorFlow's, TensorFlow's update is written here:
``RMSProp`` (epsilon inside the square root, mean square starting at 1), ``Ftrl``
(FTRL-Proximal, McMahan et al., KDD 2013, with TensorFlow's learning_rate_power and
l2_shrinkage), and the decoupled weight decay of ``adamw_optimizer`` / ``momentumw_optimizer``
(Loshchilov & Hutter, ICLR 2019, as TensorFlow's DecoupledWeightDecayExtension applies it:
``w -= weight_decay * w`` before the step, not scaled by the learning rate; for an embedding
table only the rows of the batch decay).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fusionrec.errors import FusionrecError

# optimizers whose TensorFlow update of an embedding table touches only the batch's rows, so that
# torch's sparse gradients give the same update: LazyAdam (Adam's moments and step for the rows
# looked up only) and Adagrad (a zero gradient leaves its accumulator and weight as they are).
# tf.train.AdamOptimizer (``adam_optimizer``, ``adamw_optimizer``) decays both moments of every
# row at every step and moves every row whose first moment is non-zero: dense.
SPARSE_CAPABLE = frozenset({"lazy_adam_optimizer", "adagrad_optimizer"})
# optimizers that take the tables' sparse gradients: the lazy ones, and TensorFlow's dense Adam,
# whose update of every row TFAdam applies from the looked-up rows (``_adam_kernel``)
SPARSE_GRADIENTS = SPARSE_CAPABLE | {"adam_optimizer", "adamw_optimizer"}
ADAM_OPTIMIZERS = frozenset({"adam_optimizer", "lazy_adam_optimizer", "adamw_optimizer"})
TF_ADAM_EPSILON = 1e-8  # tf.train.AdamOptimizer's epsilon (EasyRec sets none)


@dataclass
class OptimizerPart:
    """One configured optimizer: its torch optimizer, its schedule, its weight decay."""

    name: str
    optimizer: torch.optim.Optimizer
    schedule: object  # the LearningRate config block
    weight_decay: float = 0.0
    tables: frozenset = frozenset()  # ids of the embedding tables' weights (decayed by rows)


class Optimizers:
    """Several optimizers acting as one (the configured ones, each with dense and sparse parts)."""

    def __init__(self, parts: list[OptimizerPart]):
        self.parts = parts

    @property
    def param_groups(self):
        return [g for part in self.parts for g in part.optimizer.param_groups]

    def set_learning_rates(self, step: int, learning_rate_at) -> float:
        """Each group's rate at ``step``: its optimizer's schedule times its ``lr_multiplier``;
        returns the first optimizer's rate (what the log shows)."""
        rates = []
        for part in self.parts:
            lr = learning_rate_at(step, part.schedule)
            rates.append(lr)
            for group in part.optimizer.param_groups:
                group["lr"] = lr * group.get("lr_multiplier", 1.0)
                if part.name in ADAM_OPTIMIZERS:
                    group["eps"] = tf_adam_epsilon(group["betas"][1], step + 1)
        return rates[0]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.optimizer.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        for part in self.parts:
            if part.weight_decay:
                for group in part.optimizer.param_groups:
                    decay_weights(group["params"], part.weight_decay, part.tables)
            part.optimizer.step()

    def state_dict(self) -> dict:
        return {str(i): part.optimizer.state_dict() for i, part in enumerate(self.parts)}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != {str(i) for i in range(len(self.parts))}:
            raise FusionrecError("checkpoint: optimizer state does not fit the configured optimizer")
        for i, part in enumerate(self.parts):
            try:
                part.optimizer.load_state_dict(state[str(i)])
            except (ValueError, KeyError) as error:  # another parameter grouping (an older fusionrec)
                raise FusionrecError(f"checkpoint: optimizer state does not fit the configured optimizer ({error})") from None


class TFAdam(torch.optim.Adam):
    """tf.train.AdamOptimizer: torch's fused Adam for dense gradients (one pass over weights,
    gradient and both moments, where the for-loop Adam makes about ten on the CPU), and
    TensorFlow's dense update of an embedding table from its sparse gradient
    (``fusionrec.ctr._adam_kernel``). The state is torch Adam's (``step``, ``exp_avg``,
    ``exp_avg_sq``), so checkpoints of either load."""

    def __init__(self, params, betas: tuple[float, float]):
        super().__init__(params, betas=betas, eps=TF_ADAM_EPSILON, fused=True)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and p.grad.is_sparse:
                    self._step_table(p, group)
                    p.grad = None  # applied: the fused step below takes dense gradients only
        return super().step(closure)

    def _step_table(self, weight: torch.Tensor, group: dict) -> None:
        from fusionrec.ctr._adam_kernel import adam_rows_update  # numba: compiled on the first sparse step

        state = self.state[weight]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=weight.device)
            state["exp_avg"] = torch.zeros_like(weight, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(weight, memory_format=torch.preserve_format)
        state["step"] += 1
        t = float(state["step"])
        beta1, beta2 = group["betas"]
        lr_t = group["lr"] * (1.0 - beta2**t) ** 0.5 / (1.0 - beta1**t)
        grad = weight.grad.coalesce()  # duplicates summed (TensorFlow's _deduplicate_indexed_slices)
        rows = grad.indices()[0].contiguous().numpy()
        values = grad.values().to(torch.float32).contiguous().numpy()
        adam_rows_update(weight.detach().numpy(), state["exp_avg"].numpy(), state["exp_avg_sq"].numpy(), rows,
                         values, lr_t, beta1, beta2, TF_ADAM_EPSILON, n_threads=torch.get_num_threads(),
                         numba_threads=not torch.distributed.is_initialized())  # fmt: skip


def tf_adam_epsilon(beta2: float, t: int, epsilon: float = TF_ADAM_EPSILON) -> float:
    """torch's Adam epsilon that gives tf.train.AdamOptimizer's update at step ``t``.

    TensorFlow (Kingma & Ba, ICLR 2015, the "epsilon hat" form before section 2.1):
    w -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps). torch: w -= lr / (1 - b1^t) *
    m / (sqrt(v) / sqrt(1 - b2^t) + eps'), the same update when eps' = eps / sqrt(1 - b2^t)."""
    return epsilon / (1.0 - beta2**t) ** 0.5


def decay_weights(params, weight_decay: float, tables: frozenset = frozenset()) -> None:
    """TensorFlow's decoupled weight decay: w -= weight_decay * w; an embedding table's rows
    decay when the batch looks them up (TensorFlow's sparse update: the rows of a sparse
    gradient, or the non-zero rows of a dense one), other weights entirely."""
    for p in params:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            rows = torch.unique(p.grad.coalesce().indices()[0])
            p[rows] = p[rows] * (1.0 - weight_decay)
        elif id(p) in tables:
            rows = p.grad.ne(0).any(dim=1).nonzero().squeeze(1)
            p[rows] = p[rows] * (1.0 - weight_decay)
        else:
            p.mul_(1.0 - weight_decay)


class RMSProp(torch.optim.Optimizer):
    """TensorFlow's RMSProp: ms = decay * ms + (1 - decay) * g^2 (ms starts at 1);
    mom = momentum * mom + lr * g / sqrt(ms + epsilon); w -= mom."""

    def __init__(self, params, lr: float, decay: float = 0.9, momentum: float = 0.9, epsilon: float = 1.0):
        super().__init__(params, {"lr": lr, "decay": decay, "momentum": momentum, "epsilon": epsilon})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["ms"] = torch.ones_like(p)
                    state["mom"] = torch.zeros_like(p)
                g = p.grad
                state["ms"].mul_(group["decay"]).addcmul_(g, g, value=1.0 - group["decay"])
                state["mom"].mul_(group["momentum"]).addcdiv_(g, (state["ms"] + group["epsilon"]).sqrt(), value=group["lr"])
                p.sub_(state["mom"])


class Ftrl(torch.optim.Optimizer):
    """FTRL-Proximal (McMahan et al., KDD 2013, Algorithm 1) with TensorFlow's generalisation:
    per coordinate, n' = n + g^2; sigma = (n'^-p - n^-p) / lr (p = learning_rate_power, -0.5 is
    the paper's square root); z += g + 2 * l2_shrinkage * w - sigma * w; then w = 0 where
    |z| <= l1, else (sign(z) * l1 - z) / (n'^-p / lr + 2 * l2). n starts at
    initial_accumulator_value, z at 0."""

    def __init__(self, params, lr: float, learning_rate_power: float = -0.5, initial_accumulator_value: float = 0.1,
                 l1: float = 0.0, l2: float = 0.0, l2_shrinkage: float = 0.0):  # fmt: skip
        defaults = {"lr": lr, "power": learning_rate_power, "initial": initial_accumulator_value, "l1": l1, "l2": l2,
                    "l2_shrinkage": l2_shrinkage}  # fmt: skip
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, power = group["lr"], group["power"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["n"] = torch.full_like(p, group["initial"])
                    state["z"] = torch.zeros_like(p)
                g = p.grad
                n, z = state["n"], state["z"]
                n_new = n + g * g
                sigma = (n_new.pow(-power) - n.pow(-power)) / lr
                z.add_(g + 2.0 * group["l2_shrinkage"] * p - sigma * p)
                n.copy_(n_new)
                quadratic = n_new.pow(-power) / lr + 2.0 * group["l2"]
                l1 = group["l1"]
                p.copy_(torch.where(z.abs() > l1, (torch.sign(z) * l1 - z) / quadratic, torch.zeros_like(p)))


def make_part(name: str, params: object, dense: list[nn.Parameter], tables: list[nn.Embedding],
              multiplier: float) -> list[OptimizerPart]:  # fmt: skip
    """The torch optimizers of one configured optimizer over ``dense`` parameters and the
    embedding ``tables`` (their own group with ``lr_multiplier``; sparse gradients where the
    optimizer takes them: ``table.sparse`` is already set)."""
    lr = 0.002  # set every step from the schedule
    groups = [{"params": dense, "lr": lr, "lr_multiplier": 1.0}] if dense else []
    embedding = [t.weight for t in tables]
    embedding_group = {"params": embedding, "lr": lr * multiplier, "lr_multiplier": multiplier}
    sparse = bool(tables) and tables[0].sparse
    p = params
    weight_decay = getattr(p, "weight_decay", 0.0)
    parts: list[torch.optim.Optimizer] = []
    if name in ADAM_OPTIMIZERS:  # the epsilon is set every step (tf_adam_epsilon)
        lazy = sparse and name == "lazy_adam_optimizer"
        if embedding and not lazy:
            groups.append(embedding_group)
        if groups:
            parts.append(TFAdam(groups, betas=(p.beta1, p.beta2)))
        if lazy:
            parts.append(torch.optim.SparseAdam([embedding_group], betas=(p.beta1, p.beta2), eps=TF_ADAM_EPSILON))
    else:
        if embedding:
            groups.append(embedding_group)
        if groups:
            if name == "adagrad_optimizer":
                parts.append(torch.optim.Adagrad(groups, initial_accumulator_value=p.initial_accumulator_value))
            elif name in ("momentum_optimizer", "momentumw_optimizer"):
                parts.append(torch.optim.SGD(groups, momentum=p.momentum_optimizer_value))
            elif name == "rms_prop_optimizer":
                parts.append(RMSProp(groups, lr, p.decay, p.momentum_optimizer_value, p.epsilon))
            elif name == "ftrl_optimizer":
                parts.append(Ftrl(groups, lr, p.learning_rate_power, p.initial_accumulator_value, p.l1_reg, p.l2_reg,
                                  p.l2_shrinkage_reg))  # fmt: skip
            else:
                raise FusionrecError(f"optimizer_config: {name} is not implemented yet by fusionrec")
    table_ids = frozenset(id(w) for w in embedding)
    return [OptimizerPart(name, part, p.learning_rate, weight_decay, table_ids) for part in parts]

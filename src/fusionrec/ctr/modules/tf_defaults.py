"""What an EasyRec config leaves unsaid, TensorFlow's defaults say: batch-norm constants and
initializers, as EasyRec's layers meet them.

- Batch norm: ``tf.layers.batch_normalization`` and ``tf.keras.layers.BatchNormalization``
  keep moving statistics as ``moving = 0.99 * moving + 0.01 * batch`` with ``epsilon=1e-3``;
  torch's ``BatchNorm1d`` defaults are ``momentum=0.1`` (the new batch's weight) and
  ``eps=1e-5``. ``TF_BATCH_NORM_MOMENTUM`` is TensorFlow's 0.99 in torch's convention.
- Dense and convolution kernels: ``tf.layers.dense``, ``tf.keras.layers.Dense`` / ``Conv1D`` and
  ``tf.get_variable`` start from ``glorot_uniform`` (Glorot & Bengio, AISTATS 2010, eq. 16:
  U(-sqrt(6 / (fan_in + fan_out)), +...)) with zero biases; torch's ``Linear`` starts from
  U(-1/sqrt(fan_in), +...) for both. EasyRec's keras ``MLP`` layer passes its ``initializer``
  field (default ``he_uniform``, He et al., ICCV 2015: U(-sqrt(6 / fan_in), +...)).
- Embedding tables: EasyRec's ``embedding_column`` (its copy of TensorFlow's feature columns)
  defaults to ``truncated_normal(mean=0, stddev=0.01 / sqrt(dimension))``, cut at two standard
  deviations as TensorFlow's truncated normal is; the wide part's tables are embedding columns
  too and start the same way.

``initialize_as_tensorflow_`` applies the batch-norm constants and the kernel initializers to
a built model; a ``Linear`` or ``Conv1d`` whose module set ``kernel_initializer`` (a name from
``INITIALIZERS``, or ``None`` for "initialized by its module already", e.g. BERT's truncated
normal) keeps that choice."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

TF_BATCH_NORM_MOMENTUM = 0.01  # TensorFlow's momentum 0.99, as the new batch's weight (torch's convention)
TF_BATCH_NORM_EPSILON = 1e-3
TORCH_BATCH_NORM_EPSILON = 1e-5  # what checkpoints written before these defaults were trained with


def _fans(weight: Tensor) -> tuple[int, int]:
    """TensorFlow's fans of a torch weight: a Linear's (out, in); a Conv1d's (out, in, width)
    counts the receptive field in both, as Keras does."""
    receptive = math.prod(weight.shape[2:]) if weight.dim() > 2 else 1
    return weight.shape[1] * receptive, weight.shape[0] * receptive


def _uniform(limit: float, weight: Tensor) -> None:
    with torch.no_grad():
        weight.uniform_(-limit, limit)


def _truncated_normal(std: float, weight: Tensor) -> None:
    """TensorFlow's truncated normal: redrawn outside two standard deviations."""
    nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


# Keras initializer name -> fills a weight in place (Keras's formulas, fans as ``_fans``); the
# variance-scaling normals divide by 0.8796..., the std of a unit normal cut at +-2, as Keras does
INITIALIZERS = {
    "glorot_uniform": lambda w: _uniform(math.sqrt(6.0 / sum(_fans(w))), w),
    "glorot_normal": lambda w: _truncated_normal(math.sqrt(2.0 / sum(_fans(w))) / 0.87962566103423978, w),
    "he_uniform": lambda w: _uniform(math.sqrt(6.0 / _fans(w)[0]), w),
    "he_normal": lambda w: _truncated_normal(math.sqrt(2.0 / _fans(w)[0]) / 0.87962566103423978, w),
    "lecun_uniform": lambda w: _uniform(math.sqrt(3.0 / _fans(w)[0]), w),
    "lecun_normal": lambda w: _truncated_normal(math.sqrt(1.0 / _fans(w)[0]) / 0.87962566103423978, w),
    "zeros": nn.init.zeros_,
    "ones": nn.init.ones_,
    "random_normal": lambda w: nn.init.normal_(w, std=0.05),
    "random_uniform": lambda w: _uniform(0.05, w),
    "truncated_normal": lambda w: _truncated_normal(0.05, w),
}  # fmt: skip


def embedding_init_(weight: Tensor) -> None:
    """EasyRec's embedding_column default: truncated normal, stddev 0.01 / sqrt(dimension)."""
    _truncated_normal(0.01 / math.sqrt(weight.shape[1]), weight)


def initialize_as_tensorflow_(model: nn.Module, batch_norm_momentum: float | None = None) -> nn.Module:
    """Give ``model`` TensorFlow's batch-norm constants and kernel initializers (module
    docstring). ``batch_norm_momentum`` (torch's convention: the new batch's weight) replaces
    TensorFlow's 0.01 when given: fusionrec's ``--batch_norm_momentum`` option."""
    momentum = TF_BATCH_NORM_MOMENTUM if batch_norm_momentum is None else batch_norm_momentum
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum, module.eps = momentum, TF_BATCH_NORM_EPSILON
        elif isinstance(module, (nn.Linear, nn.Conv1d)):
            name = getattr(module, "kernel_initializer", "glorot_uniform")
            if name is None:  # its module initialized it (and says so)
                continue
            INITIALIZERS[name](module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def set_batch_norm_epsilon_(model: nn.Module, eps: float) -> None:
    """Every batch norm's epsilon (a checkpoint written with torch's 1e-5 is evaluated with it)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eps = eps


def batch_norm_epsilons(model: nn.Module) -> set[float]:
    return {m.eps for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}

"""What every config message shares: strict pydantic models, EasyRec's message bookkeeping, activation names."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict


def _only_implemented(field: str, value, implemented, meaning: str):
    """``value`` when it is the one EasyRec value fusionrec implements; otherwise refused by name."""
    if value != implemented:
        raise ValueError(f"{field} {value!r} is not implemented yet by fusionrec ({implemented!r}: {meaning})")
    return value


@dataclass(frozen=True)
class EasyRecMessage:
    """How fusionrec treats one EasyRec message (easy_rec/python/protos). Each of its fields is
    a field of the pydantic model (implemented, or accepted with no effect: docs/ctr.md lists
    those), or in ``no_effect`` (accepted and dropped: it tunes TensorFlow, PAI or a cluster),
    or in ``not_implemented`` (refused by name). tests/ctr/test_easyrec_schema.py walks
    EasyRec's protos and checks that no field is left out."""

    name: str
    no_effect: frozenset[str] = frozenset()
    not_implemented: frozenset[str] = frozenset()


def _message(name: str, no_effect: str = "", not_implemented: str = "") -> EasyRecMessage:
    return EasyRecMessage(name, frozenset(no_effect.split()), frozenset(not_implemented.split()))


# the Keras initializer names a config may give (``modules.tf_defaults.INITIALIZERS`` fills them)
KERAS_INITIALIZERS = ("glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_uniform", "lecun_normal",
                      "zeros", "ones", "random_normal", "random_uniform", "truncated_normal")  # fmt: skip

# The activation names EasyRec's configs write (TensorFlow paths and Keras names; EasyRec's
# "dice" is PReLU here) -> the activation each means. fusionrec.ctr.modules.mlp builds one torch
# module per meaning.
ACTIVATIONS = {
    "tf.nn.relu": "relu", "relu": "relu", "tf.nn.sigmoid": "sigmoid", "sigmoid": "sigmoid",
    "tf.nn.tanh": "tanh", "tanh": "tanh", "tf.nn.leaky_relu": "leaky_relu", "leaky_relu": "leaky_relu",
    "tf.nn.elu": "elu", "elu": "elu", "tf.nn.selu": "selu", "selu": "selu", "tf.nn.gelu": "gelu",
    "gelu": "gelu", "dice": "prelu", "prelu": "prelu", "linear": "linear", "swish": "swish",
    "tf.nn.swish": "swish", "softmax": "softmax", "tf.nn.softmax": "softmax",
}  # fmt: skip


def check_activation(value: str, where: str = "") -> str:
    """``value`` when it is an activation name of ``ACTIVATIONS``; otherwise refused naming them."""
    if value not in ACTIVATIONS:
        raise ValueError(f"{where}activation {value!r} is not one of {sorted(ACTIVATIONS)}")
    return value


# an activation name EasyRec writes (tf.nn.relu, relu, dice, linear, ...), one of ACTIVATIONS
Activation = Annotated[str, AfterValidator(check_activation)]


class _Strict(BaseModel):
    # inf and nan are refused in every float field (a learning_rate of inf trains to a NaN loss)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


FieldType = Literal["INT32", "INT64", "STRING", "FLOAT", "DOUBLE", "BOOL"]


_RANGE_NAME = re.compile(r"([a-zA-Z_]+)\[([0-9]+)-([0-9]+)\]")


def expand_range_name(name: str) -> list[str]:
    """EasyRec's name ranges: ``field[1-3]`` stands for field1, field2, field3 (in a feature
    group's feature_names, and in input_fields under auto_expand_input_fields)."""
    match = _RANGE_NAME.fullmatch(name)
    if not match:
        return [name]
    prefix, first, last = match.group(1), int(match.group(2)), int(match.group(3))
    return [f"{prefix}{i}" for i in range(first, last + 1)]


class ConfigRefError(ValueError):
    """A rule between two places of a config (a feature and the input it reads, a group and its
    features) broken at ``loc``, the path of the offending entry: a validator of the whole
    config raises it so that the message gives that entry's line, not "(top level)"."""

    def __init__(self, loc: tuple, message: str):
        super().__init__(message)
        self.loc = tuple(loc)

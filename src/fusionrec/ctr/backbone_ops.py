"""The values and lambdas of EasyRec's backbone graph (``fusionrec.ctr.backbone``).

Every block output is a ``List[Tensor]`` at run time (one element for a tensor) described at
build time by a ``Value``. EasyRec evaluates ``input_fn``, ``extra_input_fn``, ``input_slice``
and lambda blocks as Python code; fusionrec never evaluates config text. ``compile_lambda``
parses them (``ast``) and accepts the forms EasyRec's samples use (``LAMBDA_FORMS``); anything
else is refused by name.
"""

import ast
from dataclasses import dataclass
from typing import List, Tuple

import torch
from torch import Tensor, nn

from fusionrec.errors import FusionrecError


@dataclass(frozen=True)
class Value:
    """What a block outputs: one tensor or a list, with each tensor's shape after the batch."""

    shapes: Tuple[Tuple[int, ...], ...]
    is_list: bool
    parts: Tuple["Value", ...] = ()  # a nested value's top-level elements (its tensors laid out flat)

    @staticmethod
    def tensor(*shape: int) -> "Value":
        return Value((tuple(shape),), False)

    @staticmethod
    def of_list(shapes) -> "Value":
        return Value(tuple(tuple(s) for s in shapes), True)

    def describe(self) -> str:
        if self.parts:
            return "a pair of (" + ", ".join(p.describe() for p in self.parts) + "): pick one with input_slice '[i]'"
        if self.is_list:
            return f"a list of {len(self.shapes)} tensors of shapes {[list(s) for s in self.shapes]}"
        return f"a tensor of shape {list(self.shapes[0])}"


class Op(nn.Module):
    """A step on a block value: List[Tensor] in, List[Tensor] out (see ``Value``)."""

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        return x


class Pick(Op):
    def __init__(self, start: int, stop: int):
        super().__init__()
        self.start, self.stop = start, stop

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        return x[self.start : self.stop]


class ListOf(Op):
    """``[a, b, ...]``: each part gives one tensor."""

    def __init__(self, parts: List[Op]):
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        out: List[Tensor] = []
        for part in self.parts:
            out.extend(part(x))
        return out


class Chain(Op):
    def __init__(self, steps: List[Op]):
        super().__init__()
        self.steps = nn.ModuleList(steps)

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        for step in self.steps:
            x = step(x)
        return x


class AddN(Op):
    def forward(self, x: List[Tensor]) -> List[Tensor]:
        total = x[0]
        for i in range(1, len(x)):
            total = total + x[i]
        return [total]


class Concat(Op):
    def __init__(self, axis: int):
        super().__init__()
        self.axis = axis

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        return [torch.cat(x, dim=self.axis)]


class Stack(Op):
    def __init__(self, axis: int):
        super().__init__()
        self.axis = axis

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        return [torch.stack(x, dim=self.axis)]


class ReduceSum(Op):
    def __init__(self, axis: int, keepdims: bool):
        super().__init__()
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        return [x[0].sum(dim=self.axis, keepdim=self.keepdims)]


LAMBDA_FORMS = "x, x[i], x[i:j], [..], tf.add_n, tf.concat(.., axis), tf.stack(.., axis), tf.reduce_sum(.., axis, keepdims)"


def _axis(value: Value, axis: int, extra: int, where: str) -> int:
    """A TensorFlow axis (counting the batch) of a tensor with ``value``'s rank + ``extra``."""
    rank = len(value.shapes[0]) + 1 + extra
    full = axis + rank if axis < 0 else axis
    if not 1 <= full < rank:
        raise FusionrecError(f"{where}: axis {axis} is not an axis after the batch of a rank-{rank} tensor")
    return full


def _same_shapes(value: Value, what: str, where: str) -> Tuple[int, ...]:
    if not value.is_list:
        raise FusionrecError(f"{where}: {what} needs a list of tensors, got {value.describe()}")
    if len(set(value.shapes)) != 1:
        raise FusionrecError(f"{where}: {what} needs tensors of one shape, got {value.describe()}")
    return value.shapes[0]


def compile_lambda(text: str, value: Value, where: str) -> Tuple[Op, Value]:
    """The op (and its output's ``Value``) of a lambda in EasyRec's config, e.g. ``lambda x: [x, x]``."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as error:
        raise FusionrecError(f"{where}: {text!r} is not a Python lambda ({error.msg})") from None
    if not isinstance(tree, ast.Lambda) or len(tree.args.args) != 1:
        raise FusionrecError(f"{where}: {text!r} is not a lambda of one argument")
    return _compile(tree.body, tree.args.args[0].arg, value, where, text)


def _constant(node, kind, where: str, text: str):
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        return -node.operand.value
    if isinstance(node, ast.Constant) and isinstance(node.value, kind):
        return node.value
    raise FusionrecError(f"{where}: {text!r}: expected a constant {kind.__name__} at {ast.unparse(node)!r}")


def _compile(node, arg: str, value: Value, where: str, text: str) -> Tuple[Op, Value]:
    if isinstance(node, ast.Name) and node.id == arg:
        return Op(), value
    if value.parts and not isinstance(node, ast.Subscript):
        raise FusionrecError(f"{where}: {text!r} reads {value.describe()}")
    if isinstance(node, ast.List):
        parts, shapes = [], []
        for element in node.elts:
            op, out = _compile(element, arg, value, where, text)
            if out.is_list:
                raise FusionrecError(f"{where}: {text!r}: a list element is itself a list ({out.describe()})")
            parts.append(op)
            shapes.append(out.shapes[0])
        return ListOf(parts), Value.of_list(shapes)
    if isinstance(node, ast.Subscript):
        op, inner = _compile(node.value, arg, value, where, text)
        if inner.parts and not isinstance(node.slice, ast.Slice):
            index = _constant(node.slice, int, where, text)
            if not 0 <= index < len(inner.parts):
                raise FusionrecError(f"{where}: {text!r}: index {index} is outside {inner.describe()}")
            start = sum(len(p.shapes) for p in inner.parts[:index])
            return Chain([op, Pick(start, start + len(inner.parts[index].shapes))]), inner.parts[index]
        if inner.parts:
            raise FusionrecError(f"{where}: {text!r} slices {inner.describe()}")
        if not inner.is_list:
            raise FusionrecError(f"{where}: {text!r} indexes {inner.describe()}; fusionrec indexes lists only")
        n = len(inner.shapes)
        if isinstance(node.slice, ast.Slice):
            start = _constant(node.slice.lower, int, where, text) if node.slice.lower is not None else 0
            stop = _constant(node.slice.upper, int, where, text) if node.slice.upper is not None else n
            start, stop = (start + n if start < 0 else start), (stop + n if stop < 0 else stop)
            return Chain([op, Pick(start, stop)]), Value.of_list(inner.shapes[start:stop])
        index = _constant(node.slice, int, where, text)
        index = index + n if index < 0 else index
        if not 0 <= index < n:
            raise FusionrecError(f"{where}: {text!r}: index {index} is outside the list of {n}")
        return Chain([op, Pick(index, index + 1)]), Value((inner.shapes[index],), False)
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "tf" and node.args):  # fmt: skip
        name = node.func.attr
        op, inner = _compile(node.args[0], arg, value, where, text)
        keywords = {k.arg: k.value for k in node.keywords}
        if len(node.args) > 1:
            keywords.setdefault("axis", node.args[1])
        if name == "add_n":
            shape = _same_shapes(inner, "tf.add_n", where)
            return Chain([op, AddN()]), Value.tensor(*shape)
        if name in ("concat", "stack"):
            axis = _constant(keywords["axis"], int, where, text) if "axis" in keywords else 0
            if not inner.is_list:
                raise FusionrecError(f"{where}: tf.{name} needs a list of tensors, got {inner.describe()}")
            if name == "stack":
                shape = _same_shapes(inner, "tf.stack", where)
                full = _axis(inner, axis, 1, where)
                out = list(shape)
                out.insert(full - 1, len(inner.shapes))
                return Chain([op, Stack(full)]), Value.tensor(*out)
            full = _axis(inner, axis, 0, where)
            ranks = {len(s) for s in inner.shapes}
            others = {s[: full - 1] + s[full:] for s in inner.shapes}
            if len(ranks) != 1 or len(others) != 1:
                raise FusionrecError(f"{where}: tf.concat on axis {axis} needs shapes equal but on that axis, got {inner.describe()}")
            out = list(inner.shapes[0])
            out[full - 1] = sum(s[full - 1] for s in inner.shapes)
            return Chain([op, Concat(full)]), Value.tensor(*out)
        if name == "reduce_sum":
            if inner.is_list:
                raise FusionrecError(f"{where}: tf.reduce_sum needs a tensor, got {inner.describe()}")
            axis = _constant(keywords["axis"], int, where, text) if "axis" in keywords else None
            if axis is None:
                raise FusionrecError(f"{where}: {text!r}: tf.reduce_sum needs an axis (a sum over the batch is not a feature)")
            keepdims = bool(_constant(keywords["keepdims"], bool, where, text)) if "keepdims" in keywords else False
            full = _axis(inner, axis, 0, where)
            out = list(inner.shapes[0])
            if keepdims:
                out[full - 1] = 1
            else:
                out.pop(full - 1)
            return Chain([op, ReduceSum(full, keepdims)]), Value.tensor(*out)
    raise FusionrecError(f"{where}: {text!r} uses {ast.unparse(node)!r}, which fusionrec does not read; it reads {LAMBDA_FORMS}")



"""EasyRec's ExprFeature: a value computed per row from numeric input fields by an expression
such as ``(age_level>=item_age_level) & (age_level<=(item_age_level+5))``.

EasyRec evaluates the expression as Python over TensorFlow tensors, so Python's grammar and
operator precedence hold. fusionrec parses it with Python's ``ast`` (never ``eval``) into a
postfix program that ``FeatureTransform`` runs in TorchScript: input fields, numbers, ``+ - *
/``, unary ``-``, comparisons (1.0 or 0.0), and ``&`` / ``|`` / ``~`` on truth values (non-zero
is true). Anything else (calls, attributes, chained comparisons) is refused by name.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

# opcodes of the postfix program
PUSH_INPUT, PUSH_CONSTANT, NEGATE, NOT = 0, 1, 2, 3
BINARY_OPS = {ast.Add: 10, ast.Sub: 11, ast.Mult: 12, ast.Div: 13, ast.BitAnd: 14, ast.BitOr: 15}
COMPARE_OPS = {ast.Lt: 20, ast.LtE: 21, ast.Gt: 22, ast.GtE: 23, ast.Eq: 24, ast.NotEq: 25}


@dataclass
class Program:
    """Postfix code: ``opcodes[i]`` with ``operands[i]`` (an input index or a constant index)."""

    opcodes: list[int] = field(default_factory=list)
    operands: list[int] = field(default_factory=list)
    constants: list[float] = field(default_factory=list)


def compile_expression(text: str, input_names: list[str]) -> Program:
    """The program of ``text`` over ``input_names``; ValueError names what is not allowed."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as error:
        raise ValueError(f"expression {text!r} is not a valid expression ({error.msg})") from None
    program = Program()
    _emit(tree.body, input_names, program, text)
    return program


def _emit(node: ast.AST, names: list[str], program: Program, text: str) -> None:
    if isinstance(node, ast.Name):
        if node.id not in names:
            raise ValueError(f"expression {text!r}: {node.id!r} is not one of the feature's input_names {names}")
        program.opcodes.append(PUSH_INPUT)
        program.operands.append(names.index(node.id))
    elif isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        program.opcodes.append(PUSH_CONSTANT)
        program.operands.append(len(program.constants))
        program.constants.append(float(node.value))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Invert)):
        _emit(node.operand, names, program, text)
        if not isinstance(node.op, ast.UAdd):
            program.opcodes.append(NEGATE if isinstance(node.op, ast.USub) else NOT)
            program.operands.append(0)
    elif isinstance(node, ast.BinOp) and type(node.op) in BINARY_OPS:
        _emit(node.left, names, program, text)
        _emit(node.right, names, program, text)
        program.opcodes.append(BINARY_OPS[type(node.op)])
        program.operands.append(0)
    elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in COMPARE_OPS:
        _emit(node.left, names, program, text)
        _emit(node.comparators[0], names, program, text)
        program.opcodes.append(COMPARE_OPS[type(node.ops[0])])
        program.operands.append(0)
    else:
        what = ast.get_source_segment(text.strip(), node) or type(node).__name__
        raise ValueError(
            f"expression {text!r}: {what!r} is not supported; expressions use input names, numbers, + - * /, "
            "comparisons (one per pair of parentheses), & | ~"
        )

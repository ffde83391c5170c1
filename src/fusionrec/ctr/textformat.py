"""Protobuf text format (EasyRec's `.config`) read without a compiled schema.

EasyRec reads its configs with ``text_format.Merge``: a singular field given twice keeps the
last value (a message given twice is merged), a repeated field keeps every value. The parser
here tokenizes with protobuf's own ``text_format.Tokenizer`` (its string escapes, numbers and
comments), collects every field as a list of values with their line numbers, and leaves the
question "repeated or singular?" to the typed config: ``shape`` applies Merge's rules with the
pydantic model's field types. Unknown and unsupported fields are then named by the config
layer, with their line.
"""

from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Union

import yaml
from google.protobuf import text_format
from pydantic import BaseModel

from fusionrec.errors import FusionrecError


@dataclass
class Message:
    """A parsed message: field name -> [(value, line)], values in file order."""

    fields: dict[str, list[tuple[Any, int]]] = field(default_factory=dict)
    line: int = 0


def parse(text: str, path: str) -> Message:
    tokenizer = text_format.Tokenizer(text.splitlines())
    try:
        return _message(tokenizer, None, 1)
    except text_format.ParseError as error:
        raise FusionrecError(f"{path} {_where(error)}: {str(error).split(' : ', 1)[-1]}") from None


def _where(error: text_format.ParseError) -> str:
    return f"line {error.GetLine()} column {error.GetColumn()}" if error.GetLine() else "(position unknown)"


def _line(tokenizer) -> int:
    return tokenizer._line + 1  # the tokenizer keeps its 0-based line; there is no public accessor


def _message(tokenizer, end: str | None, line: int) -> Message:
    message = Message(line=line)
    while True:
        if end is not None and tokenizer.TryConsume(end):
            return message
        if tokenizer.AtEnd():
            if end is not None:
                raise tokenizer.ParseError(f"expected {end!r} to close the message opened on line {line}")
            return message
        field_line = _line(tokenizer)
        name = tokenizer.ConsumeIdentifier()
        values: list[Any]
        if tokenizer.TryConsume(":"):
            if tokenizer.TryConsume("["):  # a list: `name: [1, 2]` or `name: [{...}, {...}]`
                values = []
                while not tokenizer.TryConsume("]"):
                    values.append(_value(tokenizer))
                    if not tokenizer.LookingAt("]"):
                        tokenizer.Consume(",")
            else:
                values = [_value(tokenizer)]
        else:
            values = [_submessage(tokenizer)]
        message.fields.setdefault(name, []).extend((v, field_line) for v in values)
        if not tokenizer.TryConsume(","):
            tokenizer.TryConsume(";")


def _submessage(tokenizer) -> Message:
    line = _line(tokenizer)
    if tokenizer.TryConsume("{"):
        return _message(tokenizer, "}", line)
    tokenizer.Consume("<")
    return _message(tokenizer, ">", line)


def _value(tokenizer) -> Any:
    if tokenizer.LookingAt("{") or tokenizer.LookingAt("<"):
        return _submessage(tokenizer)
    if tokenizer.token[:1] in ("'", '"'):
        raw = tokenizer.ConsumeByteString()  # adjacent strings concatenate; \001-style escapes decoded
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise tokenizer.ParseErrorPreviousToken("string is not UTF-8") from None
    negative = tokenizer.TryConsume("-")
    token = tokenizer.token
    if _INTEGER.fullmatch(token):
        value = tokenizer.ConsumeInteger()
    elif _FLOAT.fullmatch(token) or _SPECIAL_FLOAT.fullmatch(token):
        value = tokenizer.ConsumeFloat()
    else:  # an enum value, true / false, inf, nan: the typed config converts it
        word = tokenizer.ConsumeIdentifierOrNumber()
        return "-" + word if negative else word
    return -value if negative else value


_INTEGER = re.compile(r"-?(0[xX][0-9a-fA-F]+|[0-9]+)")
_FLOAT = re.compile(r"-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?[fF]?")
_SPECIAL_FLOAT = re.compile(r"-(inf|infinity|nan)f?", re.IGNORECASE)  # `inf` alone stays a word: an enum could be named so


# --------------------------------------------------------------------------- shaping
def shape(message: Message, model: type[BaseModel] | None, lines: dict, path: tuple = ()) -> dict:
    """A plain dict for ``model``, with protobuf Merge's rules: repeated fields (list-typed in
    the model) keep every value; a singular scalar keeps the last; a singular message merges
    every occurrence. ``lines`` collects the line of every field path, for error messages."""
    out: dict[str, Any] = {}
    for name, entries in message.fields.items():
        annotation = _field_annotation(model, name)
        lines[path + (name,)] = entries[-1][1]
        if annotation is not None and _is_list(annotation):
            item_model = _model_in(typing.get_args(_strip_optional(annotation))[0])
            out[name] = [
                shape(v, item_model, lines, path + (name, i)) if isinstance(v, Message) else v
                for i, (v, _) in enumerate(entries)
            ]
            for i, (_, line) in enumerate(entries):
                lines[path + (name, i)] = line
            continue
        sub_model = _model_in(annotation) if annotation is not None else None
        if _is_struct(annotation) and isinstance(entries[-1][0], Message) and set(entries[-1][0].fields) == {"fields"}:
            out[name] = _struct(entries[-1][0])
            continue
        if isinstance(entries[-1][0], Message):
            merged = Message(line=entries[0][1])
            for value, _ in entries:
                if isinstance(value, Message):
                    for key, more in value.fields.items():
                        merged.fields.setdefault(key, []).extend(more)
            out[name] = shape(merged, sub_model, lines, path + (name,))
        else:
            out[name] = entries[-1][0]
    return out


def _is_struct(annotation) -> bool:
    """A dict field: a google.protobuf.Struct (``st_params``) when its message holds only
    ``fields`` entries, else a plain message of names (the pipeline's ``params { eta: 0.1 }``)."""
    return annotation is not None and typing.get_origin(_strip_optional(annotation)) is dict


def _struct(message: Message) -> dict:
    """A protobuf Struct, ``fields { key: "k" value { number_value: 1 } }`` repeated, as a dict."""
    out = {}
    for entry, _ in message.fields.get("fields", []):
        if not isinstance(entry, Message) or "key" not in entry.fields:
            continue
        key = entry.fields["key"][-1][0]
        value = entry.fields.get("value", [(None, 0)])[-1][0]
        out[key] = _struct_value(value) if isinstance(value, Message) else value
    return out


def _struct_value(value: Message):
    for kind, entries in value.fields.items():
        item = entries[-1][0]
        if kind == "struct_value" and isinstance(item, Message):
            return _struct(item)
        if kind == "list_value" and isinstance(item, Message):
            return [_struct_value(v) for v, _ in item.fields.get("values", []) if isinstance(v, Message)]
        if kind == "null_value":
            return None
        if kind == "bool_value":  # a word until a field type says otherwise; a Struct has none
            return item is True or str(item).lower() in ("true", "t", "1")
        return item
    return None


def _field_annotation(model: type[BaseModel] | None, name: str):
    if model is None:
        return None
    for field_name, info in model.model_fields.items():
        if field_name == name or info.alias == name:
            return info.annotation
    return None


def _strip_optional(annotation):
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _is_list(annotation) -> bool:
    return typing.get_origin(_strip_optional(annotation)) in (list, tuple)


def _model_in(annotation) -> type[BaseModel] | None:
    annotation = _strip_optional(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def field_model(model: type[BaseModel], name: str) -> type[BaseModel] | None:
    """The pydantic model of ``model``'s field ``name`` (or of its list items), if it is one."""
    annotation = _field_annotation(model, name)
    if annotation is None:
        return None
    annotation = _strip_optional(annotation)
    if _is_list(annotation):
        annotation = typing.get_args(annotation)[0]
    return _model_in(annotation)


def yaml_with_lines(text: str, source: str, lines: dict) -> Any:
    """YAML into plain data, recording the line of every mapping key and list item."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise FusionrecError(f"{source}: not valid YAML: {error}") from None

    def walk(n, path: tuple) -> None:
        if isinstance(n, yaml.MappingNode):
            for key, value in n.value:
                sub = path + (key.value,)
                lines[sub] = key.start_mark.line + 1
                walk(value, sub)
        elif isinstance(n, yaml.SequenceNode):
            for i, value in enumerate(n.value):
                lines[path + (i,)] = value.start_mark.line + 1
                walk(value, path + (i,))

    if node is not None:
        walk(node, ())
    return data if data is not None else {}

"""Reading a `.config` (EasyRec text format) or YAML file into a ``PipelineConfig``, with errors naming file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from fusionrec.ctr.config._base import ConfigRefError
from fusionrec.ctr.config.pipeline import PipelineConfig
from fusionrec.ctr.config.schema import EASYREC_MESSAGES, _drop_no_effect, _owner
from fusionrec.ctr.textformat import parse, shape, yaml_with_lines
from fusionrec.errors import FusionrecError


# --------------------------------------------------------------------------- loading
def _text_format_to_dict(text: str, path: str, lines: dict) -> dict:
    """An EasyRec `.config`, read as EasyRec reads it (``text_format.Merge``), into plain data."""
    return shape(parse(text, path), PipelineConfig, lines)


def _format_validation(error: ValidationError, path: str, lines: dict | None = None) -> str:
    out = []
    for item in error.errors():
        loc = error_loc(item)
        where = ".".join(str(p) for p in loc) or "(top level)"
        line = line_of(loc, lines or {})
        if line:
            where = f"line {line}: {where}"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            leaf = str(item["loc"][-1])
            easyrec = EASYREC_MESSAGES.get(_owner(tuple(item["loc"])))
            if easyrec is not None and leaf in easyrec.not_implemented:
                message = f"EasyRec field {leaf!r} (in {easyrec.name}) is not implemented yet by fusionrec"
            else:
                message = f"unknown field: EasyRec's {easyrec.name if easyrec else 'schema'} has no field {leaf!r}"
        elif "input" in item and item["type"] != "value_error":
            message += f" (got {item['input']!r})"
        out.append(f"{where}: {message}")
    return f"{path}: invalid pipeline config\n  " + "\n  ".join(out)


def error_loc(item: dict) -> tuple:
    """The path of a validation error: pydantic's, extended by a ``ConfigRefError``'s own."""
    cause = (item.get("ctx") or {}).get("error")
    return tuple(item["loc"]) + (cause.loc if isinstance(cause, ConfigRefError) else ())


def line_of(loc: tuple, lines: dict) -> int | None:
    """The line of a field path, or of its nearest parent the file names."""
    loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return None


def config_from_dict(data: dict, path: str = "<config>", lines: dict | None = None) -> PipelineConfig:
    data = _drop_no_effect(data, PipelineConfig, [])
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as error:
        raise FusionrecError(_format_validation(error, path, lines)) from None


def load_config(path: str | Path, edit_config_json: str | None = None) -> PipelineConfig:
    """Read a `.config` (EasyRec text format) or `.yaml`/`.yml` pipeline config and validate it.

    ``edit_config_json`` is EasyRec's ``--edit_config_json``: a JSON object of dotted paths to
    new values, e.g. ``{"train_config.num_steps": 10, "data_config.batch_size": 64}``.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise FusionrecError(f"pipeline config {str(path)!r}: cannot read ({error.strerror})") from None
    lines: dict = {}  # field path -> line, for the text format's error messages
    if path.suffix in (".yaml", ".yml"):
        data = yaml_with_lines(text, str(path), lines)
        if not isinstance(data, dict):
            raise FusionrecError(f"{path}: the top level must be a mapping of fields, got {type(data).__name__}")
    else:
        data = _text_format_to_dict(text, str(path), lines)
    if edit_config_json:
        apply_edits(data, edit_config_json)
    return config_from_dict(data, str(path), lines)


def apply_edits(data: dict, edit_config_json: str) -> None:
    try:
        edits = json.loads(edit_config_json)
    except json.JSONDecodeError as error:
        raise FusionrecError(f"--edit_config_json: not valid JSON ({error})") from None
    if not isinstance(edits, dict):
        raise FusionrecError("--edit_config_json: must be a JSON object of dotted paths to values")
    for dotted, value in edits.items():
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise FusionrecError(f"--edit_config_json: {dotted!r}: {part!r} is not a message")
        node[parts[-1]] = value


def dump_config(config: PipelineConfig) -> dict:
    """The resolved config as plain data (written beside checkpoints and exports)."""
    return config.model_dump(mode="json", by_alias=True, exclude_none=True)

"""The pipeline config: one file that trains boosted trees and deep CTR models on the same
click logs, fuses them out of fold and exports one artifact.

YAML (``pipeline.yaml``) or protobuf text format (``pipeline.config``) with the same fields::

    run_dir: experiments/taobao_pipeline
    data:                       # EasyRec's data_config and feature_configs, as they are
      train_input_path: data/taobao_train_data
      eval_input_path: data/taobao_test_data        # held out: never used to fit anything
      data_config: {...}
      feature_configs: [...]
    split: {k_folds: 5}         # or {time_split: {column: ds, n_folds: 4}}
    models:
    - name: trees
      gbdt: {params: {max_depth: 6, eta: 0.1}, num_boost_round: 200, columns: {tag_brand_list: count}}
    - name: wide_and_deep
      ctr: {pipeline_config_path: taobao_wide_and_deep.config}   # or model_config / train_config inline
    - name: leaf_wide_and_deep
      leaf_features: {trees: trees, ctr: {...}}
    fusion: {stacking: {}}      # or average: {...} / ensemble_selection: {...}

Every error names the file, the line and the field's path (``models.1.gbdt.params``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fusionrec.ctr import config as ctr_config
from fusionrec.ctr.textformat import parse, shape, yaml_with_lines
from fusionrec.errors import FusionrecError
from fusionrec.fusion.combine import METHODS

Located = ctr_config.ConfigRefError  # a rule broken at a path inside the validated section

# how a boosted-trees model reads an input field (docs/pipeline.md, "Columns for the trees")
COLUMN_ENCODINGS = ("numeric", "frequency", "ordinal", "target", "count", "skip")
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
MODEL_SECTIONS = ("model_config", "train_config", "eval_config", "export_config")
DATA_TRAINING_KNOBS = ("data_config.batch_size", "data_config.num_epochs", "data_config.shuffle",
                       "data_config.shuffle_buffer_size")  # fmt: skip


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False, populate_by_name=True,
                              protected_namespaces=())  # fmt: skip


class _OneOf(_Strict):
    """A message that sets exactly one of its ``_KINDS`` fields; ``kind`` names it."""

    _KINDS: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _exactly_one(self):
        found = [k for k in self._KINDS if getattr(self, k) is not None]
        if len(found) != 1:
            raise ValueError(f"needs exactly one of {', '.join(self._KINDS)}; found {found or 'none'}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in self._KINDS if getattr(self, k) is not None)


class DataSection(_Strict):
    """EasyRec's input part of a pipeline config, read once and given to every model."""

    pipeline_config_path: str | None = None  # take what is not given here from this EasyRec config
    train_input_path: str
    eval_input_path: str | None = None
    data_config: ctr_config.DataConfig
    feature_configs: list[ctr_config.FeatureConfig] = []
    feature_config: ctr_config.FeatureConfigV2 | None = None

    @property
    def features(self) -> list[ctr_config.FeatureConfig]:
        return ctr_config.expand_features(self.feature_configs, self.feature_config)

    @model_validator(mode="after")
    def _features_read_input_fields(self):
        fields = {f.input_name: f for f in self.data_config.input_fields}
        located = ctr_config.located_features(self.feature_configs, self.feature_config)
        ctr_config.check_feature_inputs(located, fields, self.data_config.label_fields)
        return self

    @property
    def label(self) -> str:
        return self.data_config.label_fields[0]


class TimeSplit(_Strict):
    """Forward-chaining folds on a column's sorted values (a day): fold i trains on the
    earlier values and predicts the next block, so no model sees the future."""

    column: str
    n_folds: int = Field(3, ge=1, le=50)


class SplitSection(_Strict):
    k_folds: int | None = Field(None, ge=2, le=50)
    time_split: TimeSplit | None = None
    seed: int = 2026

    @model_validator(mode="after")
    def _one(self):
        if self.k_folds is not None and self.time_split is not None:
            raise ValueError("give k_folds or time_split, not both")
        if self.k_folds is None and self.time_split is None:
            object.__setattr__(self, "k_folds", 5)
        return self


class MatchColumn(_Strict):
    value: str  # a single-valued STRING field
    list: str  # a list STRING field (a TagFeature's or SequenceFeature's)


class GBDTSection(_Strict):
    """Boosted trees on the input fields (XGBoost's parameter names in ``params``)."""

    params: dict[str, Any] = {}
    num_boost_round: int = Field(100, ge=1, le=100_000)
    early_stopping_rounds: int | None = Field(None, ge=1)
    # input field -> numeric | frequency | ordinal | target | count | skip (defaults by the field's type)
    columns: dict[str, str] = {}
    # how often the row's value occurs in its list (the ad's category among the user's recent ones)
    matches: list[MatchColumn] = []
    max_categories: int = Field(254, ge=1, le=1_000_000)

    @field_validator("columns")
    @classmethod
    def _encodings(cls, value):
        for name, kind in value.items():
            if kind not in COLUMN_ENCODINGS:
                raise ValueError(f"columns.{name}: {kind!r} is not an encoding; use one of {list(COLUMN_ENCODINGS)}")
        return value

    @field_validator("params")
    @classmethod
    def _params(cls, value):
        """XGBoost's parameters, checked when the config loads (not after the data is read)."""
        from fusionrec.gbdt.params import ParameterError, resolve_params

        objective = value.get("objective", "binary:logistic")
        if objective != "binary:logistic":
            raise Located(("objective",), f"objective {objective!r}: the pipeline fuses click models, so its trees are "
                                          "binary:logistic")  # fmt: skip
        try:
            resolve_params({"objective": "binary:logistic", **value})
        except ParameterError as error:
            raise Located((error.name,), str(error)) from None
        except FusionrecError as error:  # a rule between parameters
            raise ValueError(str(error)) from None
        return value


class CTRSection(_Strict):
    """A deep model: EasyRec's model_config with its own train_config (inline, or taken from an
    EasyRec ``.config`` / YAML file; that file's data part is replaced by the pipeline's, and a
    train_config / eval_config / export_config given here replaces the file's)."""

    pipeline_config_path: str | None = None
    # EasyRec's --edit_config_json, applied to the model's config: {"train_config.num_steps": 0}
    # (a mapping, or its JSON text as EasyRec's flag takes it)
    edit_config_json: dict[str, Any] = {}
    model_config_: ctr_config.ModelConfig | None = Field(None, alias="model_config")
    train_config: ctr_config.TrainConfig | None = None
    eval_config: ctr_config.EvalConfig | None = None
    export_config: ctr_config.ExportConfig | None = None

    @field_validator("edit_config_json", mode="before")
    @classmethod
    def _json_text(cls, value):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as error:
                raise ValueError(f"edit_config_json: not valid JSON ({error})") from None
        return value

    @model_validator(mode="after")
    def _source(self):
        if (self.pipeline_config_path is None) == (self.model_config_ is None):
            raise ValueError("give pipeline_config_path (an EasyRec config) or model_config, exactly one")
        return self


class LeafFeatureSection(_Strict):
    """He et al. 2014 (Facebook): the leaf each tree of a boosted model puts a row in, as
    WIDE id features of a deep model. The leaves a row trains with come from trees fitted
    without that row (``inner_folds``), so the model cannot learn leaves fit on its own labels."""

    trees: str
    ctr: CTRSection
    inner_folds: int = Field(3, ge=2, le=20)
    n_trees: int | None = Field(None, ge=1)  # the leaves of the first n_trees trees (default: every tree)
    feature_group: str | None = None  # the WIDE group that gets the leaves (default: the model's WIDE group)


class ModelEntry(_OneOf):
    _KINDS: ClassVar[tuple[str, ...]] = ("gbdt", "ctr", "leaf_features")

    name: str
    gbdt: GBDTSection | None = None
    ctr: CTRSection | None = None
    leaf_features: LeafFeatureSection | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value):
        if not NAME_RE.match(value):
            raise ValueError(f"name {value!r}: letters, digits and _ starting with a letter (it names files and columns)")
        return value



class AverageFusion(_Strict):
    method: str = "mean"
    weights: list[float] | None = None  # fixed weights, one per model in `models` order
    fit_metric: Literal["auc", "logloss"] | None = None  # fit the weights out of fold for this metric
    power: float = 2.0

    @model_validator(mode="after")
    def _check(self):
        if self.method not in METHODS:
            raise ValueError(f"method {self.method!r} is not an averaging method; use one of {list(METHODS)}")
        if self.method == "rank":
            raise ValueError(
                "method 'rank': a rank average depends on the other rows scored with it, so a served row's score "
                "would change with its batch; use 'logit' (or 'mean') for a fused probability"
            )
        if self.weights is not None and self.fit_metric is not None:
            raise ValueError("give weights (fixed) or fit_metric (fitted), not both")
        if self.weights is not None and (any(w < 0 for w in self.weights) or not any(w > 0 for w in self.weights)):
            raise ValueError(f"weights {self.weights}: must be >= 0 and not all 0")
        return self


class StackingFusion(_Strict):
    """A logistic regression on the models' out-of-fold log-odds (Wolpert's stacked generalization)."""

    C: float = Field(1.0, gt=0)
    passthrough: bool = False  # reserved: raw inputs are not fed to the meta-model


class SelectionFusion(_Strict):
    """Caruana et al. 2004: greedy forward selection with replacement on out-of-fold predictions."""

    n_iterations: int = Field(50, ge=1, le=10_000)
    n_init: int = Field(1, ge=0)
    metric: Literal["auc", "logloss"] = "auc"


class FusionSection(_OneOf):
    _KINDS: ClassVar[tuple[str, ...]] = ("average", "stacking", "ensemble_selection")

    average: AverageFusion | None = None
    stacking: StackingFusion | None = None
    ensemble_selection: SelectionFusion | None = None

    @model_validator(mode="after")
    def _passthrough(self):
        if self.stacking is not None and self.stacking.passthrough:
            raise ValueError("stacking.passthrough is not implemented yet by fusionrec (the meta-model sees the models' scores)")
        return self


class ExportSection(_Strict):
    export_dir: str | None = None  # where `train` writes the export (default: run_dir/export)


class EvalSection(_Strict):
    gauc_field: str | None = None  # GAUC groups by this input field (EasyRec's gauc uid_field)


class PipelineSpec(_Strict):
    run_dir: str = "pipeline_run"
    data: DataSection
    split: SplitSection = SplitSection()
    models: list[ModelEntry] = Field(min_length=1)
    fusion: FusionSection
    eval: EvalSection = EvalSection()
    export: ExportSection = ExportSection()
    n_jobs: int = Field(1, ge=1, le=64)  # (model, fold) fits run in this many processes

    @model_validator(mode="after")
    def _cross(self):
        names = [m.name for m in self.models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            second = next(i for i, n in enumerate(names) if n in duplicates and names.index(n) != i)
            raise Located(("models", second, "name"), f"models: names {duplicates} appear more than once")
        if len(self.models) < 2:
            raise ValueError(f"models: a fusion needs at least two models, got {names}")
        fields = {f.input_name: f for f in self.data.data_config.input_fields}
        labels = self.data.data_config.label_fields
        for i, model in enumerate(self.models):
            if model.leaf_features is not None:
                trees = model.leaf_features.trees
                source = next((m for m in self.models[:i] if m.name == trees), None)
                if source is None or source.gbdt is None:
                    raise Located(("models", i, "leaf_features", "trees"),
                                  f"models.{i} {model.name!r}: leaf_features.trees {trees!r} must name a gbdt model listed before it")  # fmt: skip
            if model.gbdt is not None:
                for column in model.gbdt.columns:
                    if column not in fields or column in labels:
                        raise Located(("models", i, "gbdt", "columns", column),
                                      f"models.{i} {model.name!r}: gbdt.columns {column!r} is not a (non-label) input field")  # fmt: skip
                for j, match in enumerate(model.gbdt.matches):
                    pair = (match.value, match.list)
                    if any(f not in fields or f in labels or fields[f].input_type != "STRING" for f in pair):
                        raise Located(("models", i, "gbdt", "matches", j), f"models.{i} {model.name!r}: gbdt.matches "
                                      f"{list(pair)}: value and list must be STRING input fields")  # fmt: skip
        weights = self.fusion.average.weights if self.fusion.average is not None else None
        if weights is not None and len(weights) != len(self.models):
            raise Located(("fusion", "average", "weights"),
                          f"fusion.average.weights: {len(weights)} weights for {len(self.models)} models {names}")
        if self.split.time_split is not None and self.split.time_split.column not in fields:
            raise Located(("split", "time_split", "column"),
                          f"split.time_split.column {self.split.time_split.column!r} is not an input field")
        if self.eval.gauc_field is not None and self.eval.gauc_field not in fields:
            raise Located(("eval", "gauc_field"), f"eval.gauc_field {self.eval.gauc_field!r} is not an input field")
        if len(labels) != 1:
            raise Located(("data", "data_config", "label_fields"),
                          f"data.data_config.label_fields: the pipeline fuses one click label, got {labels}")
        return self

    def model(self, name: str) -> ModelEntry:
        return next(m for m in self.models if m.name == name)


# ---------------------------------------------------------------- loading
def load_pipeline(path: str | Path) -> tuple[PipelineSpec, Path]:
    """The validated spec of a YAML or text-format pipeline config, and its directory (relative
    paths in the config are relative to it)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise FusionrecError(f"pipeline config {str(path)!r}: cannot read ({error.strerror})") from None
    lines: dict = {}
    if path.suffix in (".yaml", ".yml"):
        data = yaml_with_lines(text, str(path), lines)
    else:
        data = shape(parse(text, str(path)), PipelineSpec, lines)
    if isinstance(data, dict):
        _data_from_easyrec(data, path.parent, str(path))
    spec = spec_from_dict(data, str(path), lines)
    _check_deep_models(spec, path.parent, str(path), lines)
    return spec, path.parent


def _check_deep_models(spec: PipelineSpec, base_dir: Path, source: str, lines: dict) -> None:
    """Each deep model's EasyRec config against the pipeline's data, when the config loads (not
    when its first fit starts, after the training data has been read)."""
    from fusionrec.pipeline.members import leaf_ctr_config

    for i, entry in enumerate(spec.models):
        loc = ("models", i, entry.kind)
        line = ctr_config.line_of(loc, lines)
        where = f"{'line ' + str(line) + ': ' if line else ''}{'.'.join(map(str, loc))}"
        try:
            if entry.ctr is not None:
                ctr_config_for(spec, entry.ctr, base_dir, f"models.{entry.name}.ctr")
            elif entry.leaf_features is not None:
                leaf_ctr_config(spec, entry, base_dir, ["0"])  # the leaf vocabulary is known after the trees' fit
        except FusionrecError as error:
            raise FusionrecError(f"{source}: invalid pipeline config\n  {where}: {error}") from None


def _data_from_easyrec(data: dict, base_dir: Path, source: str) -> None:
    """``data.pipeline_config_path``: the input paths, data_config and features of an EasyRec
    config fill what the pipeline's data section leaves out."""
    section = data.get("data")
    if not isinstance(section, dict) or not section.get("pipeline_config_path"):
        return
    path = Path(str(section["pipeline_config_path"]))
    path = path if path.is_absolute() else base_dir / path
    try:
        easyrec = ctr_config.dump_config(ctr_config.load_config(path))
    except FusionrecError as error:
        raise FusionrecError(f"{source}: data.pipeline_config_path: {error}") from None
    for key in ("train_input_path", "eval_input_path", "data_config", "feature_configs", "feature_config"):
        if key not in section and key in easyrec:
            section[key] = easyrec[key]


def spec_from_dict(data: Any, source: str = "<pipeline config>", lines: dict | None = None) -> PipelineSpec:
    if not isinstance(data, dict):
        raise FusionrecError(f"{source}: the top level must be a mapping of fields, got {type(data).__name__}")
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as error:
        raise FusionrecError(_format_errors(error, source, lines or {})) from None


def _format_errors(error: ValidationError, source: str, lines: dict) -> str:
    out = []
    for item in error.errors():
        loc = ctr_config.error_loc(item)
        where = ".".join(str(p) for p in loc) or "(top level)"
        line = ctr_config.line_of(loc, lines)
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = f"unknown field {str(loc[-1])!r}"
        elif "input" in item and item["type"] not in ("value_error", "missing") and not isinstance(item["input"], dict):
            message += f" (got {item['input']!r})"
        out.append(f"{'line ' + str(line) + ': ' if line else ''}{where}: {message}")
    return f"{source}: invalid pipeline config\n  " + "\n  ".join(out)


def ctr_config_for(spec: PipelineSpec, section: CTRSection, base_dir: Path, where: str, *,
                   extra_fields: list[dict] = (), extra_features: list[dict] = ()) -> ctr_config.PipelineConfig:  # fmt: skip
    """The EasyRec pipeline config of one deep model: the pipeline's data part with the model's
    own model_config / train_config / eval_config / export_config (``extra_*`` add input
    fields and features: a leaf-feature model's leaves)."""
    if section.pipeline_config_path is not None:
        path = Path(section.pipeline_config_path)
        path = path if path.is_absolute() else base_dir / path
        try:
            own = ctr_config.dump_config(ctr_config.load_config(path))
        except FusionrecError as error:
            raise FusionrecError(f"{where}.pipeline_config_path: {error}") from None
    else:
        own = {}
    # sections given in the pipeline replace those of the EasyRec file
    own.update({name: getattr(section, attr).model_dump(mode="json", by_alias=True, exclude_none=True)
                for name, attr in (("model_config", "model_config_"), ("train_config", "train_config"),
                                   ("eval_config", "eval_config"), ("export_config", "export_config"))
                if getattr(section, attr) is not None})  # fmt: skip
    merged = {key: own[key] for key in MODEL_SECTIONS if key in own}
    data = spec.data.model_dump(mode="json", by_alias=True, exclude_none=True)
    data_config = data["data_config"]
    data_config["input_fields"] = data_config["input_fields"] + list(extra_fields)
    merged["data_config"] = data_config
    merged["feature_configs"] = data.get("feature_configs", []) + list(extra_features)
    if "feature_config" in data:
        merged["feature_config"] = data["feature_config"]
    if section.edit_config_json:
        # a model may change how it trains (its train_config, its epochs and batches), not what the rows are
        bad = sorted(k for k in section.edit_config_json if not (k.split(".")[0] in MODEL_SECTIONS or k in DATA_TRAINING_KNOBS))
        if bad:
            raise FusionrecError(f"{where}.edit_config_json: {bad} change the pipeline's data; a model may edit "
                                 f"{list(MODEL_SECTIONS)} and {list(DATA_TRAINING_KNOBS)}")  # fmt: skip
        ctr_config.apply_edits(merged, json.dumps(section.edit_config_json))
    task = ctr_config.config_from_dict(merged, where)
    if task.model_config_.task.kind != "binary":
        raise FusionrecError(f"{where}: the pipeline fuses click models; this model is {task.model_config_.task.kind}")
    if task.model_config_.towers:
        raise FusionrecError(f"{where}: {task.model_config_.model_class} is a multi-task model; the pipeline fuses one click "
                             "score per model, and a multi-task member is not supported yet")  # fmt: skip
    return task

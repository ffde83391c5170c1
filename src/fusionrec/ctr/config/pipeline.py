"""The whole pipeline config (EasyRec's EasyRecConfig) and the rules between its parts."""

from __future__ import annotations

from pydantic import ConfigDict, Field, model_validator

from fusionrec.ctr.config._base import ConfigRefError, _Strict
from fusionrec.ctr.config.data import DataConfig
from fusionrec.ctr.config.feature_types import FEATURE_TYPE_RULES
from fusionrec.ctr.config.features import (
    FeatureConfig,
    FeatureConfigV2,
    check_feature_inputs,
    expand_features,
    kv_maps,
    located_features,
    number_lists,
    vector_inputs,
)
from fusionrec.ctr.config.metrics import TASK_METRICS, MetricGroup
from fusionrec.ctr.config.model_config import ModelConfig
from fusionrec.ctr.config.models import SeqAttGroupConfig
from fusionrec.ctr.config.train import EvalConfig, ExportConfig, TrainConfig
from fusionrec.ctr.tasks import MULTICLASS, REGRESSION, ZILN, Task


class PipelineConfig(_Strict):
    train_input_path: str | None = None
    eval_input_path: str | None = None
    model_dir: str | None = None
    train_config: TrainConfig = TrainConfig()
    eval_config: EvalConfig = EvalConfig()
    data_config: DataConfig
    feature_configs: list[FeatureConfig] = []
    feature_config: FeatureConfigV2 | None = None
    model_config_: ModelConfig = Field(alias="model_config")
    export_config: ExportConfig = ExportConfig()

    parquet_train_input: str | None = None  # ParquetInputV2's paths: the same as train_input_path here
    parquet_eval_input: str | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True, protected_namespaces=(),
                              allow_inf_nan=False)  # fmt: skip

    @property
    def features(self) -> list[FeatureConfig]:
        """Every feature, those that ``shared_names`` stands for included."""
        return expand_features(self.feature_configs, self.feature_config)

    def head_labels(self) -> dict[str, str]:
        """The label field each output head learns: a task tower's ``label_name``, else the
        label_fields entry at the tower's position (EasyRec's MultiTaskModel); a one-task
        model's heads all learn the first label field."""
        labels = self.data_config.label_fields
        towers = self.model_config_.towers
        if not towers:
            return {suffix: labels[0] for suffix in self.model_config_.head_suffixes}
        out = {}
        for i, tower in enumerate(towers):
            if tower.label_name is not None:
                out["_" + tower.tower_name] = tower.label_name
            elif i < len(labels):
                out["_" + tower.tower_name] = labels[i]
            else:
                raise ValueError(
                    f"task tower {tower.tower_name!r} (number {i + 1}) sets no label_name and data_config.label_fields "
                    f"has only {len(labels)} entries ({labels}); EasyRec matches such towers to labels by position"
                )
        return out

    def label_tasks(self) -> dict[str, Task]:
        """The task each label field is checked against when read: the task of the heads that
        learn it; a label no head learns (a task_space_indicator_label) is any finite number."""
        tasks = self.model_config_.head_tasks
        by_label = {label: tasks[suffix] for suffix, label in self.head_labels().items()}
        return {label: by_label.get(label, Task(REGRESSION)) for label in self.data_config.label_fields}

    def metric_groups(self) -> list[MetricGroup]:
        """What evaluation computes (``fusionrec.ctr.trainer.Trainer.evaluate``): a one-task
        model's eval_config.metrics_set on each head; a multi-task model's tower metrics_set on
        its tower (EasyRec's MultiTaskModel reads those, not eval_config's)."""
        model = self.model_config_
        labels = self.head_labels()
        towers = model.towers
        if not towers:
            metrics = tuple(self.eval_config.metrics_set)
            return [MetricGroup(suffix, metrics, model.task, suffix, labels[suffix]) for suffix in model.head_suffixes]
        groups = []
        for tower in towers:
            suffix = "_" + tower.tower_name
            metrics = tuple(tower.metrics_set)
            if model.model_class == "ESMM" and tower is model.esmm.cvr_tower:
                ctr = "_" + model.esmm.ctr_tower.tower_name
                groups.append(MetricGroup("_ctcvr", metrics, tower.task, suffix, labels[suffix], times_head=ctr,
                                          times_label=labels[ctr]))  # fmt: skip
                groups.append(MetricGroup(suffix + "_masked", metrics, tower.task, suffix, labels[suffix],
                                          only_positive=labels[ctr]))  # fmt: skip
            else:
                groups.append(MetricGroup(suffix, metrics, tower.task, suffix, labels[suffix]))
        return groups

    def metric_names(self) -> list[str]:
        """Every metric evaluation reports (logloss or mean_squared_error always), by EasyRec's name."""
        names = []
        for group in self.metric_groups():
            always = "mean_squared_error" if group.task.kind in (REGRESSION, ZILN) else "logloss"
            names += [name + group.suffix for name in sorted({always} | {m.name for m in group.metrics})]
        return names

    def parallel_lists(self) -> list[list[tuple[str, str]]]:
        """(input field, separator) of the ``hist_seq`` lists of each sequence group that has
        several: DIN and BST read them as parallel lists, so each row must give them equal lengths."""
        by_name = {f.name: f for f in self.features}
        model = self.model_config_
        seq_groups = [g for group in model.feature_groups for g in group.sequence_features] + list(model.seq_att_groups)
        out = []
        for seq_group in seq_groups:  # EasyRec concatenates the hist_seq of every seq_att_map of a group
            hists = [name for att in seq_group.seq_att_map for name in att.hist_seq + att.aux_hist_seq]
            if len(hists) > 1:
                out.append([(by_name[n].input_names[0], by_name[n].separator) for n in hists])
        if model.backbone is not None:  # a backbone's sequence input concatenates its group's sequences per position
            groups = {g.group_name: g for g in model.feature_groups}
            for block in model.backbone.blocks:
                if block.input_layer is not None and block.input_layer.output_seq_and_normal_feature:
                    group = groups.get(block.inputs[0].feature_group_name)
                    sequences = [n for n in (group.feature_names if group else [])
                                 if n in by_name and by_name[n].rules.sequence]  # fmt: skip
                    if len(sequences) > 1:
                        out.append([(by_name[n].input_names[0], by_name[n].separator) for n in sequences])
        return out

    def kv_maps(self) -> dict[str, tuple[str, str, bool]]:
        """``features.kv_maps`` of this config's features."""
        return kv_maps(self.features)

    def number_lists(self) -> dict[str, tuple[str, str, int]]:
        """``features.number_lists`` of this config's features."""
        return number_lists(self.features)

    def vector_inputs(self) -> dict[str, tuple[int, str]]:
        """``features.vector_inputs`` of this config's features."""
        return vector_inputs(self.features)

    @model_validator(mode="before")
    @classmethod
    def _parquet_paths(cls, data):
        if isinstance(data, dict):
            for stage in ("train", "eval"):
                if data.get(f"parquet_{stage}_input") and not data.get(f"{stage}_input_path"):
                    data = {**data, f"{stage}_input_path": data[f"parquet_{stage}_input"]}
        return data

    @model_validator(mode="after")
    def _cross(self):
        fields = {f.input_name: f for f in self.data_config.input_fields}
        located = located_features(self.feature_configs, self.feature_config)
        names = check_feature_inputs(located, fields, self.data_config.label_fields)
        types = {name: field.input_type for name, field in fields.items()}
        for loc, feature in located:  # each type's rules on the input fields it reads
            broken = FEATURE_TYPE_RULES[feature.feature_type].check_inputs(feature, types)
            if broken is not None:
                raise ConfigRefError(loc, broken)
        model = self.model_config_
        for g, group in enumerate(model.feature_groups):
            for j, name in enumerate(group.feature_names):
                if name not in names:
                    raise ConfigRefError(("model_config", "feature_groups", g, "feature_names", j),
                                         f"feature_groups {group.group_name!r}: feature {name!r} is not in feature_configs")  # fmt: skip
            for k, seq_group in enumerate(group.sequence_features):
                _check_seq_group(seq_group, names, f"feature_groups {group.group_name!r}", ("model_config", "feature_groups", g, "sequence_features", k))
        for k, seq_group in enumerate(model.seq_att_groups):
            _check_seq_group(seq_group, names, "seq_att_groups", ("model_config", "seq_att_groups", k))
        if len(self.train_config.optimizer_config) == 3 and model.model_class != "WideAndDeep":
            raise ValueError(
                "train_config.optimizer_config: three optimizers (WIDE tables / other tables / the rest) are for "
                f"WideAndDeep only, as in EasyRec; {model.model_class} takes one or two (embedding tables / the rest)"
            )
        head_labels = self.head_labels()
        for suffix, label in head_labels.items():
            if label not in self.data_config.label_fields:
                raise ValueError(f"task tower {suffix[1:]!r}: label_name {label!r} is not one of data_config.label_fields "
                                 f"{self.data_config.label_fields}")  # fmt: skip
        for tower in model.towers:
            indicator = tower.task_space_indicator_label
            if indicator is not None and indicator not in self.data_config.label_fields:
                raise ValueError(f"task tower {tower.tower_name!r}: task_space_indicator_label {indicator!r} is not one of "
                                 f"data_config.label_fields {self.data_config.label_fields}")  # fmt: skip
        task = model.task
        # a multi-task model is evaluated on its towers' metrics_set (see metric_groups)
        for metric in self.eval_config.metrics_set if not model.towers else []:
            # EasyRec computes the AUCs of a two-class softmax model on the second class's probability
            two_class = ("auc", "gauc", "session_auc") if task.kind == MULTICLASS and task.n_classes == 2 else ()
            if metric.name not in TASK_METRICS[task.kind] + two_class:
                raise ValueError(
                    f"eval_config.metrics_set: {metric.name} is not a metric of a {task.kind} model "
                    f"(loss_type {model.loss_type}, num_class {model.num_class}); it has {list(TASK_METRICS[task.kind])}"
                )
        for group in self.metric_groups():
            for metric in group.metrics:
                field = metric.gauc.uid_field if metric.gauc else metric.session_auc.session_id_field if metric.session_auc else None
                if field is not None and field not in fields:
                    raise ValueError(f"metrics_set: field {field!r} is not an input_field")
        for where, entries in [("model_config", model.losses)] + [(f"task tower {t.tower_name!r}", t.losses) for t in model.towers]:
            for entry in entries:
                if entry.jrc_loss is not None and entry.jrc_loss.session_name not in fields:
                    raise ValueError(f"{where}: jrc_loss.session_name {entry.jrc_loss.session_name!r} is not an input_field; "
                                     "JRC_LOSS groups the rows of a batch into sessions by its values")  # fmt: skip
        export = self.export_config
        if export.exporter_type == "best" or export.enable_early_stop:
            names = self.metric_names()
            if export.best_exporter_metric not in names:
                raise ValueError(
                    f"export_config.best_exporter_metric {export.best_exporter_metric!r} is not computed by this "
                    f"eval_config.metrics_set (it computes {names}); the best export and early stop compare it"
                )
        return self


def _check_seq_group(seq_group: SeqAttGroupConfig, names: set[str], where: str, loc: tuple) -> None:
    for m, att in enumerate(seq_group.seq_att_map):
        for name in att.key + att.hist_seq + att.aux_hist_seq:
            if name not in names:
                raise ConfigRefError(loc + ("seq_att_map", m), f"{where} seq_att_map: feature {name!r} is not in feature_configs")

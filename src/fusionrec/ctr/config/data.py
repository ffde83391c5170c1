"""``data_config``: EasyRec's DatasetConfig (input fields, labels, the input type)."""

from __future__ import annotations

from pydantic import Field, model_validator

from fusionrec.ctr.config._base import FieldType, _Strict, expand_range_name


class InputField(_Strict):
    input_name: str
    input_type: FieldType = "STRING"
    default_val: str | None = None


# EasyRec's input types that fusionrec reads: the V2 variants read the same files (their
# differences are TensorFlow's readers).
INPUT_TYPES = frozenset({"CSVInput", "CSVInputV2", "ParquetInput", "ParquetInputV2"})


class DataConfig(_Strict):
    batch_size: int = Field(32, ge=1)
    input_fields: list[InputField] = Field(min_length=1)
    label_fields: list[str] = Field(min_length=1)
    shuffle: bool = True
    shuffle_buffer_size: int = Field(32, ge=1)
    num_epochs: int = Field(0, ge=0)
    prefetch_size: int = Field(32, ge=1)  # no effect: batches are read between training steps
    input_type: str = "CSVInput"
    separator: str = ","
    num_parallel_calls: int = 8
    ignore_error: bool = False
    with_header: bool = False
    sample_weight: str | None = None
    shard: bool = False
    chief_redundant: bool = False
    pai_worker_queue: bool = False
    auto_expand_input_fields: bool = False

    @model_validator(mode="after")
    def _names(self):
        if self.auto_expand_input_fields:
            expanded = [f.model_copy(update={"input_name": n}) for f in self.input_fields for n in expand_range_name(f.input_name)]
            if len(expanded) != len(self.input_fields):
                object.__setattr__(self, "input_fields", expanded)
        names = [f.input_name for f in self.input_fields]
        seen = set()
        for name in names:
            if name in seen:
                raise ValueError(f"input_fields: input_name {name!r} appears twice; names must be unique")
            seen.add(name)
        for label in self.label_fields:
            if label not in seen:
                raise ValueError(f"label_fields: {label!r} is not one of the input_fields {names}")
        if self.sample_weight and self.sample_weight not in seen:
            raise ValueError(f"sample_weight: {self.sample_weight!r} is not one of the input_fields")
        if len(self.separator) != 1:
            raise ValueError(f"separator: {self.separator!r} must be one character")
        if self.input_type not in INPUT_TYPES:
            raise ValueError(
                f"input_type {self.input_type!r} is not implemented yet by fusionrec; it reads {sorted(INPUT_TYPES)}"
            )
        return self

    @property
    def is_parquet(self) -> bool:
        return self.input_type in ("ParquetInput", "ParquetInputV2")

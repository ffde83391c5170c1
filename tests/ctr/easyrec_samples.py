"""Run one of EasyRec's sample configs end to end on small generated data.

The data follows the config: one column per ``input_fields`` entry, values of the declared
type, the tokens of multi-value features joined by their separator, the parallel history
lists of each sequence group of equal length per row, ids both inside and outside
``num_buckets`` and the vocabularies, empty lists, and the declared field separator (EasyRec
samples use ``\\001``). Only the paths, ``num_steps``, the batch size and tables above
MAX_TABLE_ROWS rows of the config change.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fusionrec.ctr.config import config_from_dict, dump_config, load_config
from fusionrec.ctr.export import export, predict
from fusionrec.ctr.trainer import Trainer

N_ROWS = 48


def sample_columns(config, rng: np.random.Generator, vocab_files: dict[str, list[str]]) -> dict[str, list]:
    data = config.data_config
    by_input: dict[str, object] = {}
    for feature in config.features:
        for name in feature.input_names:
            by_input.setdefault(name, feature)
    parallel = {name: i for i, group in enumerate(config.parallel_lists()) for name, _ in group}
    group_lengths = {i: rng.integers(0, 6, N_ROWS) for i in set(parallel.values())}
    columns: dict[str, list] = {}
    for field in data.input_fields:
        name, kind = field.input_name, field.input_type
        feature = by_input.get(name)
        if name in data.label_fields:
            task = config.label_tasks()[name]
            if task.kind == "regression" and not task.squash and kind in ("FLOAT", "DOUBLE"):
                columns[name] = [float(v) for v in rng.normal(2.0, 3.0, N_ROWS)]
                continue
            values = rng.integers(0, task.n_classes if task.kind == "multiclass" else 2, N_ROWS)
            columns[name] = [float(v) if kind in ("FLOAT", "DOUBLE") else int(v) for v in values]
            continue
        if kind in ("INT32", "INT64"):
            high = int(feature.num_buckets) + 5 if feature is not None and feature.num_buckets else 20
            columns[name] = [int(v) for v in rng.integers(-1, high, N_ROWS)]
        elif kind in ("FLOAT", "DOUBLE"):
            low, high = (feature.min_val, feature.max_val) if feature is not None and feature.max_val > feature.min_val else (0, 10)
            columns[name] = [float(v) for v in rng.uniform(low, high, N_ROWS)]
        elif kind == "BOOL":
            columns[name] = [bool(v) for v in rng.integers(0, 2, N_ROWS)]
        elif feature is not None and feature.feature_type == "LookupFeature" and name == feature.input_names[1]:
            keys = [f"k{k}" for k in range(8)]  # maps of key<kv>value entries over the key field's words
            columns[name] = [feature.separator.join(f"{k}{feature.kv_separator}v{rng.integers(0, 5)}" for k in rng.choice(keys, n))
                             for n in rng.integers(0, 5, N_ROWS)]  # fmt: skip
        elif feature is not None and feature.feature_type == "LookupFeature":
            columns[name] = [f"k{k}" for k in rng.integers(0, 10, N_ROWS)]
        elif feature is not None and feature.is_raw_sequence:  # a sequence of numbers, over the boundaries' range
            lengths = group_lengths[parallel[name]] if name in parallel else rng.integers(0, 6, N_ROWS)
            high = max(feature.boundaries) * 1.2 if feature.boundaries else (feature.max_val or 10.0)
            multi = feature.seq_multi_sep  # a position of 1-3 numbers joined by it
            columns[name] = [feature.separator.join(
                (multi or "").join(f"{v:.3f}" for v in rng.uniform(0, high, rng.integers(1, 4) if multi else 1))
                for _ in range(n)) for n in lengths]  # fmt: skip
        elif feature is not None and feature.feature_type == "RawFeature":  # raw_input_dim numbers in a string
            columns[name] = [feature.separator.join(f"{v:.4g}" for v in rng.normal(0, 1, feature.raw_input_dim))
                             for _ in range(N_ROWS)]  # fmt: skip
        else:
            vocab = list(feature.vocab_list) or vocab_files.get(name, []) if feature is not None else []
            words = (vocab + ["not_in_vocab"]) if vocab else [f"v{k}" for k in range(30)]
            if feature is not None and feature.feature_type == "TagFeature" and feature.kv_separator:  # key<kv>weight
                columns[name] = [feature.separator.join(f"{w}{feature.kv_separator}{rng.uniform(-1, 3):.3f}"
                                                        for w in rng.choice(words, n)) for n in rng.integers(0, 6, N_ROWS)]  # fmt: skip
            elif feature is not None and feature.feature_type in ("TagFeature", "SequenceFeature"):
                lengths = group_lengths[parallel[name]] if name in parallel else rng.integers(0, 6, N_ROWS)
                multi = getattr(feature, "seq_multi_sep", None)  # a position of 1-3 ids joined by it
                columns[name] = [feature.separator.join(
                    (multi or "").join(rng.choice(words, rng.integers(1, 4) if multi else 1)) for _ in range(n))
                    for n in lengths]  # fmt: skip
            else:
                columns[name] = [str(w) for w in rng.choice(words, N_ROWS)]
    return columns


def write_input(config, columns: dict[str, list], path: Path) -> Path:
    data = config.data_config
    names = [f.input_name for f in data.input_fields]
    if data.is_parquet:
        pq.write_table(pa.table({n: columns[n] for n in names}), path)
        return path

    def text(value) -> str:
        return ("true" if value else "false") if isinstance(value, bool) else str(value)

    lines = [data.separator.join(names)] if data.with_header else []
    lines += [data.separator.join(text(columns[n][i]) for n in names) for i in range(N_ROWS)]
    path.write_text("\n".join(lines) + "\n")
    return path


# Embedding tables above this many rows are cut to it: 48 generated rows cannot tell a larger
# table apart, and EasyRec's criteo configs (four tables of ~4M rows) would take 17 GB and a
# minute each.
MAX_TABLE_ROWS = 10_000


def sample_run(config_path: Path, tmp: Path) -> dict:
    """Train a few steps, evaluate, export and predict; the predict result."""
    config = load_config(config_path)
    raw = dump_config(config)
    vocab_files: dict[str, list[str]] = {}
    features = raw.get("feature_configs", []) + raw.get("feature_config", {}).get("features", [])
    capped = False
    for feature in features:
        for key in ("hash_bucket_size", "num_buckets"):
            if feature.get(key, 0) > MAX_TABLE_ROWS:
                feature[key], capped = MAX_TABLE_ROWS, True
    if capped:
        config = config_from_dict(raw, str(config_path))
        raw = dump_config(config)
        features = raw.get("feature_configs", []) + raw.get("feature_config", {}).get("features", [])
    for i, feature in enumerate(features):
        if feature.get("vocab_file"):
            words = [f"w{k}" for k in range(12)]
            vocab_path = tmp / f"vocab_{i}.txt"
            vocab_path.write_text("\n".join(words) + "\n")
            feature["vocab_file"] = str(vocab_path)
            vocab_files[feature["input_names"][0]] = words
    rng = np.random.default_rng(0)
    suffix = ".parquet" if config.data_config.is_parquet else ".csv"
    path = write_input(config, sample_columns(config, rng, vocab_files), tmp / f"data{suffix}")
    raw.update(train_input_path=str(path), eval_input_path=str(path), model_dir=str(tmp / "model"))
    raw.pop("parquet_train_input", None)
    raw.pop("parquet_eval_input", None)
    raw["train_config"].update(num_steps=3, save_checkpoints_steps=100, log_step_count_steps=100)
    raw["train_config"].pop("fine_tune_checkpoint", None)
    raw["data_config"].update(batch_size=16, num_epochs=0)
    config = config_from_dict(raw, str(config_path))
    trainer = Trainer(config, base_dir=str(tmp))
    report = trainer.train(progress=False)
    if report["steps"] != 3 or "eval" not in report:
        raise AssertionError(f"{config_path.name}: trained {report['steps']} steps, eval {'eval' in report}")
    export(trainer, tmp / "export")
    return predict(str(path), str(tmp / "pred.csv"), str(tmp / "export"))

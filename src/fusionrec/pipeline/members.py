"""The models of a pipeline: each kind fits on a typed table (``fit``, returning the fitted
member, with ``save`` writing its files into a directory) or is loaded from that directory
(``load``), and scores typed tables. A kind is one entry of ``MEMBER_KINDS``.

Directories hold plain files only: GBDT JSON models, the tree columns' encoder as JSON,
TorchScript exports of deep models (``fusionrec.ctr.export``); nothing is pickled. A fold's
fit is scored in memory and saves nothing: a deep model scores its held-out rows with the
eager module its export would script (TorchScript costs ~1.5 s per model).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from fusionrec._atomic import atomic_write_bytes, verify_sidecar
from fusionrec.ctr.config import InputField
from fusionrec.errors import FusionrecError
from fusionrec.pipeline.config import CTRSection, GBDTSection, ModelEntry, PipelineSpec, ctr_config_for
from fusionrec.pipeline.tabular import TabularEncoder, default_encodings

LEAF_FIELD = "gbdt_leaves"  # the input field a leaf-feature model's leaves arrive in
LEAF_SEPARATOR = "|"
LEAF_INPUT = InputField(input_name=LEAF_FIELD, input_type="STRING")


def label_values(table: pa.Table, label: str) -> np.ndarray:
    return table.column(label).to_numpy(zero_copy_only=False).astype(np.float64)


class FitContext:
    """What every fit needs besides its rows: the spec, the config's directory, a seed."""

    def __init__(self, spec: PipelineSpec, base_dir: Path, seed: int, quiet: bool = True):
        self.spec = spec
        self.base_dir = base_dir
        self.seed = seed
        self.quiet = quiet


SCORE_BATCH_ROWS = 16_384  # rows per forward pass when a whole file or fold is scored: a DIN's
# attention holds rows x history length x units activations at once, which for a 1,000,000-row
# held-out day exceeded this machine's 24 GB


class Rows:
    """Typed rows to score (``TableReader``'s table). Their torch columns, which every deep
    model reads, are made once, when the first of them asks."""

    def __init__(self, table: pa.Table, data_config):
        self.table = table
        self._data_config = data_config
        self._fields = [f for f in data_config.input_fields if f.input_name not in data_config.label_fields]
        self._columns: dict | None = None
        self._batches: dict[int, list[Rows]] = {}

    def batches(self, n_rows: int = SCORE_BATCH_ROWS) -> list["Rows"]:
        """These rows in consecutive slices of at most ``n_rows`` (made once, shared by every model)."""
        if self.table.num_rows <= n_rows:
            return [self]
        if n_rows not in self._batches:
            self._batches[n_rows] = [Rows(self.table.slice(start, n_rows), self._data_config) for start in range(0, self.table.num_rows, n_rows)]
        return self._batches[n_rows]

    @property
    def columns(self) -> dict:
        if self._columns is None:
            from fusionrec.ctr.data import table_to_columns

            self._columns = table_to_columns(self.table, self._fields)
        return self._columns


def score_rows(member, rows: Rows, counts: Counter, batch_rows: int = SCORE_BATCH_ROWS) -> np.ndarray:
    """``member``'s probabilities of ``rows``, scored ``batch_rows`` at a time (memory bounded by
    the batch, not the file); counts add up over the batches."""
    return np.concatenate([member.score(part, counts) for part in rows.batches(batch_rows)])


def write_json(path: Path, value) -> None:
    """Strict JSON (NaN, e.g. the GAUC of a set with no user of both classes, is written as null), atomically."""
    atomic_write_bytes(path, json.dumps(_finite(value), indent=1, allow_nan=False).encode())


def _finite(value):
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def read_json(path: Path):
    if not path.exists():
        raise FusionrecError(f"{path}: missing")
    raw = path.read_bytes()
    verify_sidecar(path, raw, "pipeline file")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FusionrecError(f"{path}: not valid JSON ({error})") from None


# ---------------------------------------------------------------- boosted trees
class TreesModel:
    """A boosted model and the encoder of its columns."""

    def __init__(self, encoder: TabularEncoder, booster):
        self.encoder = encoder
        self.booster = booster

    @classmethod
    def fit(cls, section: GBDTSection, ctx: FitContext, table: pa.Table, seed: int) -> "TreesModel":
        from fusionrec.gbdt import Dataset, train
        from fusionrec.gbdt.params import dataset_max_bin

        encodings = default_encodings(ctx.spec.data.data_config, ctx.spec.data.features, section.columns)
        separators = {name: separator for name, (_, separator) in encodings.items()}
        encoder = TabularEncoder(encodings, section.max_categories,
                                 matches=[(m.value, m.list, separators.get(m.list, "|")) for m in section.matches])  # fmt: skip
        params = {"objective": "binary:logistic", "seed": seed, **section.params}
        y = label_values(table, ctx.spec.data.label)
        if section.early_stopping_rounds:
            # early stopping watches a seeded tenth of the fit rows, never the held-out fold
            watch = np.random.default_rng(seed).random(table.num_rows) < 0.1
            fit_rows, watch_rows = pa.array(np.flatnonzero(~watch)), pa.array(np.flatnonzero(watch))
            dtrain = Dataset(encoder.fit_transform(table.take(fit_rows), y[fit_rows], seed), y[fit_rows],
                             feature_names=encoder.feature_names, max_bin=dataset_max_bin(params))  # fmt: skip
            dwatch = Dataset(encoder.transform(table.take(watch_rows)), y[watch_rows], reference=dtrain)
            booster = train(params, dtrain, section.num_boost_round, evals=[(dwatch, "watch")],
                            early_stopping_rounds=section.early_stopping_rounds)  # fmt: skip
        else:
            dtrain = Dataset(encoder.fit_transform(table, y, seed), y, feature_names=encoder.feature_names,
                             max_bin=dataset_max_bin(params))  # fmt: skip
            booster = train(params, dtrain, section.num_boost_round)
        return cls(encoder, booster)

    def save(self, directory: Path, prefix: str = "") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        write_json(directory / f"{prefix}encoder.json", self.encoder.state())
        self.booster.save_model(str(directory / f"{prefix}trees.json"))

    @classmethod
    def load(cls, directory: Path, prefix: str = "") -> "TreesModel":
        from fusionrec.gbdt import Booster

        encoder = TabularEncoder.from_state(read_json(directory / f"{prefix}encoder.json"), str(directory / f"{prefix}encoder.json"))
        return cls(encoder, Booster.load_model(str(directory / f"{prefix}trees.json")))

    def input_fields(self) -> set[str]:
        return {name for name, (kind, _) in self.encoder.encodings.items() if kind != "skip"}

    def matrix(self, table: pa.Table, counts: Counter | None = None) -> np.ndarray:
        return self.encoder.transform(table, counts)

    def proba(self, table: pa.Table, counts: Counter | None = None) -> np.ndarray:
        return np.asarray(self.booster.predict(self.matrix(table, counts)), dtype=np.float64)

    def leaves(self, table: pa.Table) -> np.ndarray:
        return np.asarray(self.booster.predict(self.matrix(table), pred_leaf=True))


class GBDTMember:
    kind = "gbdt"

    def __init__(self, trees: TreesModel):
        self.trees = trees

    @classmethod
    def fit(cls, entry: ModelEntry, ctx: FitContext, table: pa.Table, directory: Path, *, save: bool = True) -> "GBDTMember":
        trees = TreesModel.fit(entry.gbdt, ctx, table, ctx.seed)
        if save:
            trees.save(directory)
        return cls(trees)

    @classmethod
    def load(cls, directory: Path) -> "GBDTMember":
        return cls(TreesModel.load(directory))

    def input_fields(self) -> set[str]:
        return self.trees.input_fields()

    def score(self, rows: Rows, counts: Counter) -> np.ndarray:
        unseen = Counter()
        proba = self.trees.proba(rows.table, unseen)
        for name, n in unseen.items():
            counts[f"{name}.unseen_values"] += n
        return proba

    @staticmethod
    def files(directory: Path) -> list[Path]:
        return [directory / "encoder.json", directory / "trees.json"]


# ---------------------------------------------------------------- deep models
def _train_deep(config, ctx: FitContext, table: pa.Table, directory: Path, save: bool) -> "_DeepScorer":
    """Train an EasyRec model on ``table`` (written once as Parquet); with ``save`` export it
    to ``directory/export``. Returns the trained model's eager scorer."""
    from fusionrec.ctr.export import export, scoring_module
    from fusionrec.ctr.trainer import Trainer

    work = directory / "work"
    if work.exists():  # an interrupted fit of this (model, fold) starts again: its rows are the same
        shutil.rmtree(work)
    work.mkdir(parents=True)
    pq.write_table(table, work / "train.parquet")
    config = config.model_copy(update={"train_input_path": str(work / "train.parquet"), "eval_input_path": None,
                                       "model_dir": str(work / "model")})  # fmt: skip
    if config.export_config.exporter_type == "best" or config.export_config.enable_early_stop:
        raise FusionrecError(
            f"{directory.parent.name}: export_config exporter_type 'best' / enable_early_stop pick a checkpoint on eval "
            "data; in a pipeline a deep model's fold is scored out of fold, so it trains to num_steps and exports the last"
        )
    trainer = Trainer(config, work / "model", base_dir=str(ctx.base_dir), seed=ctx.seed)
    # no checkpoints: an interrupted fit starts again (above), so they would only be written, hashed and read back
    trainer.train(progress=not ctx.quiet, evaluate_at_checkpoints=False, save_checkpoints=False)
    if save:
        export(trainer, directory / "export", current=True)
    shutil.rmtree(work)
    return _DeepScorer(scoring_module(trainer), trainer.config)


class _DeepScorer:
    """A deep model's scores from raw columns: an export's TorchScript module, or the same
    module eager (``fusionrec.ctr.export.scoring_module``)."""

    def __init__(self, module, config):
        self.module, self.config = module, config

    @classmethod
    def load(cls, export_dir: Path) -> "_DeepScorer":
        from fusionrec.ctr.export import load_export

        # inside a pipeline export every file was checked against its sidecar by the scorer
        # (manifest.export_digest, which knows whether a missing one is accepted)
        return cls(*load_export(export_dir, require_checksums=False))

    def input_fields(self) -> set[str]:
        return {name for feature in self.config.features for name in feature.input_names} - {LEAF_FIELD}

    def proba(self, columns: dict, counts: Counter) -> np.ndarray:
        with torch.no_grad(), torch.jit.optimized_execution(False):
            named, feature_counts = self.module.outputs_with_counts(columns)
        for key, value in feature_counts.items():
            if int(value):
                counts[key] += int(value)
        return named["probs"].double().numpy()


class CTRMember:
    kind = "ctr"

    def __init__(self, deep: _DeepScorer):
        self.deep = deep

    @classmethod
    def fit(cls, entry: ModelEntry, ctx: FitContext, table: pa.Table, directory: Path, *, save: bool = True) -> "CTRMember":
        config = ctr_config_for(ctx.spec, entry.ctr, ctx.base_dir, f"models.{entry.name}.ctr")
        return cls(_train_deep(config, ctx, table, directory, save))

    @classmethod
    def load(cls, directory: Path) -> "CTRMember":
        return cls(_DeepScorer.load(directory / "export"))

    def input_fields(self) -> set[str]:
        return self.deep.input_fields()

    def score(self, rows: Rows, counts: Counter) -> np.ndarray:
        return self.deep.proba(rows.columns, counts)

    @staticmethod
    def files(directory: Path) -> list[Path]:
        return sorted(p for p in (directory / "export").iterdir() if p.is_file())


# ---------------------------------------------------------------- leaves as features
class LeafCoder:
    """Leaf ids as one integer token per (inner model, tree, leaf): model * n_trees * stride
    + tree * stride + node, written as decimal text (Arrow casts and joins them in C++)."""

    def __init__(self, n_trees: int, stride: int):
        self.n_trees, self.stride = n_trees, stride

    @classmethod
    def for_models(cls, boosters, n_trees: int | None) -> "LeafCoder":
        forests = [b.state().trees for b in boosters]
        stride = max(int(np.asarray(t.left).shape[0]) for trees in forests for t in trees)
        available = min(len(trees) for trees in forests)
        return cls(available if n_trees is None else min(n_trees, available), stride)

    def tokens(self, leaves: np.ndarray, model_id: int) -> pa.Array:
        """Each row's tokens joined by LEAF_SEPARATOR (the first ``n_trees`` trees)."""
        leaves = np.asarray(leaves[:, : self.n_trees], dtype=np.int64)
        n_rows = leaves.shape[0]
        ids = (model_id * self.n_trees + np.arange(self.n_trees))[None, :] * self.stride + leaves
        values = pc.cast(pa.array(ids.reshape(-1)), pa.string())
        lists = pa.ListArray.from_arrays(pa.array(np.arange(0, n_rows * self.n_trees + 1, self.n_trees, dtype=np.int32)), values)
        return pc.binary_join(lists, LEAF_SEPARATOR)

    def vocabulary(self, booster, model_id: int) -> list[str]:
        """Every token the booster's first ``n_trees`` trees can give."""
        out = []
        for t, tree in enumerate(booster.state().trees[: self.n_trees]):
            for node in np.flatnonzero(np.asarray(tree.left) < 0):
                out.append(str((model_id * self.n_trees + t) * self.stride + int(node)))
        return out


class LeafFeatureMember:
    """He et al. 2014 with out-of-fold leaves. The fit rows are cut into ``inner_folds``; trees
    fitted without part j give part j its leaves, tokens named by (model j, tree, leaf). The
    deep model learns a WIDE weight for each token from rows those trees never saw. A scored
    row gets the leaves of every inner model and the WIDE part averages over its tokens
    (combiner mean), so its scale is that of training: the mean over the inner models of each
    one's honest leaf weights (a bagged estimate)."""

    kind = "leaf_features"

    def __init__(self, trees: list[TreesModel], coder: LeafCoder, deep: _DeepScorer):
        self.trees, self.coder, self.deep = trees, coder, deep

    @classmethod
    def fit(cls, entry: ModelEntry, ctx: FitContext, table: pa.Table, directory: Path, *,
            save: bool = True) -> "LeafFeatureMember":  # fmt: skip
        section = entry.leaf_features
        trees_section = ctx.spec.model(section.trees).gbdt
        part = np.random.default_rng(ctx.seed).permutation(table.num_rows) % section.inner_folds
        inner = []
        for j in range(section.inner_folds):
            trees = TreesModel.fit(trees_section, ctx, table.filter(pa.array(part != j)), ctx.seed + j)
            if save:
                trees.save(directory, prefix=f"inner{j}_")
            inner.append(trees)
        coder = LeafCoder.for_models([t.booster for t in inner], section.n_trees)
        tokens = np.empty(table.num_rows, dtype=object)
        vocabulary: list[str] = []
        for j, trees in enumerate(inner):
            held = np.flatnonzero(part == j)
            tokens[held] = coder.tokens(trees.leaves(table.take(pa.array(held))), j).to_numpy(zero_copy_only=False)
            vocabulary += coder.vocabulary(trees.booster, j)
        config = leaf_ctr_config(ctx.spec, entry, ctx.base_dir, vocabulary)
        deep = _train_deep(config, ctx, table.append_column(LEAF_FIELD, pa.array(tokens, pa.string())), directory, save)
        if save:
            write_json(directory / "leaf_features.json", {"inner_folds": section.inner_folds, "n_trees": coder.n_trees,
                                                          "stride": coder.stride})  # fmt: skip
        return cls(inner, coder, deep)

    @classmethod
    def load(cls, directory: Path) -> "LeafFeatureMember":
        meta = read_json(directory / "leaf_features.json")
        trees = [TreesModel.load(directory, prefix=f"inner{j}_") for j in range(int(meta["inner_folds"]))]
        return cls(trees, LeafCoder(int(meta["n_trees"]), int(meta["stride"])), _DeepScorer.load(directory / "export"))

    def input_fields(self) -> set[str]:
        return self.deep.input_fields().union(*(t.input_fields() for t in self.trees))

    def score(self, rows: Rows, counts: Counter) -> np.ndarray:
        from fusionrec.ctr.data import table_to_columns

        pieces = [self.coder.tokens(t.leaves(rows.table), j) for j, t in enumerate(self.trees)]
        joined = pc.binary_join_element_wise(*pieces, LEAF_SEPARATOR) if len(pieces) > 1 else pieces[0]
        leaves = table_to_columns(pa.table({LEAF_FIELD: joined}), [LEAF_INPUT])
        return self.deep.proba({**rows.columns, **leaves}, counts)

    @staticmethod
    def files(directory: Path) -> list[Path]:
        inner = sorted(p for p in directory.glob("inner*_*.json"))
        return [directory / "leaf_features.json", *inner, *sorted(p for p in (directory / "export").iterdir() if p.is_file())]


def leaf_ctr_config(spec: PipelineSpec, entry: ModelEntry, base_dir: Path, vocabulary: list[str]):
    """The deep model's config with the leaves added: an input field, a TagFeature over the
    known leaf tokens (combiner mean) and that feature in the model's WIDE group."""
    section = entry.leaf_features
    where = f"models.{entry.name}.leaf_features.ctr"
    base = ctr_config_for(spec, section.ctr, base_dir, where)
    groups = base.model_config_.feature_groups
    wide = [g for g in groups if g.wide_deep == "WIDE"]
    if section.feature_group is not None:
        target = next((g for g in groups if g.group_name == section.feature_group), None)
        if target is None:
            raise FusionrecError(f"{where}: feature_group {section.feature_group!r} is not a feature group of the model "
                                 f"({[g.group_name for g in groups]})")  # fmt: skip
    elif len(wide) == 1:
        target = wide[0]
    else:
        raise FusionrecError(f"{where}: the model has {len(wide)} WIDE feature groups; name the one for the leaves with "
                             "leaf_features.feature_group")  # fmt: skip
    field = LEAF_INPUT.model_dump(mode="json", exclude_none=True)
    feature = {"input_names": [LEAF_FIELD], "feature_name": LEAF_FIELD, "feature_type": "TagFeature",
               "separator": LEAF_SEPARATOR, "vocab_list": vocabulary, "combiner": "mean",
               "embedding_dim": 16}  # fmt: skip
    model_config = base.model_config_.model_dump(mode="json", by_alias=True, exclude_none=True)
    for group in model_config["feature_groups"]:
        if group["group_name"] == target.group_name:
            group["feature_names"] = group["feature_names"] + [LEAF_FIELD]
    # the file's sections with the edits applied, and the edits again for the data_config knobs they may set
    section_with_leaves = CTRSection(model_config=model_config, train_config=base.train_config,
                                     eval_config=base.eval_config, export_config=base.export_config,
                                     edit_config_json=section.ctr.edit_config_json)  # fmt: skip
    return ctr_config_for(spec, section_with_leaves, base_dir, where, extra_fields=[field], extra_features=[feature])


MEMBER_KINDS = {member.kind: member for member in (GBDTMember, CTRMember, LeafFeatureMember)}


def load_member(kind: str, directory: Path):
    return MEMBER_KINDS[kind].load(directory)

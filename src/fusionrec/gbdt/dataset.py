"""``Dataset``: features binned once, with label, weight and schema.

Like XGBoost's ``QuantileDMatrix`` and LightGBM's ``Dataset``, binning happens once at
construction; training reads only the uint8 codes. An evaluation set built with
``reference=train_set`` reuses the training cuts. The raw feature matrix is kept by
reference (no copy when the input is already float32) for prediction and for continued
training with trees whose thresholds came from other cuts.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fusionrec.errors import FusionrecError
from fusionrec.gbdt.binning import apply_cuts, compute_cuts, pack_cuts
from fusionrec.gbdt.data import FeatureMatrix, check_feature_names, check_label, check_weight, group_pointer, to_feature_matrix
from fusionrec.gbdt.params import MAX_BIN, check_max_bin


class Dataset:
    """Binned training or evaluation data.

    Parameters
    ----------
    data : array-like, DataFrame (pandas/polars), pyarrow Table or scipy.sparse matrix
    label, weight : optional 1-D arrays with one value per row (with ``group`` / ``qid``,
        ``weight`` has one value per query group, as in XGBoost)
    group : query group sizes, in row order (learning to rank)
    qid : or one query id per row, sorted ascending
    max_bin : number of bins per feature, at most 256 (255 value bins + missing)
    reference : Dataset or Booster whose cuts to reuse (evaluation sets, continued training)
    feature_names : names to use when ``data`` has none
    bin_construct_sample_cnt : rows sampled to find the cuts (all rows when fewer)
    seed : seed of that row sample
    """

    def __init__(
        self,
        data: Any,
        label: Any = None,
        weight: Any = None,
        *,
        max_bin: int = MAX_BIN,
        reference: Any = None,
        feature_names: Sequence[str] | None = None,
        bin_construct_sample_cnt: int = 200_000,
        seed: int = 0,
        group: Any = None,
        qid: Any = None,
    ):
        check_max_bin(max_bin)
        matrix = data if isinstance(data, FeatureMatrix) else to_feature_matrix(data, "data")
        if feature_names is not None:
            feature_names = [str(n) for n in feature_names]
            if len(feature_names) != matrix.n_features:
                raise FusionrecError(
                    f"feature_names: {len(feature_names)} names given for {matrix.n_features} features"
                )
            if matrix.feature_names is not None and matrix.feature_names != feature_names:
                raise FusionrecError("feature_names: given while the data already has different column names")
            matrix.feature_names = feature_names
        self.raw = matrix
        self.label = None if label is None else check_label(label, matrix.n_rows, "label")
        self.group_ptr = group_pointer(group, qid, matrix.n_rows)
        self.group_weight = None
        if self.group_ptr is None:
            self.weight = check_weight(weight, matrix.n_rows, "weight")
        else:
            n_groups = self.group_ptr.shape[0] - 1
            if weight is not None and np.size(weight) != n_groups:
                raise FusionrecError(
                    f"weight: has {np.size(weight)} values but there are {n_groups} query groups "
                    "(with group / qid, weights are one per query group, as in XGBoost)"
                )
            self.group_weight = check_weight(weight, n_groups, "weight")
            self.weight = None if self.group_weight is None else np.repeat(self.group_weight, np.diff(self.group_ptr))
        if reference is not None:
            ref_names = reference.feature_names
            check_feature_names(ref_names, matrix.feature_names, reference.n_features, matrix.n_features, "data")
            if matrix.feature_names is None and ref_names is not None:
                matrix.feature_names = list(ref_names)
            self.cuts = list(reference.cuts)
            self.max_bin = reference.max_bin
        else:
            self.cuts = compute_cuts(matrix.values, self.weight, int(max_bin), int(bin_construct_sample_cnt), int(seed))
            self.max_bin = int(max_bin)
        self.cut_table, self.n_cuts = pack_cuts(self.cuts)
        self.codes = apply_cuts(matrix.values, self.cut_table, self.n_cuts)
        self._codes_by_feature: np.ndarray | None = None
        self._column_block = None
        self._values_by_feature: np.ndarray | None = None

    @property
    def codes_by_feature(self):
        """Column-major copy of the codes, made on first use by training: (n_features, n_rows)
        for dense data, a column-major SparseCodes (present entries only) for sparse data.

        Partitioning a node reads one feature of each of its rows; a contiguous column makes
        that a forward walk through memory instead of one cache miss per row.
        """
        if self._codes_by_feature is None:
            self._codes_by_feature = self.codes.by_feature() if self.raw.is_sparse else np.ascontiguousarray(self.codes.T)
        return self._codes_by_feature

    @property
    def column_block(self):
        """The sorted column block of the raw values (section 4.1), made on first use by
        ``tree_method="exact"`` / ``"approx"`` and kept: sorted once, reused by every tree."""
        if self._column_block is None:
            from fusionrec.gbdt.column_block import ColumnBlock

            self._column_block = ColumnBlock.from_values(self.raw.values)
        return self._column_block

    @property
    def values_by_feature(self) -> np.ndarray | None:
        """Feature-major float32 copy of dense raw values (routing rows by raw thresholds); None if sparse."""
        if self.raw.is_sparse:
            return None
        if self._values_by_feature is None:
            self._values_by_feature = np.ascontiguousarray(self.raw.values.T)
        return self._values_by_feature

    @property
    def n_rows(self) -> int:
        return self.raw.n_rows

    @property
    def n_features(self) -> int:
        return self.raw.n_features

    @property
    def feature_names(self) -> list[str] | None:
        return self.raw.feature_names

    @property
    def feature_types(self) -> list[str]:
        return self.raw.feature_types

    @property
    def n_bins_per_feature(self) -> np.ndarray:
        """Number of value bins of each feature (cuts + 1); the missing code is extra."""
        return (self.n_cuts + 1).astype(np.int32)

    def shares_cuts_with(self, other: Any) -> bool:
        if len(self.cuts) != len(other.cuts):
            return False
        return all(np.array_equal(a, b) for a, b in zip(self.cuts, other.cuts))

    def rebinned(self, reference: Any) -> "Dataset":
        """This data binned with ``reference``'s cuts (same label and weight)."""
        if self.group_ptr is not None:
            return Dataset(self.raw, self.label, self.group_weight, reference=reference, group=np.diff(self.group_ptr))
        return Dataset(self.raw, self.label, self.weight, reference=reference)

    def __repr__(self) -> str:
        return f"Dataset(n_rows={self.n_rows}, n_features={self.n_features}, max_bin={self.max_bin})"

"""Boosted trees on a Dask cluster: the public front end, named as ``xgboost.dask`` is.

``DaskDataset``, ``train``, ``predict``, ``DaskGBDTClassifier`` and ``DaskGBDTRegressor``
live in :mod:`fusionrec.gbdt.distributed.dask` beside the machinery they run on (the row
shards and the sharded training loop); this module is where users import them from.
"""

from fusionrec.gbdt.distributed.dask import DaskDataset, DaskGBDTClassifier, DaskGBDTRegressor, predict, train

__all__ = ["DaskDataset", "DaskGBDTClassifier", "DaskGBDTRegressor", "predict", "train"]

"""Training over rows split across processes: ``shard`` (one worker's rows, histograms and
margins), ``remote`` (the sharded data and the training loop that sums the shards'
histograms) and ``dask`` (both on a Dask cluster; users import it as ``fusionrec.gbdt.dask``)."""

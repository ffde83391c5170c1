"""Split finders, one per ``tree_method``: ``hist`` (gradient histograms of pre-binned codes),
``exact`` (every value, on the sorted column block), ``approx`` (weighted quantile sketch
candidates per tree or per node) and ``paged`` (hist over out-of-core pages). The grower asks
a finder for the best splits of a set of nodes and for which rows go left
(``fusionrec.gbdt.grower.SplitFinder``); ``fusionrec.gbdt.boosting`` picks the finder."""

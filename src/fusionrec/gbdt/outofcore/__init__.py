"""Out-of-core training data (Chen & Guestrin, KDD 2016, section 4.3): ``ExternalDataset``
sketches batches into bin edges, then writes binned, compressed pages that training reads
back one at a time (``fusionrec.gbdt.finders.paged``)."""

"""fusionrec: gradient-boosted trees, deep CTR models and model fusion behind one config."""

from fusionrec.errors import FusionrecError

__version__ = "0.1.0"

__all__ = ["FusionrecError", "__version__"]

"""The package's exception types.

Every error raised on bad user input derives from :class:`FusionrecError`, which is a
``ValueError`` so that code written against scikit-learn's conventions keeps working.
"""


class FusionrecError(ValueError):
    """Base class of every error fusionrec raises on bad input, parameters or files."""


class ModelFileError(FusionrecError):
    """A model file is missing, damaged, truncated, or written by a newer format."""


class DataTypeError(FusionrecError, TypeError):
    """Data of a type that cannot be used (strings in a numeric matrix, and the like).

    Also a ``TypeError``, which is what scikit-learn's conventions expect for such input.
    """

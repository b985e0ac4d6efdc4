"""What the data scan raises or warns about when a data root cannot be used as it is."""

from __future__ import annotations

__all__ = ["ClassMismatchError", "DataConflictError", "DataRootError", "DataWarning"]


class DataRootError(ValueError):
    """The data root is missing, empty or not in the expected layout."""


class ClassMismatchError(ValueError):
    """A val/test class folder has no counterpart in the training folder."""


class DataConflictError(ValueError):
    """One image would get two labels or two splits (links, hard links, case-variant names,
    a nested copy of the dataset); the message names both paths."""


class DataWarning(UserWarning):
    """Something in the data was dropped or is unusual, but training can go on."""

"""The one exception type for bad task data, and the command-line flag names its messages cite."""

from __future__ import annotations

# Command-line flags named in error messages. The CLI defines flags with these exact spellings, so a
# message such as "pass --label-column" is always actionable.
FLAG_DATA = "--data"
FLAG_EVAL_DATA = "--eval-data"
FLAG_TEXT_COLUMN = "--text-column"
FLAG_TEXT_PAIR_COLUMN = "--text-pair-column"
FLAG_LABEL_COLUMN = "--label-column"
FLAG_DATA_FORMAT = "--data-format"
FLAG_EVAL_SPLIT = "--eval-split"


class DataError(ValueError):
    """Task data that cannot be used as given.

    The message always says what is wrong (naming the file, split or column) and how to fix it.
    Subclasses ``ValueError`` so callers that only know the standard library can still catch it.
    """

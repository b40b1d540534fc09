"""Reading raw splits: local files (CSV, TSV, JSON Lines, TREC), the Hugging Face hub, in-memory data.

Everything here returns plain ``datasets.Dataset`` objects with the source's own columns; choosing
columns, mapping labels and validating is :mod:`rankrl.data.loading`'s job.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets

from rankrl.data.errors import FLAG_DATA, FLAG_DATA_FORMAT, FLAG_EVAL_DATA, FLAG_EVAL_SPLIT, DataError

FORMATS_BY_EXTENSION = {".csv": "csv", ".tsv": "tsv", ".jsonl": "json", ".json": "json"}
FORMATS = ("csv", "tsv", "json", "trec")
EVAL_SPLIT_NAMES = ("validation", "eval", "dev", "valid", "test")
"""Split names tried, in order, when a hub dataset or ``DatasetDict`` is given without an eval split."""

InMemory = datasets.Dataset | datasets.DatasetDict | Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]]


def looks_like_file(source: str | os.PathLike) -> bool:
    """Whether ``source`` names a local file (it exists, or it has a data file's extension)."""
    path = Path(source)
    return path.exists() or path.suffix.lower() in (*FORMATS_BY_EXTENSION, ".txt", ".train", ".test")


_TREC_LINE = re.compile(r"^[A-Z]{2,5}:[a-z]+ \S")


def _sniff_trec(path: Path) -> bool:
    """Whether the first line reads like TREC's ``COARSE:fine question`` (files named TREC.train, *.label)."""
    try:
        with path.open(encoding="latin-1") as handle:
            first = next((line for line in handle if line.strip()), "")
    except OSError:
        return False
    return bool(_TREC_LINE.match(first))


def detect_format(path: Path, data_format: str | None) -> str:
    """Return the file format: ``data_format`` if given, else from the file extension, else TREC by content.

    Raises:
        DataError: Unknown ``data_format`` or an extension with no known format.
    """
    if data_format is not None:
        if data_format not in FORMATS:
            raise DataError(
                f"unknown data format {data_format!r}; use {FLAG_DATA_FORMAT} with one of {', '.join(FORMATS)}"
            )
        return data_format
    if path.suffix.lower() in FORMATS_BY_EXTENSION:
        return FORMATS_BY_EXTENSION[path.suffix.lower()]
    if path.is_file() and _sniff_trec(path):
        return "trec"
    raise DataError(
        f"cannot tell the format of {str(path)!r} from its extension {path.suffix or '(none)'!r}; "
        f"supported extensions: {', '.join(FORMATS_BY_EXTENSION)} (and TREC's 'COARSE:fine question' lines under "
        f"any name). Rename the file or pass {FLAG_DATA_FORMAT} {{{','.join(FORMATS)}}} (load_task_data(..., "
        "data_format=...) from Python)"
    )


def _check_readable(path: Path, flag: str) -> None:
    if not path.exists():
        raise DataError(f"data file not found: {str(path)!r}; check the path given to {flag}")
    if path.is_dir():
        raise DataError(f"{str(path)!r} is a directory; point {flag} at a .csv, .tsv or .jsonl file")


def _has_rows(path: Path, data_format: str, encoding: str) -> bool:
    """Cheap emptiness check: a data row exists (CSV/TSV need one line beyond the header)."""
    needed = 2 if data_format in ("csv", "tsv") else 1
    found = 0
    with path.open(encoding=encoding, errors="replace") as handle:
        for line in handle:
            if line.strip() and line.strip() not in ("[]", "{}"):
                found += 1
                if found >= needed:
                    return True
    return False


def _unicode_error(err: BaseException) -> UnicodeDecodeError | None:
    """The ``UnicodeDecodeError`` somewhere in an exception's chain (the datasets builders wrap it)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, UnicodeDecodeError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def load_trec(path: str | os.PathLike, *, encoding: str = "iso-8859-1") -> datasets.Dataset:
    """Read a TREC question-classification file (``COARSE:fine question text`` per line).

    Args:
        path: The file, e.g. ``TREC.train``.
        encoding: The UIUC files are ISO-8859-1.

    Returns:
        A dataset with columns ``text``, ``label`` (the coarse class, e.g. ``NUM``) and ``fine_label``
        (e.g. ``NUM:dist``).

    Raises:
        DataError: Missing file or a line not in that format.
    """
    path = Path(path)
    _check_readable(path, FLAG_DATA)
    columns: dict[str, list[str]] = {"text": [], "label": [], "fine_label": []}
    with path.open(encoding=encoding) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            fine, _, text = line.strip().partition(" ")
            coarse, colon, _ = fine.partition(":")
            if not colon or not coarse or not text:
                raise DataError(
                    f"{str(path)!r} line {number} is not 'COARSE:fine question text': {line.strip()[:60]!r}; "
                    f"is this a TREC file? Otherwise pass {FLAG_DATA_FORMAT} csv, tsv or json"
                )
            columns["text"].append(text)
            columns["label"].append(coarse)
            columns["fine_label"].append(fine)
    return datasets.Dataset.from_dict(columns)


def load_file(
    path: str | os.PathLike,
    *,
    data_format: str | None = None,
    quoting: int | None = None,
    encoding: str | None = None,
    cache_dir: str | None = None,
    flag: str = FLAG_DATA,
) -> datasets.Dataset:
    """Read one local data file through ``datasets`` (so the result is Arrow-backed and cached).

    Args:
        path: A ``.csv``, ``.tsv``, ``.json`` or ``.jsonl`` file (or any name with ``data_format``).
        data_format: ``csv``, ``tsv``, ``json`` or ``trec``; ``None`` detects it from the extension.
        quoting: A ``csv.QUOTE_*`` constant. Defaults to ``QUOTE_NONE`` for TSV (GLUE files such as
            RTE contain stray quotes) and ``QUOTE_MINIMAL`` for CSV.
        encoding: Text encoding; ``None`` means UTF-8 (ISO-8859-1 for TREC).
        cache_dir: Where ``datasets`` keeps its Arrow cache (its default if ``None``).
        flag: The command-line flag that named this file, for error messages.

    Returns:
        The file's rows with its own column names. Empty fields stay empty strings (not null).

    Raises:
        DataError: Missing, empty or unreadable file, or unsupported extension.
    """
    path = Path(path)
    _check_readable(path, flag)
    fmt = detect_format(path, data_format)
    if fmt == "trec":
        return load_trec(path, encoding=encoding or "iso-8859-1")
    if not _has_rows(path, fmt, encoding or "utf-8"):
        raise DataError(
            f"{str(path)!r} has no data rows (empty file or header only); add examples or point {flag} at another file"
        )
    kwargs: dict[str, Any] = {}
    if fmt in ("csv", "tsv"):
        kwargs = {
            "delimiter": "\t" if fmt == "tsv" else ",",
            "quoting": quoting
            if quoting is not None
            else (csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL),
            # "NA", "null" or "none" in a sentence are words, not missing values.
            "keep_default_na": False,
        }
    if encoding is not None:
        kwargs["encoding"] = encoding
    builder = "json" if fmt == "json" else "csv"
    try:
        return datasets.load_dataset(
            builder, data_files={"train": str(path)}, split="train", cache_dir=cache_dir, **kwargs
        )
    except Exception as err:  # the builders raise many types (pandas, pyarrow, DatasetGenerationError)
        cause = err.__cause__ or err
        decode = _unicode_error(err)
        if decode is not None:
            raise DataError(
                f"{str(path)!r} is not {encoding or 'utf-8'} text ({decode.reason} at byte {decode.start}: "
                f"{decode.object[decode.start:decode.start + 1]!r}); pass its encoding with --encoding, e.g. "
                "--encoding latin-1 (or cp1252 for files saved by Windows programs)"
            ) from err
        raise DataError(
            f"could not read {str(path)!r} as {fmt}: {type(cause).__name__}: {cause}. Check that the file "
            f"really is {fmt} (or pass {FLAG_DATA_FORMAT}); for TSV with quote characters inside text, "
            f"keep quoting off (the default)"
        ) from err


def load_hub(
    name: str, *, config: str | None = None, cache_dir: str | None = None
) -> datasets.Dataset | datasets.DatasetDict:
    """Load a dataset from the Hugging Face hub (needs network, or a warm local cache).

    Args:
        name: Hub dataset id, e.g. ``"nyu-mll/glue"``.
        config: Dataset configuration, e.g. ``"sst2"``.
        cache_dir: Where ``datasets`` keeps its cache (its default if ``None``).

    Returns:
        All splits of the dataset (choose with :func:`pick_splits`).

    Raises:
        DataError: The hub cannot be reached or has no such dataset or config.
    """
    from rankrl.hub import hub_reachable, unreachable_note

    reachable = hub_reachable()
    try:
        if not reachable and not datasets.config.HF_HUB_OFFLINE:
            saved = datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE
            # The cache only: no retries against a hub that cannot answer.
            datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = True
            try:
                return datasets.load_dataset(name, config, cache_dir=cache_dir)
            finally:
                datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE = saved
        return datasets.load_dataset(name, config, cache_dir=cache_dir)
    except Exception as err:  # ConnectionError, DatasetNotFoundError, bad config ValueError, ...
        if not reachable:
            raise DataError(
                f"could not load {name!r}: it is not in the local datasets cache and {unreachable_note()}. "
                f"(No local file of that name exists either.) Hub loading needs network access (or a cached copy). "
                f"Without network, use local files: "
                f"{FLAG_DATA} train.tsv {FLAG_EVAL_DATA} dev.tsv, or a built-in task: {FLAG_DATA} synthetic:negation"
            ) from err
        raise DataError(
            f"could not load {name!r}{f' (config {config!r})' if config else ''} from the Hugging Face hub: "
            f"{type(err).__name__}: {err}. (No local file of that name exists either.) Hub loading needs network "
            f"access (or a cached copy) and an existing dataset id. Without network, use local files: "
            f"{FLAG_DATA} train.tsv {FLAG_EVAL_DATA} dev.tsv, "
            f"or a built-in task: {FLAG_DATA} synthetic:negation"
        ) from err


def pick_eval_split(
    splits: datasets.DatasetDict, eval_split: str | None, *, exclude: str | None, source: str
) -> datasets.Dataset | None:
    """Return ``splits[eval_split]``, or the first of :data:`EVAL_SPLIT_NAMES` present (not ``exclude``).

    Raises:
        DataError: ``eval_split`` is given but missing (the message lists the available splits).
    """
    if eval_split is not None:
        if eval_split not in splits:
            raise DataError(
                f"{source} has no split {eval_split!r}; available splits: {', '.join(splits)}; "
                f"choose one with {FLAG_EVAL_SPLIT}"
            )
        return splits[eval_split]
    for candidate in EVAL_SPLIT_NAMES:
        if candidate in splits and candidate != exclude:
            return splits[candidate]
    return None


def pick_splits(
    splits: datasets.DatasetDict, train_split: str, eval_split: str | None, *, source: str
) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """Choose the train split and, if there is one, the eval split of a ``DatasetDict``.

    Raises:
        DataError: A requested split does not exist (the message lists the available ones).
    """
    if train_split not in splits:
        raise DataError(
            f"{source} has no split {train_split!r}; available splits: {', '.join(splits)}; "
            f"name the train split with train_split"
        )
    return splits[train_split], pick_eval_split(splits, eval_split, exclude=train_split, source=source)


def from_memory(data: InMemory) -> datasets.Dataset | datasets.DatasetDict:
    """Turn in-memory data (a ``Dataset``, ``DatasetDict``, list of dicts or dict of lists) into ``datasets``.

    Raises:
        DataError: Data of another type, or rows that are not mappings.
    """
    if isinstance(data, (datasets.Dataset, datasets.DatasetDict)):
        return data
    if isinstance(data, Mapping):
        return datasets.Dataset.from_dict(dict(data))
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        if not all(isinstance(row, Mapping) for row in data):
            raise DataError(
                "in-memory data must be a list of dicts (one per example), e.g. [{'text': ..., 'label': ...}]"
            )
        return datasets.Dataset.from_list([dict(row) for row in data])
    raise DataError(
        f"cannot use data of type {type(data).__name__}; pass a file path, a hub name, 'synthetic:<task>', "
        "a datasets.Dataset/DatasetDict or a list of dicts"
    )

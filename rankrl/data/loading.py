"""Turn any supported data source into a validated :class:`TaskData` (train and eval splits, labels).

Sources (the ``data`` / ``eval_data`` arguments, mirroring ``--data`` / ``--eval-data``):

* ``"synthetic:<name>[?difficulty=0.7&n_train=..&n_eval=..&seed=..]"``: a built-in task
  (:mod:`rankrl.data.synthetic`); it makes its own eval split.
* a local ``.csv`` / ``.tsv`` / ``.json`` / ``.jsonl`` file (or any file with ``data_format``,
  including ``"trec"``);
* any other string: a Hugging Face hub dataset id (needs network), with ``hub_config``;
* a ``datasets.Dataset`` / ``DatasetDict``, a list of dicts or a dict of lists.

Labels are mapped to ids 0..K-1: strings in sorted order (or the order of ``label_names``), integers
kept when they already are 0..K-1 and remapped in sorted order otherwise. Without eval data a
stratified, seeded fraction of train is held out. Every problem raises one :class:`DataError` that
names what is wrong and how to fix it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from rankrl.data import sources
from rankrl.data.errors import (
    FLAG_DATA,
    FLAG_EVAL_DATA,
    FLAG_EVAL_SPLIT,
    FLAG_LABEL_COLUMN,
    FLAG_TEXT_COLUMN,
    FLAG_TEXT_PAIR_COLUMN,
    DataError,
)
from rankrl.data.labels import drop_invalid_labels, encode_labels
from rankrl.data.synthetic import is_synthetic_source, make_synthetic, parse_synthetic_source

TEXT_COLUMNS = ("text", "sentence", "sentence1", "premise", "question1", "question", "content", "review")
PAIR_COLUMNS = {
    "text": "text_pair",
    "sentence1": "sentence2",
    "premise": "hypothesis",
    "question1": "question2",
    "question": "sentence",
}
LABEL_COLUMNS = ("label", "labels", "class", "target", "category", "coarse_label")
"""Column names tried, in order, when the text / label column is not given. A pair column is
auto-detected only together with an auto-detected text column."""

Source = str | os.PathLike | sources.InMemory


@dataclass
class TaskData:
    """A text-classification task ready for tokenisation.

    Attributes:
        name: Human-readable source name (file stem, hub id, ``synthetic:<task>``).
        train: Train split: the text column(s) (strings) and the label column (``ClassLabel`` ids).
        eval: Eval split, same columns.
        text_column: Name of the first text column.
        text_pair_column: Name of the second text column, or ``None``.
        label_column: Name of the label column.
        label_names: Class names; id ``i`` is ``label_names[i]``.
        dropped: Rows left out for an empty label (``drop_invalid``).
    """

    name: str
    train: datasets.Dataset
    eval: datasets.Dataset
    text_column: str
    text_pair_column: str | None
    label_column: str
    label_names: list[str]
    dropped: int = 0

    @property
    def num_labels(self) -> int:
        """Number of classes."""
        return len(self.label_names)

    @property
    def is_pair(self) -> bool:
        """Whether examples have two texts."""
        return self.text_pair_column is not None

    def summary(self) -> str:
        """One line: name, split sizes, classes."""
        return (
            f"{self.name}: {len(self.train)} train / {len(self.eval)} eval, {self.num_labels} classes "
            f"({', '.join(self.label_names)}){', sentence pairs' if self.is_pair else ''}"
            + (f", {self.dropped} row(s) without a label dropped" if self.dropped else "")
        )


def load_task_data(
    data: Source,
    eval_data: Source | None = None,
    *,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    label_names: Sequence[str] | None = None,
    data_format: str | None = None,
    quoting: int | None = None,
    encoding: str | None = None,
    hub_config: str | None = None,
    train_split: str = "train",
    eval_split: str | None = None,
    eval_fraction: float = 0.1,
    seed: int = 0,
    max_train: int | None = None,
    max_eval: int | None = None,
    difficulty: float | None = None,
    n_train: int | None = None,
    n_eval: int | None = None,
    name: str | None = None,
    cache_dir: str | None = None,
    drop_invalid: bool = False,
) -> TaskData:
    """Load, validate and label-encode a task from any supported source (see the module docstring).

    Args:
        data: Train source.
        eval_data: Eval source; ``None`` uses the source's own eval split if it has one (hub,
            ``DatasetDict``, synthetic), else holds out ``eval_fraction`` of train.
        text_column: Text column; ``None`` tries :data:`TEXT_COLUMNS`.
        text_pair_column: Second text column for sentence-pair tasks.
        label_column: Label column; ``None`` tries :data:`LABEL_COLUMNS`.
        label_names: Class names: the id order for string labels, display names for integer labels.
        data_format: ``csv``, ``tsv``, ``json`` or ``trec`` for files whose extension does not say.
        quoting: ``csv.QUOTE_*`` for CSV/TSV files (TSV defaults to ``QUOTE_NONE``).
        encoding: File encoding.
        hub_config: Hub dataset configuration (e.g. ``"sst2"`` for ``"nyu-mll/glue"``).
        train_split: Train split name for hub datasets and ``DatasetDict``.
        eval_split: Eval split name for hub datasets and ``DatasetDict``.
        eval_fraction: Fraction of train held out when there is no eval data.
        seed: Seed for the held-out split and for subsampling (and synthetic generation).
        max_train: Keep at most this many train rows (seeded random subset).
        max_eval: Keep at most this many eval rows.
        difficulty: Synthetic tasks only; a ``?difficulty=`` in the source string takes precedence.
        n_train: Synthetic tasks only: number of train examples (source string takes precedence).
        n_eval: Synthetic tasks only: number of eval examples (source string takes precedence).
        name: Name for the task; derived from the source if ``None``.
        cache_dir: ``datasets`` cache directory for file and hub loading.
        drop_invalid: Leave out rows with an empty label (counted in ``TaskData.dropped``) instead of
            refusing them with their row numbers.

    Returns:
        The validated task.

    Raises:
        DataError: Missing file, unsupported extension, missing column, a single class, an empty
            split, eval labels unseen in train, unreachable hub, and similar problems.
    """
    if is_synthetic_source(data):
        if eval_data is not None:
            raise DataError(
                f"{data} generates its own eval split; drop {FLAG_EVAL_DATA} (size it with ?n_eval=...)"
            )
        task, params = parse_synthetic_source(str(data))
        options: dict[str, Any] = {
            "difficulty": difficulty,
            "n_train": n_train,
            "n_eval": n_eval,
            "seed": seed,
        }
        options = {key: value for key, value in options.items() if value is not None} | params
        splits = make_synthetic(task, **options)
        train, eval_ = splits["train"], splits["eval"]
    else:
        opts = _ReadOptions(data_format, quoting, encoding, hub_config, train_split, eval_split, cache_dir)
        train, eval_ = _resolve(data, "train", opts)
        if eval_data is not None:
            eval_, _ = _resolve(eval_data, "eval", opts)
    name = name or _source_name(data)

    _check_nonempty(train, "train", name, FLAG_DATA)
    if eval_ is not None:
        _check_nonempty(eval_, "eval", name, FLAG_EVAL_DATA)
    text_col, pair_col, label_col = _resolve_columns(train, text_column, text_pair_column, label_column, name)
    keep = [c for c in (text_col, pair_col, label_col) if c is not None]
    if eval_ is not None:
        missing = [c for c in keep if c not in eval_.column_names]
        if missing:
            raise DataError(
                f"eval data of {name} lacks column(s) {missing} that train has; eval columns: "
                f"{', '.join(eval_.column_names)}. Give both files the same header (or fix {FLAG_EVAL_DATA})"
            )
    train, dropped = drop_invalid_labels(train, label_col, "train", name, drop_invalid)
    if eval_ is not None:
        eval_, dropped_eval = drop_invalid_labels(eval_, label_col, "eval", name, drop_invalid)
        dropped += dropped_eval
    train, eval_, names = encode_labels(
        train.select_columns(keep),
        None if eval_ is None else eval_.select_columns(keep),
        text_columns=[c for c in (text_col, pair_col) if c is not None],
        label_column=label_col,
        label_names=label_names,
        source=name,
    )
    if eval_ is None:
        train, eval_ = _hold_out(train, label_col, eval_fraction, seed, name)
    train = _subsample(train, max_train, seed)
    eval_ = _subsample(eval_, max_eval, seed)
    return TaskData(name, train, eval_, text_col, pair_col, label_col, names, dropped=dropped)


@dataclass(frozen=True)
class _ReadOptions:
    data_format: str | None
    quoting: int | None
    encoding: str | None
    hub_config: str | None
    train_split: str
    eval_split: str | None
    cache_dir: str | None


def _resolve(
    source: Source, role: str, opts: _ReadOptions
) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """Read a source as ``(train, eval or None)``; for ``role="eval"`` the first element is the eval split."""
    if is_synthetic_source(source):
        raise DataError(f"{source} can only be given as {FLAG_DATA} (it generates its own eval split)")
    if isinstance(source, (str, os.PathLike)):
        if isinstance(source, os.PathLike) or sources.looks_like_file(source):
            ds = sources.load_file(
                source,
                data_format=opts.data_format,
                quoting=opts.quoting,
                encoding=opts.encoding,
                cache_dir=opts.cache_dir,
                flag=FLAG_DATA if role == "train" else FLAG_EVAL_DATA,
            )
            return ds, None
        splits = sources.load_hub(source, config=opts.hub_config, cache_dir=opts.cache_dir)
        label = f"hub dataset {source!r}"
    else:
        splits = sources.from_memory(source)
        label = "in-memory data"
    if isinstance(splits, datasets.Dataset):
        return splits, None
    if role == "train":
        return sources.pick_splits(splits, opts.train_split, opts.eval_split, source=label)
    eval_ = sources.pick_eval_split(splits, opts.eval_split, exclude=None, source=label)
    if eval_ is None:
        raise DataError(
            f"{label} given as eval data has no eval split (splits: {', '.join(splits)}); "
            f"name one with {FLAG_EVAL_SPLIT}"
        )
    return eval_, None


def _source_name(source: Source) -> str:
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if not sources.looks_like_file(text):
            return text  # hub id
        path = Path(text)
        return f"{path.parent.name}/{path.name}" if path.parent.name else path.name
    return "in-memory"


def _check_nonempty(ds: datasets.Dataset, split: str, name: str, flag: str) -> None:
    if len(ds) == 0:
        raise DataError(
            f"the {split} split of {name} is empty (0 rows); add examples or point {flag} at other data"
        )


def _pick(
    columns: Sequence[str], wanted: str | None, candidates: Sequence[str], what: str, flag: str, name: str
) -> str:
    available = ", ".join(columns)
    if wanted is not None:
        if wanted not in columns:
            raise DataError(
                f"{what} column {wanted!r} not found in {name}; available columns: {available}. "
                f"Pass the right one with {flag} <column>"
            )
        return wanted
    for candidate in candidates:
        if candidate in columns:
            return candidate
    raise DataError(
        f"no {what} column in {name} (looked for {', '.join(candidates)}); available columns: {available}. "
        f"Name it with {flag} <column>"
    )


def _resolve_columns(
    train: datasets.Dataset, text: str | None, pair: str | None, label: str | None, name: str
) -> tuple[str, str | None, str]:
    columns = train.column_names
    text_col = _pick(columns, text, TEXT_COLUMNS, "text", FLAG_TEXT_COLUMN, name)
    if pair is None and text is None and PAIR_COLUMNS.get(text_col) in columns:
        pair = PAIR_COLUMNS[text_col]
    pair_col = None if pair is None else _pick(columns, pair, (), "text pair", FLAG_TEXT_PAIR_COLUMN, name)
    label_col = _pick(columns, label, LABEL_COLUMNS, "label", FLAG_LABEL_COLUMN, name)
    chosen = [c for c in (text_col, pair_col, label_col) if c is not None]
    if len(set(chosen)) != len(chosen):
        raise DataError(
            f"the text, text pair and label columns of {name} must differ, got {chosen}; "
            f"set {FLAG_TEXT_COLUMN}, {FLAG_TEXT_PAIR_COLUMN} and {FLAG_LABEL_COLUMN} to different columns"
        )
    return text_col, pair_col, label_col


def _hold_out(
    train: datasets.Dataset, label_col: str, fraction: float, seed: int, name: str
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Split off a seeded, stratified (when possible) eval fraction of train."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"eval fraction must be in (0, 1), got {fraction}; or pass {FLAG_EVAL_DATA}")
    try:
        parts = train.train_test_split(test_size=fraction, seed=seed, stratify_by_column=label_col)
    except ValueError:  # a class too small to stratify, or too few rows
        try:
            parts = train.train_test_split(test_size=fraction, seed=seed)
        except ValueError as err:
            raise DataError(
                f"{name} has too few rows ({len(train)}) to hold out an eval split: {err}; pass {FLAG_EVAL_DATA}"
            ) from err
    held_train, held_eval = parts["train"], parts["test"]
    train_ids = set(held_train.unique(label_col))
    unseen = sorted(set(held_eval.unique(label_col)) - train_ids)
    if len(train_ids) < 2 or unseen:
        raise DataError(
            f"holding out {fraction:.0%} of {name} left classes missing from train "
            f"(train has {len(train_ids)} classes); add examples of rare classes or pass {FLAG_EVAL_DATA}"
        )
    return held_train, held_eval


def _subsample(ds: datasets.Dataset, limit: int | None, seed: int) -> datasets.Dataset:
    if limit is not None and limit < 1:
        raise DataError(f"row limits (max_train / max_eval) must be at least 1, got {limit}")
    if limit is None or len(ds) <= limit:
        return ds
    return ds.shuffle(seed=seed).select(range(limit))

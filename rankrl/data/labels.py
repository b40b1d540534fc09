"""Label mapping and per-split validation: label values to ids 0..K-1, null checks, class checks."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import datasets

from rankrl.data.errors import FLAG_DATA, FLAG_EVAL_DATA, FLAG_LABEL_COLUMN, FLAG_TEXT_COLUMN, DataError
from rankrl.data.progress import progress_for

_MAX_CLASSES = 1000


def _null_count(ds: datasets.Dataset, column: str) -> int:
    return ds.with_format("arrow")[column].null_count


def _check_nulls(ds: datasets.Dataset, columns: Sequence[str], split: str, source: str) -> None:
    for column in columns:
        nulls = _null_count(ds, column)
        if nulls:
            raise DataError(
                f"{nulls} row(s) of the {split} split of {source} have no value in column {column!r}; "
                f"remove or fill those rows (or check {FLAG_TEXT_COLUMN} / {FLAG_LABEL_COLUMN})"
            )


def invalid_label_rows(ds: datasets.Dataset, column: str) -> list[int]:
    """0-based indices of rows whose label is missing or a blank string (a CSV row with a missing last cell,
    a TSV line with an empty label)."""
    values = ds[column]
    return [i for i, value in enumerate(values) if value is None or (isinstance(value, str) and not value.strip())]


def drop_invalid_labels(ds: datasets.Dataset, column: str, split: str, source: str,
                        drop: bool) -> tuple[datasets.Dataset, int]:
    """Refuse rows without a label, naming them, or drop them (``drop``, ``--drop-invalid``) and count them.

    Row numbers are 1-based data rows (a header line is not counted), as a spreadsheet shows them below the
    header.
    """
    bad = invalid_label_rows(ds, column)
    if not bad:
        return ds, 0
    if not drop:
        shown = ", ".join(str(i + 1) for i in bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise DataError(
            f"{len(bad)} row(s) of the {split} split of {source} have an empty label in column {column!r} "
            f"(data rows {shown}, header not counted); fix them, or pass --drop-invalid to leave them out"
        )
    keep = sorted(set(range(len(ds))) - set(bad))
    return ds.select(keep), len(bad)


def _sort_key(value: Hashable) -> tuple[str, Hashable]:
    return (type(value).__name__, value)


def label_mapping(
    feature: datasets.features.features.FeatureType,
    train_values: set[Hashable],
    label_names: Sequence[str] | None,
    column: str,
    source: str,
) -> tuple[dict[Hashable, int], list[str]]:
    """Decide class names and the value-to-id mapping from the train split.

    Args:
        feature: The label column's feature in train (``ClassLabel`` keeps its own ids and names).
        train_values: Distinct label values in train.
        label_names: Optional names: the id order for string labels, display names otherwise.
        column: Label column name (for messages).
        source: Task name (for messages).

    Returns:
        ``(mapping from raw value to id, class names)``.

    Raises:
        DataError: Names that do not fit the labels, or a column that does not look like labels.
    """
    if isinstance(feature, datasets.ClassLabel):
        names = list(label_names) if label_names is not None else list(feature.names)
        if len(names) != feature.num_classes:
            raise DataError(
                f"{len(names)} label names given for {feature.num_classes} classes in {column!r} of {source}; "
                f"give exactly {feature.num_classes}: {feature.names}"
            )
        return {i: i for i in range(feature.num_classes)}, names
    if len(train_values) > _MAX_CLASSES:
        raise DataError(
            f"column {column!r} of {source} has {len(train_values)} distinct values: that looks like text or a "
            f"score, not class labels; pick the label column with {FLAG_LABEL_COLUMN}"
        )
    is_int = all(isinstance(v, int) and not isinstance(v, bool) for v in train_values)
    if label_names is not None:
        names = [str(n) for n in label_names]
        if len(set(names)) != len(names):
            raise DataError(f"label names must be unique, got {names}")
        if all(isinstance(v, str) for v in train_values):
            unknown = sorted(train_values - set(names))
            if unknown:
                raise DataError(
                    f"train labels {unknown} of {source} are not among the given label names {names}; "
                    f"add them to the label names or fix the data"
                )
            return {n: i for i, n in enumerate(names)}, names
        if is_int:
            outside = sorted(v for v in train_values if not 0 <= v < len(names))
            if outside:
                raise DataError(
                    f"integer labels {outside} of {source} have no name among {len(names)} label names; "
                    f"integer labels must be 0..{len(names) - 1} when label names are given"
                )
            return {i: i for i in range(len(names))}, names
        raise DataError(
            f"label names only apply to string or integer labels; column {column!r} of {source} has neither"
        )
    ordered = sorted(train_values, key=_sort_key)
    if is_int and ordered == list(range(len(ordered))):
        return {i: i for i in ordered}, [str(i) for i in ordered]
    return {value: i for i, value in enumerate(ordered)}, [str(v) for v in ordered]


def _decode_class_labels(ds: datasets.Dataset, column: str) -> datasets.Dataset:
    """Replace ``ClassLabel`` ids by their names (``-1``, "no label", becomes ``"-1"``)."""
    feature = ds.features[column]
    if not isinstance(feature, datasets.ClassLabel):
        return ds

    def decode(batch: dict[str, list]) -> dict[str, list]:
        return {column: [feature.int2str(v) if v >= 0 else str(v) for v in batch[column]]}

    features = ds.features.copy()
    features[column] = datasets.Value("string")
    with progress_for(len(ds)):
        return ds.map(decode, batched=True, features=features, desc="rankrl: decode labels")


def encode_labels(
    train: datasets.Dataset,
    eval_: datasets.Dataset | None,
    *,
    text_columns: Sequence[str],
    label_column: str,
    label_names: Sequence[str] | None,
    source: str,
) -> tuple[datasets.Dataset, datasets.Dataset | None, list[str]]:
    """Validate both splits and replace raw labels by ``ClassLabel`` ids (texts become strings).

    Returns:
        ``(train, eval or None, class names)``.

    Raises:
        DataError: Null texts or labels, fewer than two classes in train, eval labels unseen in train.
    """
    _check_nulls(train, [*text_columns, label_column], "train", source)
    if eval_ is not None:
        _check_nulls(eval_, [*text_columns, label_column], "eval", source)
        train_feature, eval_feature = train.features[label_column], eval_.features[label_column]
        if train_feature != eval_feature and (
            isinstance(train_feature, datasets.ClassLabel) or isinstance(eval_feature, datasets.ClassLabel)
        ):
            # Different label encodings in the two splits: compare them by name.
            if label_names is None and isinstance(train_feature, datasets.ClassLabel):
                label_names = train_feature.names
            train, eval_ = (
                _decode_class_labels(train, label_column),
                _decode_class_labels(eval_, label_column),
            )
    train_values = set(train.unique(label_column))
    if len(train_values) < 2:
        only = ", ".join(repr(v) for v in train_values)
        raise DataError(
            f"the train split of {source} has only one class ({only}) in column {label_column!r}; a classifier "
            f"needs at least two. Check {FLAG_LABEL_COLUMN}, or add examples of the other classes to {FLAG_DATA}"
        )
    mapping, names = label_mapping(
        train.features[label_column], train_values, label_names, label_column, source
    )
    if eval_ is not None:
        unseen = sorted(set(eval_.unique(label_column)) - train_values, key=_sort_key)
        if unseen:
            hint = (
                " (-1 marks an unlabelled split such as a GLUE test set)" if {-1, "-1"} & set(unseen) else ""
            )
            raise DataError(
                f"labels in eval not seen in train for {source}: {unseen}{hint}; a model cannot learn them. "
                f"Use an eval split whose labels all occur in train ({FLAG_EVAL_DATA}), or add them to train"
            )
    features = datasets.Features(
        {
            **{c: datasets.Value("string") for c in text_columns},
            label_column: datasets.ClassLabel(names=names),
        }
    )

    def encode(batch: dict[str, list]) -> dict[str, list]:
        out = {c: [v if isinstance(v, str) else str(v) for v in batch[c]] for c in text_columns}
        out[label_column] = [mapping[v] for v in batch[label_column]]
        return out

    def apply(ds: datasets.Dataset) -> datasets.Dataset:
        with progress_for(len(ds)):
            return ds.map(encode, batched=True, features=features, desc="rankrl: encode labels")

    return apply(train), (None if eval_ is None else apply(eval_)), names

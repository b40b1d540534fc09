"""Tokenisation of a :class:`~rankrl.data.loading.TaskData`, cached, and per-batch padding.

:func:`tokenize_task` runs one batched ``Dataset.map`` per split with truncation and *no* padding;
:func:`make_collator` pads each batch to its own longest row. Tokenised rows are plain lists
(``input_ids``, ``attention_mask``, ``token_type_ids`` when the tokenizer makes them, and ``labels``);
the collator turns a batch into padded ``torch`` tensors.

Caching happens at two levels. ``datasets`` stores ``map`` results next to file-backed datasets, keyed
by a deterministic fingerprint we pass (source fingerprint + tokenizer + settings), so a new process
re-uses them. Within a process, an LRU cache keyed the same way returns the very same tokenised
datasets, which matters because the RL environment resets (and re-requests its data) many times.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import datasets
from datasets.fingerprint import Hasher
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from rankrl.data.errors import DataError
from rankrl.data.loading import TaskData
from rankrl.data.progress import progress_for

MODEL_INPUTS = ("input_ids", "token_type_ids", "attention_mask")
_FORMAT_VERSION = 1  # bump when the tokenised layout changes, to invalidate on-disk map caches
_CACHE_SIZE = 16

_cache: OrderedDict[tuple, tuple[datasets.Dataset, datasets.Dataset]] = OrderedDict()
_stats = {"hits": 0, "misses": 0}
_tokenizer_hashes: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class CacheInfo:
    """Counters of the in-process tokenisation cache."""

    hits: int
    misses: int
    size: int


def tokenize_cache_info() -> CacheInfo:
    """Return hit / miss counts and the number of cached tasks."""
    return CacheInfo(hits=_stats["hits"], misses=_stats["misses"], size=len(_cache))


def clear_tokenize_cache() -> None:
    """Empty the in-process cache and reset its counters (on-disk ``datasets`` caches are kept)."""
    _cache.clear()
    _stats.update(hits=0, misses=0)


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A stable hash of a tokenizer (its full state), computed once per tokenizer object.

    The vocabulary size and truncation side are re-read on every call, so adding tokens to a tokenizer
    after its first use still changes the fingerprint.
    """
    try:
        base = _tokenizer_hashes.get(tokenizer)
        if base is None:
            base = _tokenizer_hashes.setdefault(tokenizer, Hasher.hash(tokenizer))
    except TypeError:  # not weak-referenceable or not hashable: hash every time
        base = Hasher.hash(tokenizer)
    return Hasher.hash((base, len(tokenizer), tokenizer.truncation_side))


def _tokenize_split(
    ds: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    task: TaskData,
    fingerprint: str,
) -> datasets.Dataset:
    text_col, pair_col, label_col = task.text_column, task.text_pair_column, task.label_column

    def encode(batch: dict[str, list]) -> dict[str, list]:
        encoded = tokenizer(
            batch[text_col],
            batch[pair_col] if pair_col is not None else None,
            truncation=True,
            max_length=max_length,
        )
        out = {name: encoded[name] for name in MODEL_INPUTS if name in encoded}
        out["labels"] = batch[label_col]
        return out

    with progress_for(len(ds)):
        return ds.map(
            encode,
            batched=True,
            remove_columns=ds.column_names,
            new_fingerprint=fingerprint,
            desc="rankrl: tokenize",
        )


def tokenize_task(
    task: TaskData, tokenizer: PreTrainedTokenizerBase, max_length: int = 128
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Tokenise both splits of a task (truncated to ``max_length``, unpadded), with caching.

    Args:
        task: The task (see :func:`rankrl.data.load_task_data`).
        tokenizer: A Hugging Face tokenizer.
        max_length: Maximum tokens per example, special tokens included; longer inputs are
            truncated (pairs: the longer text first).

    Returns:
        ``(train, eval)`` datasets with ``input_ids``, ``attention_mask``, ``token_type_ids`` (if the
        tokenizer produces them) and ``labels``. A repeated call with the same data, tokenizer and
        ``max_length`` returns the identical objects.

    Raises:
        DataError: ``max_length`` is not a positive integer.
    """
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
        raise DataError(f"max_length must be a positive integer, got {max_length!r}")
    settings = (
        _FORMAT_VERSION,
        tokenizer_fingerprint(tokenizer),
        max_length,
        task.text_column,
        task.text_pair_column,
        task.label_column,
    )
    key = (task.train._fingerprint, task.eval._fingerprint, *settings)
    if key in _cache:
        _stats["hits"] += 1
        _cache.move_to_end(key)
        return _cache[key]
    _stats["misses"] += 1
    result = (
        _tokenize_split(
            task.train, tokenizer, max_length, task, Hasher.hash((task.train._fingerprint, *settings))
        ),
        _tokenize_split(
            task.eval, tokenizer, max_length, task, Hasher.hash((task.eval._fingerprint, *settings))
        ),
    )
    _cache[key] = result
    while len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return result


def make_collator(
    tokenizer: PreTrainedTokenizerBase, pad_to_multiple_of: int | None = None
) -> DataCollatorWithPadding:
    """Return a collator that pads each batch to its longest row and returns ``torch`` tensors.

    Args:
        tokenizer: The tokenizer used by :func:`tokenize_task`.
        pad_to_multiple_of: Round the padded length up to a multiple of this (e.g. 8 for tensor cores).

    Raises:
        DataError: The tokenizer has no padding token.
    """
    if tokenizer.pad_token is None:
        raise DataError(
            f"tokenizer {tokenizer.name_or_path!r} has no padding token, so batches cannot be padded; "
            "set one first, e.g. tokenizer.pad_token = tokenizer.eos_token"
        )
    return DataCollatorWithPadding(
        tokenizer, padding="longest", pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt"
    )

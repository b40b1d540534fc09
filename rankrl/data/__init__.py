"""Task data for rankrl: synthetic tasks, file / hub / in-memory loading, tokenisation.

Typical use::

    from rankrl.data import load_task_data, tokenize_task, make_collator

    task = load_task_data("synthetic:negation?difficulty=0.7")          # or "train.tsv", eval_data="dev.tsv"
    train, eval_ = tokenize_task(task, tokenizer, max_length=64)
    collate = make_collator(tokenizer)
"""

from rankrl.data.errors import DataError
from rankrl.data.loading import TaskData, load_task_data
from rankrl.data.sources import load_trec
from rankrl.data.synthetic import (
    SYNTHETIC_PREFIX,
    TaskSpec,
    get_task,
    is_synthetic_source,
    list_tasks,
    make_synthetic,
    parse_synthetic_source,
    preview,
)
from rankrl.data.tokenize import (
    CacheInfo,
    clear_tokenize_cache,
    make_collator,
    tokenize_cache_info,
    tokenize_task,
    tokenizer_fingerprint,
)

__all__ = [
    "SYNTHETIC_PREFIX",
    "CacheInfo",
    "DataError",
    "TaskData",
    "TaskSpec",
    "clear_tokenize_cache",
    "get_task",
    "is_synthetic_source",
    "list_tasks",
    "load_task_data",
    "load_trec",
    "make_collator",
    "make_synthetic",
    "parse_synthetic_source",
    "preview",
    "tokenize_cache_info",
    "tokenize_task",
    "tokenizer_fingerprint",
]

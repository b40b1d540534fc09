"""Loading task data from files, memory and synthetic sources; validation errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import datasets
import pytest

from rankrl.data import DataError, TaskData, load_task_data, load_trec
from rankrl.data import sources as sources_module

PAIR_ROWS = [
    {"premise": "a dog ran, then it slept", "hypothesis": "the dog slept", "gold": "yes"},
    {"premise": 'she said "hello" twice', "hypothesis": "she was silent", "gold": "no"},
    {"premise": "the cat sat on the mat", "hypothesis": "a cat sat", "gold": "yes"},
    {"premise": "rain fell all day", "hypothesis": "it was dry", "gold": "no"},
    {"premise": "he bought bread", "hypothesis": "he bought food", "gold": "yes"},
    {"premise": "the shop was closed", "hypothesis": "the shop was open", "gold": "no"},
]


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _write_tsv(path: Path, rows: list[dict]) -> Path:
    """Plain TSV as GLUE ships it: no quoting at all, quote characters are literal."""
    lines = ["\t".join(rows[0])] + ["\t".join(str(v) for v in row.values()) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _sentiment_rows(n: int, labels=("neg", "pos")) -> list[dict]:
    return [{"sentence": f"sentence number {i}", "label": labels[i % len(labels)]} for i in range(n)]


def _assert_pair_task(task: TaskData, train_rows: list[dict], eval_rows: list[dict]) -> None:
    assert (task.text_column, task.text_pair_column, task.label_column) == ("premise", "hypothesis", "gold")
    assert task.label_names == ["no", "yes"]  # sorted string labels
    assert task.num_labels == 2 and task.is_pair
    assert task.train["premise"] == [r["premise"] for r in train_rows]
    assert task.train["hypothesis"] == [r["hypothesis"] for r in train_rows]
    assert task.train["gold"] == [task.label_names.index(r["gold"]) for r in train_rows]
    assert task.eval["gold"] == [task.label_names.index(r["gold"]) for r in eval_rows]
    assert isinstance(task.train.features["gold"], datasets.ClassLabel)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_file_round_trip_with_string_labels_and_pair_column(tmp_path, hf_cache, fmt):
    train_rows, eval_rows = PAIR_ROWS[:4], PAIR_ROWS[4:]
    writer = {"csv": _write_csv, "tsv": _write_tsv, "jsonl": _write_jsonl}[fmt]
    train = writer(tmp_path / f"train.{fmt}", train_rows)
    dev = writer(tmp_path / f"dev.{fmt}", eval_rows)
    task = load_task_data(
        str(train),
        str(dev),
        text_column="premise",
        text_pair_column="hypothesis",
        label_column="gold",
        cache_dir=hf_cache,
    )
    _assert_pair_task(task, train_rows, eval_rows)
    assert task.name == f"{tmp_path.name}/{train.name}"


def test_tsv_with_stray_quotes_reads_literally(tmp_path, hf_cache):
    path = tmp_path / "rte.tsv"
    path.write_text(
        'index\tsentence1\tsentence2\tlabel\n0\tHe said "no.\tHe spoke.\tentailment\n'
        '1\tNone of it "worked"\tNA\tnot_entailment\n',
        encoding="utf-8",
    )
    task = load_task_data(path, path, cache_dir=hf_cache)  # columns auto-detected, pair included
    assert (task.text_column, task.text_pair_column, task.label_column) == ("sentence1", "sentence2", "label")
    assert task.train["sentence1"] == ['He said "no.', 'None of it "worked"']
    assert task.train["sentence2"] == ["He spoke.", "NA"]  # "NA" is a word, not a missing value
    assert task.label_names == ["entailment", "not_entailment"]


def test_integer_labels_kept_or_remapped():
    contiguous = [{"text": f"t{i}", "label": i % 3} for i in range(9)]
    task = load_task_data(contiguous, contiguous)
    assert task.label_names == ["0", "1", "2"] and task.train["label"] == [r["label"] for r in contiguous]

    sparse = [{"text": f"t{i}", "label": [5, 1][i % 2]} for i in range(6)]
    task = load_task_data(sparse, sparse)
    assert task.label_names == ["1", "5"] and task.train["label"] == [1, 0, 1, 0, 1, 0]

    named = load_task_data(contiguous, contiguous, label_names=["low", "mid", "high"])
    assert named.label_names == ["low", "mid", "high"] and named.train["label"] == task_labels(contiguous)
    ordered = load_task_data(_sentiment_rows(4), _sentiment_rows(2), label_names=["pos", "neg"])
    assert ordered.train["label"] == [1, 0, 1, 0]


def task_labels(rows: list[dict]) -> list[int]:
    return [r["label"] for r in rows]


def test_in_memory_dataset_and_datasetdict():
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["b", "a"])}
    )
    train = datasets.Dataset.from_dict(
        {"text": ["x", "y", "z", "w"], "label": [0, 1, 0, 1]}, features=features
    )
    dev = datasets.Dataset.from_dict({"text": ["u", "v"], "label": [1, 0]}, features=features)
    task = load_task_data(datasets.DatasetDict({"train": train, "validation": dev}))
    assert task.label_names == ["b", "a"]  # ClassLabel order is kept, not re-sorted
    assert task.eval["text"] == ["u", "v"] and task.eval["label"] == [1, 0]

    mixed = load_task_data(train, [{"text": "q", "label": "a"}])  # eval by name, train by ClassLabel id
    assert mixed.label_names == ["b", "a"] and mixed.eval["label"] == [1]


def test_held_out_split_is_deterministic_and_stratified():
    rows = _sentiment_rows(100)
    first = load_task_data(rows, eval_fraction=0.2, seed=3)
    again = load_task_data(rows, eval_fraction=0.2, seed=3)
    other = load_task_data(rows, eval_fraction=0.2, seed=4)
    assert (len(first.train), len(first.eval)) == (80, 20)
    assert first.eval["sentence"] == again.eval["sentence"] != other.eval["sentence"]
    assert sorted(first.eval["label"]) == [0] * 10 + [1] * 10
    assert not set(first.train["sentence"]) & set(first.eval["sentence"])


def test_row_limits_subsample():
    task = load_task_data(_sentiment_rows(50), _sentiment_rows(30), max_train=10, max_eval=5, seed=1)
    assert (len(task.train), len(task.eval)) == (10, 5)


def test_synthetic_source_and_options():
    task = load_task_data("synthetic:pair?difficulty=0.8&n_train=60", n_eval=12, seed=2)
    assert task.name == "synthetic:pair?difficulty=0.8&n_train=60"
    assert (len(task.train), len(task.eval)) == (60, 12)
    assert (task.text_column, task.text_pair_column, task.label_column) == ("text", "text_pair", "label")
    assert task.label_names == ["not_entailment", "entailment"]
    easy = load_task_data("synthetic:pair", difficulty=0.0, n_train=60, n_eval=12, seed=2)
    assert easy.train["text"] != task.train["text"]
    with pytest.raises(DataError, match="generates its own eval split"):
        load_task_data("synthetic:pair", "dev.tsv")


def test_trec_format(tmp_path, hf_cache):
    path = tmp_path / "TREC.train"
    lines = [
        "NUM:dist How far is it to Aspen ?",
        "HUM:ind Who was Galileo ?",
        "LOC:city Where is Malmö ?",
        "",
    ]
    path.write_bytes("\n".join(lines).encode("iso-8859-1"))
    ds = load_trec(path)
    assert ds["label"] == ["NUM", "HUM", "LOC"]
    assert ds["fine_label"][0] == "NUM:dist" and ds["text"][2] == "Where is Malmö ?"
    task = load_task_data(path, path, data_format="trec", cache_dir=hf_cache)
    assert task.label_names == ["HUM", "LOC", "NUM"] and task.text_column == "text"
    bad = tmp_path / "bad.train"
    bad.write_text("not a trec line\n")
    with pytest.raises(DataError, match="line 1 is not 'COARSE:fine question text'"):
        load_trec(bad)


# --- one clear error per kind of bad input -----------------------------------------------------------------


def test_missing_file_names_path_and_flag(tmp_path):
    missing = tmp_path / "nope" / "train.tsv"
    with pytest.raises(DataError) as info:
        load_task_data(str(missing))
    assert str(missing) in str(info.value) and "--data" in str(info.value)
    good = _write_csv(tmp_path / "t.csv", _sentiment_rows(4))
    with pytest.raises(DataError, match="--eval-data"):
        load_task_data(good, tmp_path / "dev.csv")


def test_unsupported_extension_suggests_format_flag(tmp_path):
    path = tmp_path / "train.xlsx"
    path.write_text("whatever")
    with pytest.raises(DataError) as info:
        load_task_data(path)
    message = str(info.value)
    assert "'.xlsx'" in message and "data_format=" in message and ".tsv" in message


def test_trec_files_are_recognised_by_their_lines(tmp_path, hf_cache):
    lines = ["DESC:manner How did serfdom develop ?", "ENTY:cremat What films featured Dracula ?",
             "HUM:ind Who killed Gandhi ?", "LOC:city What is the capital of Peru ?"]
    path = tmp_path / "TREC.train"
    path.write_text("\n".join(lines * 3) + "\n", encoding="latin-1")
    task = load_task_data(path, path, cache_dir=hf_cache)
    assert task.num_labels == 4


def test_missing_column_lists_columns_and_flag(tmp_path, hf_cache):
    path = _write_csv(tmp_path / "t.csv", [{"body": "x", "y": "a"}, {"body": "z", "y": "b"}])
    with pytest.raises(DataError) as info:
        load_task_data(path, path, cache_dir=hf_cache)
    assert "no text column" in str(info.value) and "body, y" in str(info.value)
    assert "--text-column" in str(info.value)
    with pytest.raises(DataError) as info:
        load_task_data(path, path, text_column="body", label_column="gold", cache_dir=hf_cache)
    assert (
        "'gold'" in str(info.value) and "--label-column" in str(info.value) and "body, y" in str(info.value)
    )
    with pytest.raises(DataError, match="lacks column"):
        load_task_data(_sentiment_rows(4), [{"sentence": "s", "other": "neg"}])


def test_single_class_is_rejected():
    with pytest.raises(DataError) as info:
        load_task_data(_sentiment_rows(6, labels=("pos",)))
    assert "only one class ('pos')" in str(info.value) and "--label-column" in str(info.value)


def test_empty_split_is_rejected(tmp_path, hf_cache):
    header_only = tmp_path / "train.tsv"
    header_only.write_text("sentence\tlabel\n")
    with pytest.raises(DataError, match="no data rows") as info:
        load_task_data(header_only, cache_dir=hf_cache)
    assert str(header_only) in str(info.value)
    with pytest.raises(DataError, match="eval split of in-memory is empty"):
        load_task_data(_sentiment_rows(4), datasets.Dataset.from_dict({"sentence": [], "label": []}))


def test_eval_labels_unseen_in_train_are_listed():
    dev = _sentiment_rows(6, labels=("neg", "pos", "neutral", "mixed"))
    with pytest.raises(DataError) as info:
        load_task_data(_sentiment_rows(4), dev)
    assert "not seen in train" in str(info.value) and "['mixed', 'neutral']" in str(info.value)


def test_null_text_is_rejected():
    rows = [*_sentiment_rows(4), {"sentence": None, "label": "pos"}]
    with pytest.raises(DataError, match="1 row\\(s\\) of the train split .* column 'sentence'"):
        load_task_data(rows)


def test_label_column_that_is_really_text():
    rows = [{"text": "same", "label": f"unique {i}"} for i in range(1001)]
    with pytest.raises(DataError, match="looks like text or a score"):
        load_task_data(rows, rows[:5])


def test_hub_failure_explains_network_and_local_files(monkeypatch):
    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(sources_module.datasets, "load_dataset", unreachable)
    with pytest.raises(DataError) as info:
        load_task_data("nyu-mll/glue", hub_config="sst2")
    message = str(info.value)
    assert "needs network" in message and "--data train.tsv" in message and "synthetic:" in message


def test_hub_splits_are_chosen(monkeypatch):
    rows = {"sentence": ["a", "b", "c", "d"], "label": [0, 1, 0, 1]}
    hub = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(rows),
            "validation": datasets.Dataset.from_dict(rows),
            "test": datasets.Dataset.from_dict({"sentence": ["e"], "label": [-1]}),
        }
    )
    monkeypatch.setattr(sources_module.datasets, "load_dataset", lambda *a, **k: hub)
    task = load_task_data("someone/sst2")
    assert task.name == "someone/sst2" and len(task.eval) == 4
    with pytest.raises(DataError, match="-1 marks an unlabelled split"):
        load_task_data("someone/sst2", eval_split="test")
    with pytest.raises(DataError, match="available splits: train, validation, test"):
        load_task_data("someone/sst2", eval_split="dev")

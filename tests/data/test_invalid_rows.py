"""Bad rows are refused with their row numbers (or dropped on request), and other encodings are readable."""

from __future__ import annotations

import pytest

from rankrl.data import DataError, load_task_data

ROWS = ["the cat sat\tyes", "a dog ran\tno", "blue house\t", "red tree\tyes", "small dog\tno", "big cat\t  ",
        "quick fox\tyes", "slow cow\tno"]


def write(path, lines, header="text\tlabel", encoding="utf-8"):
    path.write_bytes(("\n".join([header, *lines]) + "\n").encode(encoding))
    return path


def test_empty_labels_are_refused_with_their_row_numbers(tmp_path):
    path = write(tmp_path / "train.tsv", ROWS)
    with pytest.raises(DataError, match=r"2 row\(s\) of the train split .* empty label in column 'label' "
                                        r"\(data rows 3, 6, header not counted\).*--drop-invalid"):
        load_task_data(path)


def test_a_csv_row_missing_its_last_cell_is_refused(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,label\nthe cat,yes\na dog,no\nblue house,\nred tree,yes\nsmall dog,no\nbig cat,yes\n")
    with pytest.raises(DataError, match=r"data rows 3,"):
        load_task_data(path)


def test_drop_invalid_leaves_them_out_and_counts_them(tmp_path):
    train = write(tmp_path / "train.tsv", ROWS)
    dev = write(tmp_path / "dev.tsv", ["x y\tyes", "z w\t", "v u\tno"])
    task = load_task_data(train, dev, drop_invalid=True)
    assert task.label_names == ["no", "yes"]  # no class named ""
    assert len(task.train) == 6 and len(task.eval) == 2 and task.dropped == 3
    assert "3 row(s) without a label dropped" in task.summary()


def test_encoding_reads_a_latin1_file_and_its_absence_names_the_flag(tmp_path):
    lines = ["café au lait\tyes", "naïve idea\tno", "crème brûlée\tyes", "piñata party\tno"] * 3
    path = write(tmp_path / "train.tsv", lines, encoding="latin-1")
    with pytest.raises(DataError, match=r"is not utf-8 text .*--encoding latin-1"):
        load_task_data(path)
    task = load_task_data(path, encoding="latin-1")
    assert "café au lait" in list(task.train["text"]) + list(task.eval["text"])

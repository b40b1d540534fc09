"""Synthetic tasks: registry, determinism, balance, label correctness, difficulty, splits."""

from __future__ import annotations

import statistics
from collections import Counter
from itertools import combinations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rankrl.data import (
    DataError,
    get_task,
    list_tasks,
    make_synthetic,
    parse_synthetic_source,
    preview,
)
from rankrl.data import wordlists as W
from rankrl.data.grammar import MAX_WORDS
from rankrl.data.synthetic import example_key

TASK_NAMES = [spec.name for spec in list_tasks()]
ANIMALS, FOODS = set(W.ANIMALS), set(W.FOODS)


def _words(example: dict) -> list[str]:
    return example["text"].replace(",", " ").split()


# --- independent label oracles: re-derive each label from the text alone -----------------------------


def _keyword_label(example: dict) -> int:
    return int(any(w in ANIMALS for w in _words(example)))


def _order_label(example: dict) -> int:
    words = _words(example)
    animals = [i for i, w in enumerate(words) if w in ANIMALS]
    foods = [i for i, w in enumerate(words) if w in FOODS]
    assert len(animals) == 1 and len(foods) == 1, example
    return int(animals[0] < foods[0])


def _count_label(example: dict) -> int:
    return sum(w in ANIMALS for w in _words(example)) - 1


def _mix_label(example: dict) -> int:
    words = _words(example)
    return 2 * sum(w in ANIMALS for w in words) + int(any(w in FOODS for w in words))


def _negation_label(example: dict) -> int:
    words = _words(example)
    adjective = words[-1]  # every form ends with the deciding adjective phrase
    polarity = 1 if adjective in W.POSITIVE_ADJECTIVES else 0
    assert adjective in W.POSITIVE_ADJECTIVES + W.NEGATIVE_ADJECTIVES, example
    modifiers = {"not", "never", "hardly", "far", "from", "at", "all", *W.INTENSIFIERS}
    negated = False
    for word in reversed(words[:-1]):
        if word not in modifiers:
            break
        negated |= word in {"not", "never", "hardly", "far"}
    return 1 - polarity if negated else polarity


def _pair_label(example: dict) -> int:
    animate = set(W.PEOPLE) | ANIMALS
    past = {v[0] for v in W.ANIMATE_VERBS}
    past_of = {v[1]: v[0] for v in W.ANIMATE_VERBS}
    second = example["text_pair"].split()
    # "the O was PP by the S" or "the S V the O"
    claim = (second[-1], past_of[second[3]], second[1]) if "by" in second else (second[1], second[2], second[4])
    first = example["text"].split()
    verb_at = next(i for i, w in enumerate(first) if w in past)
    obj = next(w for w in first[verb_at + 1 :] if w in animate)
    return int(claim == (first[verb_at - 1], first[verb_at], obj))


ORACLES = {
    "keyword": _keyword_label,
    "order": _order_label,
    "count": _count_label,
    "mix": _mix_label,
    "negation": _negation_label,
    "pair": _pair_label,
}


# --- registry -------------------------------------------------------------------------------------------


def test_registry_has_every_skill_with_at_least_two_classes():
    assert set(TASK_NAMES) >= set(ORACLES)
    skills = {spec.skill for spec in list_tasks()}
    assert {"lexical", "compositional", "positional", "counting", "cross-sentence", "multi-class"} <= skills
    assert get_task("mix").num_labels == 6
    for spec in list_tasks():
        assert spec.num_labels >= 2
        assert len(set(spec.label_names)) == spec.num_labels
        assert spec.description
        assert get_task(spec.name) is spec
    assert get_task("pair").is_pair and not get_task("keyword").is_pair
    assert get_task("count").num_labels == 3


def test_unknown_task_lists_known_names():
    with pytest.raises(ValueError) as info:
        get_task("sentiment")
    assert isinstance(info.value, DataError)
    for name in TASK_NAMES:
        assert name in str(info.value)


# --- generation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TASK_NAMES)
def test_same_seed_same_examples_other_seed_different(name):
    spec = get_task(name)
    first = spec.generate(60, seed=11, difficulty=0.6)
    assert first == spec.generate(60, seed=11, difficulty=0.6)
    assert first != spec.generate(60, seed=12, difficulty=0.6)
    assert first != spec.generate(60, seed=11, difficulty=0.6, stream="eval")


@pytest.mark.parametrize("name", TASK_NAMES)
def test_labels_follow_the_task_rule(name):
    spec = get_task(name)
    for difficulty in (0.0, 0.5, 1.0):
        for example in spec.generate(300, seed=5, difficulty=difficulty):
            assert ORACLES[name](example) == example["label"], example


@settings(max_examples=25, deadline=None, database=None)
@given(
    name=st.sampled_from(TASK_NAMES),
    n=st.integers(min_value=0, max_value=80),
    seed=st.integers(min_value=0, max_value=2**31),
    difficulty=st.floats(min_value=0.0, max_value=1.0),
)
def test_balanced_short_and_well_formed(name, n, seed, difficulty):
    spec = get_task(name)
    examples = spec.generate(n, seed=seed, difficulty=difficulty)
    assert len(examples) == n
    counts = Counter(ex["label"] for ex in examples)
    per_class = [counts.get(label, 0) for label in range(spec.num_labels)]
    assert max(per_class) - min(per_class) <= 1
    for ex in examples:
        assert set(ex) == ({"text", "text_pair", "label"} if spec.is_pair else {"text", "label"})
        assert 0 <= ex["label"] < spec.num_labels
        assert 0 < len(ex["text"].split()) <= MAX_WORDS
        if spec.is_pair:
            assert 0 < len(ex["text_pair"].split()) <= MAX_WORDS


@pytest.mark.parametrize("name", TASK_NAMES)
def test_difficulty_lengthens_sentences(name):
    spec = get_task(name)

    def mean_words(difficulty: float) -> float:
        examples = spec.generate(400, seed=3, difficulty=difficulty)
        return statistics.mean(len(f"{e['text']} {e.get('text_pair', '')}".split()) for e in examples)

    easy, medium, hard = mean_words(0.0), mean_words(0.5), mean_words(1.0)
    assert easy < medium < hard


def test_difficulty_adds_distractors_and_structure():
    def share(name: str, difficulty: float, test) -> float:
        examples = get_task(name).generate(400, seed=9, difficulty=difficulty)
        return sum(map(test, examples)) / len(examples)

    related = set(W.ANIMAL_RELATED)
    has_distractor = lambda ex: any(w in related for w in ex["text"].split())  # noqa: E731
    assert share("keyword", 0.0, has_distractor) == 0.0 < share("keyword", 1.0, has_distractor)
    passive = lambda ex: " by the " in ex["text_pair"]  # noqa: E731
    assert share("pair", 0.0, passive) == 0.0 < share("pair", 1.0, passive)
    contrast = lambda ex: "," in ex["text"] or " but " in ex["text"] or " yet " in ex["text"]  # noqa: E731
    assert share("negation", 0.0, contrast) < share("negation", 1.0, contrast)


def test_bad_difficulty_and_sizes_are_rejected():
    with pytest.raises(DataError, match=r"difficulty must be in \[0, 1\]"):
        get_task("keyword").generate(4, difficulty=1.5)
    with pytest.raises(DataError, match="n_train >= 3"):
        make_synthetic("count", n_train=2, n_eval=5)


# --- splits, previews, source strings ---------------------------------------------------------------------


@pytest.mark.parametrize("name", TASK_NAMES)
def test_make_synthetic_splits(name):
    spec = get_task(name)
    splits = make_synthetic(name, n_train=300, n_eval=90, seed=1, difficulty=0.5)
    assert set(splits) == {"train", "eval"}
    assert (len(splits["train"]), len(splits["eval"])) == (300, 90)
    assert splits["train"].features["label"].names == list(spec.label_names)
    for split in splits.values():
        assert len(set(split["label"])) == spec.num_labels

    def keys(ds):
        return {
            (t, p)
            for t, p in zip(ds["text"], ds["text_pair"] if spec.is_pair else [""] * len(ds), strict=True)
        }

    assert not keys(splits["train"]) & keys(splits["eval"])
    again = make_synthetic(name, n_train=300, n_eval=90, seed=1, difficulty=0.5)
    assert again["train"].to_list() == splits["train"].to_list()
    assert again["train"]._fingerprint == splits["train"]._fingerprint


@pytest.mark.parametrize("name", TASK_NAMES)
def test_exclude_avoids_given_texts(name):
    spec = get_task(name)
    first = spec.generate(40, seed=1, difficulty=0.0)
    keys = {example_key(ex) for ex in first}
    # The same stream would reproduce `first` exactly; with exclude it must find other texts.
    assert not keys & {example_key(ex) for ex in spec.generate(40, seed=1, difficulty=0.0, exclude=keys)}


def test_preview_names_labels():
    rows = preview("negation", k=6, seed=2, difficulty=0.3)
    assert len(rows) == 6
    names = get_task("negation").label_names
    assert all(row["label_name"] == names[row["label"]] for row in rows)
    assert preview("negation", k=6, seed=2, difficulty=0.3) == rows


def test_parse_synthetic_source():
    assert parse_synthetic_source("synthetic:order") == ("order", {})
    name, params = parse_synthetic_source("synthetic:pair?difficulty=0.7&n_train=100&n_eval=20&seed=4")
    assert name == "pair"
    assert params == {"difficulty": 0.7, "n_train": 100, "n_eval": 20, "seed": 4}
    assert isinstance(params["n_train"], int)
    with pytest.raises(DataError, match="allowed: difficulty"):
        parse_synthetic_source("synthetic:pair?level=3")
    with pytest.raises(DataError, match="not a valid int"):
        parse_synthetic_source("synthetic:pair?n_train=many")
    with pytest.raises(DataError, match=r"difficulty must be in \[0, 1\]"):
        parse_synthetic_source("synthetic:pair?difficulty=2")
    with pytest.raises(DataError, match="known tasks: keyword"):
        parse_synthetic_source("synthetic:nope")


# --- word lists ---------------------------------------------------------------------------------------------


def _flat(words) -> set[str]:
    out: set[str] = set()
    for item in words:
        for word in item if isinstance(item, tuple) else (item,):
            out.update(word.split())
    return out


def test_category_lists_are_disjoint():
    lists = W.all_lists()
    categories = ["ANIMALS", "FOODS", "OBJECTS", "PEOPLE", "PLACES", "ANIMAL_RELATED", "FOOD_RELATED"]
    for a, b in combinations(categories, 2):
        assert not set(lists[a]) & set(lists[b]), (a, b)
    other = set().union(*(_flat(v) for k, v in lists.items() if k not in ("ANIMALS", "FOODS")))
    assert not (ANIMALS | FOODS) & other
    sentiment = set(W.POSITIVE_ADJECTIVES) | set(W.NEGATIVE_ADJECTIVES)
    assert not set(W.POSITIVE_ADJECTIVES) & set(W.NEGATIVE_ADJECTIVES)
    neutral = _flat(W.TOPICS + W.OPENERS + W.DETERMINERS + W.COPULAS + W.CONTRASTS + W.CONCESSIVES)
    assert not sentiment & neutral


def test_words_are_single_wordpieces(tokenizer):
    words = set().union(*(_flat(v) for v in W.all_lists().values()))
    multi = sorted(w for w in words if len(tokenizer.tokenize(w)) != 1)
    assert not multi


@pytest.mark.parametrize("name", TASK_NAMES)
def test_hardest_examples_fit_in_64_tokens(name, tokenizer):
    examples = get_task(name).generate(200, seed=0, difficulty=1.0)
    texts = [e["text"] for e in examples]
    pairs = [e["text_pair"] for e in examples] if get_task(name).is_pair else None
    lengths = [len(ids) for ids in tokenizer(texts, pairs)["input_ids"]]
    assert max(lengths) <= 64

"""Example generators for the synthetic tasks, one function per task.

Each generator has the signature ``(rng, label, difficulty) -> example``: it writes one example whose
label is ``label`` (the caller picks labels, which keeps splits balanced), drawing every choice from
``rng`` so the output is a pure function of the seed. ``difficulty`` in ``[0, 1]`` makes sentences
longer and adds distractors that defeat the shallow shortcut for that task.

Difficulty 0 to about 0.3 is meant to be learnable by a tiny model in a few hundred steps (the
``tiny`` model of :mod:`rankrl.models`: 2 layers, random frozen weights, LoRA only), which
``tests/data/test_learnability.py`` checks. The structural changes that make the order and pair tasks
hard for such a model (more clauses; role swaps, passives, single-word changes) therefore grow with a
power of ``difficulty`` (squared, cubed), while length and lexical noise grow linearly.
"""

from __future__ import annotations

import random

from rankrl.data import wordlists as W
from rankrl.data.grammar import AGENT, Skeleton, build_skeleton, default_noun

Example = dict[str, str]


def _clauses(difficulty: float) -> int:
    """Maximum number of clauses at this difficulty (1 at 0, 3 at 1)."""
    return 1 + round(2 * difficulty)


def _adj_prob(difficulty: float) -> float:
    return 0.1 + 0.4 * difficulty


def _fill_with_distractors(
    rng: random.Random, skeleton: Skeleton, distractors: tuple[str, ...], prob: float
) -> list[str]:
    """Neutral nouns for every slot; non-agent slots become a distractor word with probability ``prob``."""
    nouns = []
    for kind in skeleton.kinds():
        if kind != AGENT and rng.random() < prob:
            nouns.append(rng.choice(distractors))
        else:
            nouns.append(default_noun(rng, kind))
    return nouns


def keyword(rng: random.Random, label: int, difficulty: float) -> Example:
    """Label 1 iff the sentence contains an animal word (lexical lookup).

    Harder levels add clauses and animal-related words that are not animals (barn, nest, saddle) to
    both classes, so "sounds like a farm" is not enough.
    """
    skeleton = build_skeleton(rng, max_clauses=_clauses(difficulty), adj_prob=_adj_prob(difficulty))
    nouns = _fill_with_distractors(rng, skeleton, W.ANIMAL_RELATED, 0.5 * difficulty)
    if label == 1:
        nouns[rng.randrange(len(nouns))] = rng.choice(W.ANIMALS)
    return {"text": skeleton.fill(nouns)}


def order(rng: random.Random, label: int, difficulty: float) -> Example:
    """Label 1 iff the (single) animal comes before the (single) food (word order).

    Both words are in every sentence and the two slots they fill are chosen before the label is used
    (the animal takes the earlier slot for label 1, the later one for label 0), so the sentence shape and
    the bag of words carry no signal. Up to difficulty 0.5 the sentence is one clause; harder levels add
    clauses (so the two words move around and apart), adjectives and food- and animal-related distractors.
    """
    while True:
        skeleton = build_skeleton(
            rng, max_clauses=_clauses(difficulty**2), adj_prob=_adj_prob(difficulty), min_slots=2
        )
        # A food never acts (it is not an agent), so both words go to non-agent slots.
        slots = [i for i, kind in enumerate(skeleton.kinds()) if kind != AGENT]
        if len(slots) >= 2:
            break
    first, second = sorted(rng.sample(slots, 2))
    animal_at, food_at = (first, second) if label == 1 else (second, first)
    nouns = _fill_with_distractors(rng, skeleton, W.ANIMAL_RELATED + W.FOOD_RELATED, 0.5 * difficulty)
    nouns[animal_at] = rng.choice(W.ANIMALS)
    nouns[food_at] = rng.choice(W.FOODS)
    return {"text": skeleton.fill(nouns)}


def count(rng: random.Random, label: int, difficulty: float) -> Example:
    """Label ``k`` iff the sentence mentions exactly ``k + 1`` animals (counting).

    The sentence shape is drawn before the label is used, so length says nothing about the count.
    Harder levels add slots and animal-related distractors that must not be counted.
    """
    skeleton = build_skeleton(
        rng,
        max_clauses=_clauses(difficulty),
        adj_prob=0.1 + 0.3 * difficulty,
        min_slots=3 + round(2 * difficulty),
    )
    nouns = _fill_with_distractors(rng, skeleton, W.ANIMAL_RELATED, 0.5 * difficulty)
    for index in rng.sample(range(len(nouns)), label + 1):
        nouns[index] = rng.choice(W.ANIMALS)
    return {"text": skeleton.fill(nouns)}


def mix(rng: random.Random, label: int, difficulty: float) -> Example:
    """Label ``2a + f``: ``a`` in {0, 1, 2} animals and ``f`` in {0, 1} foods in the sentence (6 classes).

    Two lookups and a count composed into one of six classes, so a run starts near 1/6 accuracy, as on
    six-way real tasks (question types). As in :func:`count` the shape is drawn before the label is used;
    harder levels add slots and animal- and food-related distractors.
    """
    animals, food = divmod(label, 2)
    skeleton = build_skeleton(
        rng, max_clauses=_clauses(difficulty), adj_prob=0.1 + 0.3 * difficulty, min_slots=3 + round(2 * difficulty)
    )
    nouns = _fill_with_distractors(rng, skeleton, W.ANIMAL_RELATED + W.FOOD_RELATED, 0.5 * difficulty)
    slots = rng.sample(range(len(nouns)), animals + food)
    for index in slots[:animals]:
        nouns[index] = rng.choice(W.ANIMALS)
    for index in slots[animals:]:
        nouns[index] = rng.choice(W.FOODS)
    return {"text": skeleton.fill(nouns)}


def _polar_phrase(rng: random.Random, polarity: int, negate_prob: float) -> str:
    """An adjective phrase meaning ``polarity`` (1 positive), negated with probability ``negate_prob``."""
    negate = rng.random() < negate_prob
    word_polarity = 1 - polarity if negate else polarity
    adjective = rng.choice(W.POSITIVE_ADJECTIVES if word_polarity == 1 else W.NEGATIVE_ADJECTIVES)
    if not negate:
        intensifier = rng.choice(W.INTENSIFIERS) + " " if rng.random() < 0.3 else ""
        return intensifier + adjective
    negator = rng.choice(W.NEGATORS)
    intensifier = rng.choice(("very ", "really ", "")) if negator in ("not", "never") else ""
    return f"{negator} {intensifier}{adjective}"


def negation(rng: random.Random, label: int, difficulty: float) -> Example:
    """Sentiment (1 positive) of a short review built with negation and contrast (compositional).

    "not good" is negative, "good but dull" is negative (the clause after the contrast wins),
    "although it was dull, it was fun" is positive. Sentiment words occur in both classes; only their
    composition decides the label. Harder levels negate and contrast more often and add openers.
    """
    negate_prob = 0.25 + 0.35 * difficulty
    contrast_prob = 0.15 + 0.6 * difficulty
    topic = f"{rng.choice(W.DETERMINERS)} {rng.choice(W.TOPICS)}"
    copula = rng.choice(W.COPULAS)
    if rng.random() < contrast_prob:
        first = _polar_phrase(rng, 1 - label, negate_prob)
        last = _polar_phrase(rng, label, negate_prob)
        if rng.random() < 0.5:
            text = f"{topic} {copula} {first} {rng.choice(W.CONTRASTS)} {last}"
        else:
            text = f"{rng.choice(W.CONCESSIVES)} {topic} {copula} {first}, it {copula} {last}"
    else:
        text = f"{topic} {copula} {_polar_phrase(rng, label, negate_prob)}"
    if rng.random() < 0.6 * difficulty:
        text = f"{rng.choice(W.OPENERS)}, {text}"
    return {"text": text}


def _agent_phrase(rng: random.Random, noun: str, adj_prob: float) -> str:
    adjective = rng.choice(W.NEUTRAL_ADJECTIVES) + " " if rng.random() < adj_prob else ""
    return f"{rng.choice(W.DETERMINERS)} {adjective}{noun}"


def pair(rng: random.Random, label: int, difficulty: float) -> Example:
    """Label 1 iff sentence 2 states who did what to whom in sentence 1 (two sentences).

    Negatives change the subject, the verb and/or the object, or swap the two roles. At difficulty 0 a
    negative changes all three and sentence 1 is a bare clause, so word overlap between the sentences
    decides the label. Harder levels lengthen sentence 1 (adjectives, a place) and, growing with
    ``difficulty ** 3``, change fewer words (one, at difficulty 1), swap roles (same words, different
    meaning), paraphrase with the passive and add a distractor clause to sentence 1 whose noun becomes
    the substitute, so word overlap alone fails.
    """
    animate = W.PEOPLE + W.ANIMALS
    subject, obj, other = rng.sample(animate, 3)
    verb = rng.choice(W.ANIMATE_VERBS)
    adj_prob = 0.5 * difficulty
    first = f"{_agent_phrase(rng, subject, adj_prob)} {verb[0]} {_agent_phrase(rng, obj, adj_prob)}"
    if rng.random() < 0.7 * difficulty:
        first += f" {rng.choice(W.PREPOSITIONS)} the {rng.choice(W.PLACES)}"
    hard = difficulty**3
    has_other = rng.random() < hard
    if has_other:
        first += f" {rng.choice(W.CONJUNCTIONS)} the {other} {rng.choice(W.INTRANSITIVE_VERBS)}"

    s, v, o = subject, verb, obj
    if label == 0:
        if rng.random() < 0.6 * hard:
            s, o = o, s
        else:
            # Each part beyond the first also changes with probability 1 - hard: all three at 0, one at 1.
            extra = sum(rng.random() >= hard for _ in range(2))
            parts = rng.sample(("subject", "verb", "object"), 1 + extra)
            unused = [x for x in animate if x not in (subject, obj, other)]
            swap_ins = rng.sample(unused, 2)
            if "verb" in parts:
                v = rng.choice([x for x in W.ANIMATE_VERBS if x != verb])
            for part, swap_in in zip(("subject", "object"), swap_ins, strict=True):
                if part not in parts:
                    continue
                if has_other and other not in (s, o) and rng.random() < hard:
                    swap_in = other
                if part == "subject":
                    s = swap_in
                else:
                    o = swap_in
    passive = rng.random() < 0.5 * hard
    second = f"the {o} was {v[1]} by the {s}" if passive else f"the {s} {v[0]} the {o}"
    return {"text": first, "text_pair": second}

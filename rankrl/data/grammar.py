"""A tiny template grammar for the synthetic tasks: clauses whose nouns are typed, fillable slots.

A :class:`Skeleton` is a sentence with its nouns left blank. Each blank has a kind (``agent``,
``patient`` or ``place``) so a task can put its category words where they read naturally (a food is
carried, it does not carry) and fill the rest with neutral nouns. Building the skeleton first and the
label-bearing words second keeps sentence shape independent of the label.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from rankrl.data import wordlists as W

MAX_WORDS = 24
"""Upper bound on words in one generated sentence (so 32-64 tokens always suffice)."""

AGENT = "agent"
PATIENT = "patient"
PLACE = "place"
_NOUN_SLOTS = {f"<{AGENT}>": AGENT, f"<{PATIENT}>": PATIENT, f"<{PLACE}>": PLACE}

_TEMPLATES: tuple[tuple[str, ...], ...] = (
    ("<det>", "<agent>", "<verb>", "<det>", "<patient>"),
    ("<det>", "<agent>", "<verb>", "<det>", "<patient>", "<prep>", "<det>", "<place>"),
    ("<det>", "<agent>", "<intrans>", "<prep>", "<det>", "<place>"),
    ("<det>", "<patient>", "was", "<prep>", "<det>", "<place>"),
)

_DEFAULT_NOUNS: dict[str, tuple[str, ...]] = {AGENT: W.PEOPLE, PATIENT: W.OBJECTS, PLACE: W.PLACES}


@dataclass
class Skeleton:
    """A sentence with blank noun slots.

    Attributes:
        words: The sentence's words; slot positions hold ``""`` until filled.
        slots: ``(word index, kind)`` for every noun slot, in reading order.
    """

    words: list[str]
    slots: list[tuple[int, str]]

    def kinds(self) -> list[str]:
        """Return the kind of every slot, in reading order."""
        return [kind for _, kind in self.slots]

    def fill(self, nouns: Sequence[str]) -> str:
        """Return the sentence with ``nouns[i]`` in slot ``i``.

        Args:
            nouns: One noun per slot.

        Returns:
            The sentence as a single space-separated string.

        Raises:
            ValueError: If the number of nouns differs from the number of slots.
        """
        if len(nouns) != len(self.slots):
            raise ValueError(f"skeleton has {len(self.slots)} slots, got {len(nouns)} nouns")
        words = list(self.words)
        for (index, _), noun in zip(self.slots, nouns, strict=True):
            words[index] = noun
        return " ".join(words)


def default_noun(rng: random.Random, kind: str) -> str:
    """Draw a neutral noun (person, object or place) for a slot of ``kind``."""
    return rng.choice(_DEFAULT_NOUNS[kind])


def _expand(rng: random.Random, template: Sequence[str], adj_prob: float, budget: int) -> list[str]:
    """Fill a clause template's function words; noun slots stay as their ``<kind>`` markers."""
    out: list[str] = []
    spare = budget - len(template)
    for i, item in enumerate(template):
        if item == "<det>":
            out.append(rng.choice(W.DETERMINERS))
            if spare > 0 and rng.random() < adj_prob and template[i + 1] in _NOUN_SLOTS:
                out.append(rng.choice(W.NEUTRAL_ADJECTIVES))
                spare -= 1
        elif item == "<verb>":
            out.append(rng.choice(W.TRANSITIVE_VERBS)[0])
        elif item == "<intrans>":
            out.append(rng.choice(W.INTRANSITIVE_VERBS))
        elif item == "<prep>":
            out.append(rng.choice(W.PREPOSITIONS))
        else:
            out.append(item)
    return out


def build_skeleton(
    rng: random.Random,
    *,
    max_clauses: int,
    adj_prob: float,
    min_slots: int = 1,
    max_words: int = MAX_WORDS,
) -> Skeleton:
    """Build a random sentence skeleton of one or more clauses joined by conjunctions.

    Args:
        rng: The task's random stream.
        max_clauses: The number of clauses is drawn uniformly from ``1..max_clauses``.
        adj_prob: Probability of a neutral adjective before each noun.
        min_slots: Keep adding clauses (within ``max_words``) until there are at least this many slots.
        max_words: Hard cap on the sentence length in words.

    Returns:
        A skeleton with at least ``min_slots`` slots and at most ``max_words`` words.

    Raises:
        ValueError: If ``min_slots`` cannot fit in ``max_words``.
    """
    if min_slots > max_words // 4:
        raise ValueError(f"min_slots={min_slots} cannot fit in {max_words} words")
    n_clauses = rng.randint(1, max(1, max_clauses))
    while True:
        words: list[str] = []
        clauses = 0
        while clauses < n_clauses or sum(w in _NOUN_SLOTS for w in words) < min_slots:
            conj = rng.choice(W.CONJUNCTIONS).split() if clauses else []
            budget = max_words - len(words) - len(conj)
            fitting = [t for t in _TEMPLATES if len(t) <= budget]
            if not fitting:
                break
            words += conj + _expand(rng, rng.choice(fitting), adj_prob, budget)
            clauses += 1
        slots = [(i, _NOUN_SLOTS[w]) for i, w in enumerate(words) if w in _NOUN_SLOTS]
        if len(slots) >= min_slots:
            return Skeleton(words=["" if w in _NOUN_SLOTS else w for w in words], slots=slots)

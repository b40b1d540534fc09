"""Word lists for the synthetic tasks.

Every word here is a plain lower-case English word that the default (BERT WordPiece) tokenizer keeps
as a single token, so the synthetic tasks test what a model does with words rather than with subword
noise. The lists are disjoint where a task's rule depends on category membership (for example an
animal must never also be a place), which ``tests/data`` checks.
"""

from __future__ import annotations

# Category nouns. Animals are the target category of the keyword, order and count tasks.
ANIMALS: tuple[str, ...] = (
    "cat", "dog", "horse", "cow", "sheep", "goat", "fox", "wolf", "bear", "deer",
    "rabbit", "mouse", "duck", "owl", "eagle", "frog", "snake", "tiger", "lion", "monkey",
    "whale", "shark", "camel", "pig", "rat", "bee", "spider", "parrot", "turtle", "donkey",
)  # fmt: skip
FOODS: tuple[str, ...] = (
    "bread", "cheese", "apple", "orange", "banana", "rice", "soup", "cake", "pie", "egg",
    "butter", "honey", "carrot", "potato", "tomato", "onion", "pizza", "pasta", "salad", "cookie",
    "lemon", "peach", "pear", "corn", "milk", "tea", "coffee", "sugar", "chocolate", "sandwich",
)  # fmt: skip
OBJECTS: tuple[str, ...] = (
    "box", "chair", "table", "lamp", "door", "window", "book", "pen", "cup", "bottle",
    "bag", "key", "coin", "clock", "bell", "rope", "ladder", "basket", "bucket", "blanket",
    "mirror", "candle", "hammer", "brush", "shoe", "hat", "coat", "ball", "map", "letter",
)  # fmt: skip
PEOPLE: tuple[str, ...] = (
    "man", "woman", "boy", "girl", "teacher", "doctor", "farmer", "baker", "driver", "student",
    "child", "sailor", "painter", "nurse", "pilot", "clerk", "singer", "judge", "guard", "cook",
)  # fmt: skip
PLACES: tuple[str, ...] = (
    "park", "market", "river", "garden", "station", "kitchen", "library", "school", "forest", "beach",
    "hill", "bridge", "road", "village", "office", "harbor", "church", "hotel", "lake", "castle",
)  # fmt: skip

# Words that are *about* animals but are not animals: lexical distractors for the keyword and count
# tasks (a model that learned "animal-ish topic" instead of the word list gets these wrong).
ANIMAL_RELATED: tuple[str, ...] = (
    "barn", "cage", "nest", "saddle", "leash", "stable", "hive", "pond", "zoo", "farm",
    "collar", "feather", "fur", "tail", "hay", "meadow",
)  # fmt: skip
# Words that are about food but are not foods: distractors for the order task.
FOOD_RELATED: tuple[str, ...] = (
    "plate", "bowl", "spoon", "fork", "knife", "oven", "menu", "recipe", "jar", "pan", "tray", "shop",
)  # fmt: skip

NEUTRAL_ADJECTIVES: tuple[str, ...] = (
    "small", "large", "old", "new", "red", "blue", "green", "yellow", "brown", "wooden",
    "heavy", "quiet", "tall", "short", "round", "empty", "cold", "wet", "dry", "white",
)  # fmt: skip

# (past tense, past participle) of verbs that take any concrete object.
TRANSITIVE_VERBS: tuple[tuple[str, str], ...] = (
    ("saw", "seen"), ("found", "found"), ("carried", "carried"), ("moved", "moved"),
    ("pushed", "pushed"), ("pulled", "pulled"), ("watched", "watched"), ("lifted", "lifted"),
    ("dropped", "dropped"), ("held", "held"), ("took", "taken"), ("bought", "bought"),
    ("painted", "painted"), ("cleaned", "cleaned"), ("touched", "touched"), ("brought", "brought"),
    ("noticed", "noticed"), ("kept", "kept"), ("hid", "hidden"), ("sold", "sold"),
)  # fmt: skip
# (past tense, past participle) of verbs whose object is a person or an animal. The pair task swaps the
# two roles and substitutes one verb for another, so none is symmetric ("met") and no two are near
# synonyms ("saw" / "noticed").
ANIMATE_VERBS: tuple[tuple[str, str], ...] = (
    ("followed", "followed"), ("chased", "chased"), ("watched", "watched"), ("helped", "helped"),
    ("called", "called"), ("visited", "visited"), ("pushed", "pushed"), ("fed", "fed"),
    ("thanked", "thanked"), ("caught", "caught"), ("warned", "warned"), ("greeted", "greeted"),
    ("taught", "taught"), ("paid", "paid"), ("blamed", "blamed"), ("rescued", "rescued"),
)  # fmt: skip
INTRANSITIVE_VERBS: tuple[str, ...] = (
    "waited", "slept", "stood", "rested", "sat", "walked", "stopped", "paused", "played", "worked",
)  # fmt: skip
PREPOSITIONS: tuple[str, ...] = ("near", "behind", "beside", "under", "inside", "by", "outside", "across")
DETERMINERS: tuple[str, ...] = ("the", "the", "the", "my", "this", "that", "his", "her", "our", "their")
CONJUNCTIONS: tuple[str, ...] = ("and", "while", "so", "and then", "because", "as")

# Sentiment vocabulary for the negation task. The two lists are balanced in size.
POSITIVE_ADJECTIVES: tuple[str, ...] = (
    "good", "great", "wonderful", "excellent", "charming", "delightful", "brilliant", "lovely",
    "pleasant", "fun", "clever", "beautiful", "fresh", "funny", "enjoyable", "perfect",
    "amazing", "nice", "smart", "fantastic",
)  # fmt: skip
NEGATIVE_ADJECTIVES: tuple[str, ...] = (
    "bad", "dull", "boring", "awful", "terrible", "weak", "bland", "clumsy", "cheap", "poor",
    "ugly", "messy", "flat", "stale", "silly", "lazy", "sloppy", "horrible", "annoying", "stupid",
)  # fmt: skip
NEGATORS: tuple[str, ...] = ("not", "never", "hardly", "not at all", "far from")
COPULAS: tuple[str, ...] = ("was", "is", "seemed", "felt")
INTENSIFIERS: tuple[str, ...] = ("very", "really", "quite", "truly", "so", "rather", "pretty", "extremely")
CONTRASTS: tuple[str, ...] = ("but", "yet", "but still", "but in the end")
CONCESSIVES: tuple[str, ...] = ("although", "even though", "while")
TOPICS: tuple[str, ...] = (
    "film", "movie", "book", "show", "play", "album", "song", "meal", "game", "novel",
    "story", "concert", "series", "dinner", "trip", "lecture", "hotel", "party",
)  # fmt: skip
# Sentiment-neutral openers that lengthen a sentence without changing its label.
OPENERS: tuple[str, ...] = (
    "last night", "to be honest", "i think", "we agreed that", "my friend said", "honestly",
    "on sunday", "after lunch", "as we expected", "my sister told me",
)  # fmt: skip


def all_lists() -> dict[str, tuple]:
    """Return every word list by name (for tests and for ``rankrl tasks`` previews).

    Returns:
        Mapping from the module-level constant name to its tuple.
    """
    return {name: value for name, value in globals().items() if name.isupper() and isinstance(value, tuple)}

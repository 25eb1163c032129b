"""Name inventories for the synthetic logic tasks.

The person names, ProsQA's 38 concept names and ProntoQA's concept and property words are the
ones that occur in the real ProsQA / ProntoQA validation files, so generated text uses the same
vocabulary as the data a model is evaluated on. A harder ProsQA inventory built from syllables
(onset + vowel + m/r/l + "pus", as in "brimpus", "terpus", "felpus") has hundreds of names, all
38 real ones among them.
"""

from __future__ import annotations

import itertools

# Person names of the real ProsQA file (ProntoQA's are a subset of these).
PROSQA_PERSONS = (
    "Alex", "Bob", "Carol", "Davis", "Eva", "Fae", "Gabriel", "Jack", "Max",
    "Oliver", "Polly", "Rex", "Sally", "Sam", "Stella", "Tom", "Wren",
)
PRONTOQA_PERSONS = ("Alex", "Fae", "Max", "Polly", "Rex", "Sally", "Sam", "Stella", "Wren")

# Concept names of the real ProntoQA file.
PRONTOQA_CONCEPTS = (
    "brimpus", "dumpus", "gorpus", "grimpus", "impus", "jompus", "lempus", "lorpus", "numpus",
    "rompus", "shumpus", "sterpus", "tumpus", "vumpus", "wumpus", "yumpus", "zumpus",
)

# Property adjectives of the real ProntoQA file.
PRONTOQA_PROPERTIES = (
    "aggressive", "amenable", "angry", "bitter", "blue", "bright", "brown", "cold", "discordant",
    "dull", "earthy", "fast", "feisty", "floral", "fruity", "happy", "hot", "kind", "large",
    "liquid", "loud", "luminous", "mean", "melodic", "metallic", "moderate", "muffled", "nervous",
    "opaque", "orange", "overcast", "rainy", "red", "shy", "slow", "small", "snowy", "sour",
    "spicy", "sunny", "sweet", "temperate", "transparent", "windy", "wooden",
)

_ONSETS = (
    "", "b", "bl", "br", "ch", "d", "dr", "f", "fl", "g", "gl", "gr", "gw", "h", "j", "k", "kr",
    "l", "m", "n", "p", "pl", "qu", "r", "scr", "sh", "sl", "sn", "sp", "st", "t", "th", "tr",
    "v", "w", "y", "z", "zh",
)
_VOWELS = ("a", "e", "i", "o", "oo", "u")
_CODAS = ("m", "r", "l")
_REAL_WORDS = frozenset({"rumpus"})


def syllable_concepts() -> tuple[str, ...]:
    """All onset+vowel+coda+"pus" nonsense words (sorted; several hundred)."""
    words = {o + v + c + "pus" for o, v, c in itertools.product(_ONSETS, _VOWELS, _CODAS)}
    return tuple(sorted(words - _REAL_WORDS))


# The 38 concept names of the real ProsQA data: the default inventory, so generated graphs use
# the vocabulary a model is evaluated on and each name is seen often enough to be learned fast.
# Graphs are random per example, so a fixed inventory still cannot be memorised.
PROSQA_CONCEPTS = (
    "bompus", "boompus", "brimpus", "chorpus", "dumpus", "felpus", "fompus", "gerpus", "gorpus",
    "grimpus", "gwompus", "hilpus", "impus", "jelpus", "jompus", "kerpus", "lempus", "lorpus",
    "numpus", "quimpus", "rempus", "rompus", "rorpus", "scrompus", "shumpus", "sterpus", "storpus",
    "terpus", "timpus", "tumpus", "vumpus", "worpus", "wumpus", "yerpus", "yimpus", "yumpus",
    "zhorpus", "zumpus",
)
# Hundreds of syllable-built names (`ProsQA(concepts=PROSQA_SYLLABLE_CONCEPTS)`): a harder
# variant whose names are mostly unseen, so only reading the graph in context works.
PROSQA_SYLLABLE_CONCEPTS = syllable_concepts()


def plural(concept: str) -> str:
    """ProntoQA's plural of a concept name: "wumpus" -> "wumpuses"."""
    return concept + "es"


def indefinite_article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"

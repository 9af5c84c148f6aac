"""Text side of the dataset: a digit in several surface forms and languages, inside templates with distractors.

Distractor (filler) words never contain a digit or a number word of any language used here, so the only
label-bearing token of a clean sentence is the digit itself. A corrupted sentence contains no digit at all.
"""

from __future__ import annotations

import logging

import numpy as np

LOGGER = logging.getLogger(__name__)

NUMBER_WORDS: dict[str, tuple[str, ...]] = {
    "en": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    "fr": ("zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf"),
    "de": ("null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"),
    "es": ("cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"),
    "it": ("zero", "uno", "due", "tre", "quattro", "cinque", "sei", "sette", "otto", "nove"),
}
ALL_NUMBER_WORDS: frozenset[str] = frozenset(w for words in NUMBER_WORDS.values() for w in words) | {
    "une",
    "ein",
    "eine",
    "oh",
    "nil",
    "ten",
    "dix",
    "zehn",
    "diez",
    "dieci",
}

TEMPLATES: tuple[str, ...] = (
    "{d}",
    "{d}",
    "the answer is {d}",
    "please choose {d}",
    "{d} apples please",
    "I think it is {d}",
    "label: {d}",
    "it's {d}, obviously",
    "my pick is {d}",
    "write down {d} on the paper",
    "we saw {d} birds in the garden",
    "the code word is {d}",
    "hmm... {d}?",
    "bitte {d}",
    "c'est {d}",
    "es el {d}",
    "okay so {d} then",
    "select {d} and press enter",
    "{d} is my favourite",
    "answer: {d} (final)",
)
FILLERS: tuple[str, ...] = (
    "please",
    "okay",
    "well",
    "apples",
    "bananas",
    "the",
    "blue",
    "quickly",
    "maybe",
    "thanks",
    "hello",
    "really",
    "hmm",
    "so",
    "today",
    "again",
    "sure",
    "indeed",
)
UNINFORMATIVE: tuple[str, ...] = (
    "the answer is unknown",
    "please choose carefully",
    "I have no idea",
    "apples and bananas",
    "hello there",
    "nothing to report",
    "it is a secret",
    "guess what it is",
    "the label is missing",
    "what a lovely day",
    "please pass the salt",
    "I forgot what it was",
    "write something on the paper",
    "the birds are in the garden",
    "c'est la vie",
    "bitte schön",
    "no lo sé",
    "non lo so",
    "???",
    "lorem ipsum dolor sit amet",
)


def _typo(word: str, rng: np.random.Generator) -> str:
    """Drop, duplicate or swap one letter, never producing another number word."""
    for _ in range(8):
        pos = int(rng.integers(len(word)))
        kind = int(rng.integers(3))
        if kind == 0 and len(word) > 3:
            candidate = word[:pos] + word[pos + 1 :]
        elif kind == 1:
            candidate = word[:pos] + word[pos] + word[pos:]
        elif pos < len(word) - 1:
            candidate = word[:pos] + word[pos + 1] + word[pos] + word[pos + 2 :]
        else:
            continue
        if candidate != word and candidate not in ALL_NUMBER_WORDS:
            return candidate
    return word


def digit_surface(digit: int, rng: np.random.Generator) -> str:
    """One surface form of ``digit``: numeral, word in one of five languages, "number seven", "#7", a typo.

    Args:
        digit: 0..9.
        rng: the random generator.

    Returns:
        The form, with random letter case for words.
    """
    kind = rng.random()
    if kind < 0.2:
        return str(digit)
    if kind < 0.27:
        return f"#{digit}"
    if kind < 0.32:
        return f"no. {digit}"
    if kind < 0.4:
        return f"number {NUMBER_WORDS['en'][digit]}"
    if kind < 0.45:
        return _typo(NUMBER_WORDS["en"][digit], rng)
    if kind < 0.7:
        word = NUMBER_WORDS["en"][digit]
    else:
        lang = ("fr", "de", "es", "it")[int(rng.integers(4))]
        word = NUMBER_WORDS[lang][digit]
    case = rng.random()
    if case < 0.15:
        return word.capitalize()
    if case < 0.2:
        return word.upper()
    return word


def _fill(sentence: str, rng: np.random.Generator) -> str:
    if rng.random() < 0.3:
        sentence = f"{FILLERS[int(rng.integers(len(FILLERS)))]} {sentence}"
    if rng.random() < 0.3:
        sentence = f"{sentence} {FILLERS[int(rng.integers(len(FILLERS)))]}"
    return sentence


def make_text(digit: int, rng: np.random.Generator, *, corrupted: bool) -> str:
    """A sentence that names ``digit`` among distractors, or (corrupted) one that names no digit.

    Args:
        digit: the label 0..9.
        rng: the random generator.
        corrupted: produce an uninformative sentence instead.

    Returns:
        The sentence (non-empty).
    """
    if corrupted:
        return _fill(UNINFORMATIVE[int(rng.integers(len(UNINFORMATIVE)))], rng)
    template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    return _fill(template.format(d=digit_surface(digit, rng)), rng)

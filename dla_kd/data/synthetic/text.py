"""Pseudo-language content: words, sentences, headings, names and numbers as plain strings.

Words come from a fixed pseudo-lexicon (random syllables, built once from a constant seed) sampled
with Zipf-like frequencies, mixed with real English function words, so lines have the rhythm of
real prose (many short words, some long ones) without being readable. Every function takes the
page's ``numpy.random.Generator``.
"""

from functools import lru_cache
from typing import List, Tuple

import numpy as np

_FUNCTION_WORDS = (
    "the of and to in a is for that with as by on are was from at be this an which or were has "
    "have not we it their can these its also between than all our more but into both"
).split()
_ONSETS = "b c d f g h l m n p r s t v w br cr dr fr gr pr tr st sp sc ch th sh pl cl bl gl qu".split() + [""] * 6
_VOWELS = "a e i o u a e i o ea ou io ai ie y".split()
_CODAS = "n r s t l m nd nt st ng rs ts x d ce ve ly ic al".split() + [""] * 16
_LEXICON_SIZE = 3000
_LEXICON_SEED = 20240611

GREEK = "αβγδεζηθκλμνξπρστφχψω"
BULLETS = ("•", "–", "▪", "◦", "‣", "-", "*", "✓", "►")


def _syllable(rng: np.random.Generator) -> str:
    return rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)


@lru_cache(maxsize=1)
def _lexicon() -> Tuple[List[str], np.ndarray]:
    """(words, cumulative sampling probabilities): function words first, then pseudo-words, with
    probabilities proportional to 1 / (rank + 2.7)."""
    rng = np.random.default_rng(_LEXICON_SEED)
    words = list(_FUNCTION_WORDS)
    seen = set(words)
    while len(words) < _LEXICON_SIZE:
        word = "".join(_syllable(rng) for _ in range(rng.choice([1, 1, 2, 2, 2, 3, 3, 4])))
        if len(word) > 1 and word not in seen:
            seen.add(word)
            words.append(word)
    weights = 1.0 / (np.arange(len(words)) + 2.7)
    return words, np.cumsum(weights / weights.sum())


def words(rng: np.random.Generator, n: int) -> List[str]:
    """``n`` lower-case lexicon words."""
    lexicon, cumulative = _lexicon()
    idx = np.minimum(np.searchsorted(cumulative, rng.random(n)), len(lexicon) - 1)
    return [lexicon[i] for i in idx]


def content_words(rng: np.random.Generator, n: int) -> List[str]:
    """``n`` words without function words (for headings, labels and names)."""
    lexicon, _ = _lexicon()
    idx = rng.integers(len(_FUNCTION_WORDS), len(lexicon) // 3, size=n)
    return [lexicon[i] for i in idx]


def capitalise(word: str) -> str:
    return word[:1].upper() + word[1:]


def number_string(rng: np.random.Generator) -> str:
    """A number as it appears in running text: integer, decimal, percentage, range or year."""
    kind = rng.integers(6)
    if kind == 0:
        return str(int(rng.integers(2, 999)))
    if kind == 1:
        return f"{rng.random() * 100:.{rng.integers(1, 3)}f}"
    if kind == 2:
        return f"{rng.random() * 100:.1f}%"
    if kind == 3:
        low = int(rng.integers(1, 60))
        return f"{low}–{low + int(rng.integers(1, 40))}"
    if kind == 4:
        return str(int(rng.integers(1950, 2024)))
    return f"{int(rng.integers(1, 99))},{int(rng.integers(0, 999)):03d}"


def _decorated_word(rng: np.random.Generator, word: str) -> str:
    """``word`` or a replacement: proper noun, number, citation, acronym, parenthetical, Greek."""
    r = rng.random()
    if r < 0.05:
        return capitalise(word)
    if r < 0.08:
        return number_string(rng)
    if r < 0.095:
        return f"[{int(rng.integers(1, 60))}]"
    if r < 0.11:
        return "".join(rng.choice(list("ABCDEFGHIJKLMNOPRSTUVW"), size=rng.integers(2, 5)))
    if r < 0.12:
        return f"({word}"
    if r < 0.125:
        return str(rng.choice(list(GREEK)))
    if r < 0.135:
        return f"{word}-{words(rng, 1)[0]}"
    return word


def sentence(rng: np.random.Generator, min_words: int = 5, max_words: int = 26) -> str:
    """A capitalised pseudo-sentence with commas, numbers, citations, ending in a full stop."""
    n = int(rng.integers(min_words, max_words + 1))
    out = [_decorated_word(rng, w) for w in words(rng, n)]
    out[0] = capitalise(out[0])
    for i in range(2, n - 2):
        if rng.random() < 0.07:
            out[i] += "," if rng.random() < 0.85 else ";"
    for i, w in enumerate(out):
        if w.startswith("(") and not w.endswith(")"):
            out[min(i + int(rng.integers(0, 3)), n - 1)] += ")"
    end = "." if rng.random() < 0.97 else str(rng.choice([":", "?"]))
    return " ".join(out).rstrip(",;") + end


def paragraph(rng: np.random.Generator, min_sentences: int, max_sentences: int) -> str:
    return " ".join(sentence(rng) for _ in range(int(rng.integers(min_sentences, max_sentences + 1))))


def heading(rng: np.random.Generator, min_words: int = 1, max_words: int = 5) -> str:
    """A short heading: capitalised first word, or Title Case."""
    n = int(rng.integers(min_words, max_words + 1))
    ws = content_words(rng, 1) + words(rng, n - 1)
    while len(ws) > 1 and ws[-1] in _FUNCTION_WORDS:
        ws.pop()
    if rng.random() < 0.4:
        ws = [capitalise(w) if len(w) > 3 else w for w in ws]
    ws[0] = capitalise(ws[0])
    return " ".join(ws)


def title(rng: np.random.Generator) -> str:
    """A document title of 4-16 words, sometimes with a subtitle after a colon."""
    text = heading(rng, 3, 11)
    if rng.random() < 0.3:
        text += ": " + heading(rng, 2, 6)
    return text


def person_name(rng: np.random.Generator) -> str:
    first, last = content_words(rng, 2)
    initials = ". ".join(c.upper() for c in first[: rng.integers(1, 3)]) + "."
    return f"{initials} {capitalise(last)}" if rng.random() < 0.6 else f"{capitalise(first)} {capitalise(last)}"


def table_number(rng: np.random.Generator, kind: int) -> str:
    """A table cell value of column kind ``kind`` (0 count, 1 decimal, 2 percent, 3 money with
    negatives in parentheses, 4 mean ± sd, 5 p-value); sometimes a dash for a missing value."""
    if rng.random() < 0.04:
        return "–"
    if kind == 0:
        return f"{int(rng.integers(0, 2000)):,}"
    if kind == 1:
        return f"{rng.normal(0, 30):.2f}"
    if kind == 2:
        return f"{rng.random() * 100:.1f}%"
    if kind == 3:
        value = int(rng.normal(0, 50000))
        return f"({-value:,})" if value < 0 else f"{value:,}"
    if kind == 4:
        return f"{rng.random() * 90:.1f} ± {rng.random() * 9:.1f}"
    return "<0.001" if rng.random() < 0.2 else f"{rng.random() * 0.9:.3f}"


NUMBER_KINDS = 6

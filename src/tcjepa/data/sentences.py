"""Long descriptions -> one caption per sentence (docs/design.md §4.2: one caption = one sentence).

The paper splits generated descriptions into sentences and treats each as a caption. A full sentence
tokenizer is not needed for that, but a naive split at every full stop cuts "Dr. Smith", "e.g. a dog",
"J. R. R. Tolkien" and "the U.S. flag" in half. The rule here: a sentence ends at ``.``, ``!``, ``?``, an
ellipsis or ``…`` (plus any closing quotes or brackets right after it) when whitespace follows and the
next word does not start in lower case; a full stop does not end a sentence after a title or a
Latin abbreviation, a single capital (an initial) or a dotted acronym. A blank line always ends one.
When unsure it keeps the text together: a caption that runs on is truncated by the text encoder
(``text.max_len``), while one cut in half describes nothing.
"""

from __future__ import annotations

import re

# Terminator run, closing quotes/brackets, then the whitespace a next sentence would follow. Decimals
# ("3.5 m") and dotted acronyms inside ("U.S.") never match: no whitespace follows their inner dots.
_CANDIDATE = re.compile(r"(?P<term>[.!?\u2026]+)(?P<close>[\"'\u201d\u2019\u00bb)\]}]*)(?P<space>\s+)")
_PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_OPENERS = "\"'\u201c\u2018\u00ab([{"
_CLOSERS = "\"'\u201d\u2019\u00bb)]}"
_INITIAL = re.compile(r"[A-Z]")
_DOTTED = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")  # U.S, e.g, a.m (the last dot is the terminator)

# Words that a full stop follows but never ends a sentence with: they announce what comes next. "etc.",
# "Inc." or "Jr." can end a sentence, so they are not here; the next word's case decides for them.
NEVER_FINAL = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "st", "mt", "rev", "hon", "gen", "col", "capt", "lt", "sgt", "gov", "sen"}
    | {"rep", "pres", "fig", "figs", "eq", "vs", "cf", "viz", "approx", "e.g", "i.e"}
)


def _word_before(text: str, end: int) -> str:
    start = end
    while start > 0 and not text[start - 1].isspace() and end - start < 40:
        start -= 1
    return text[start:end].lstrip(_OPENERS).rstrip(_CLOSERS)


def _ends_sentence(text: str, m: re.Match) -> bool:
    nxt = m.end()
    if nxt >= len(text) or text[nxt].islower():  # end of text, or the sentence goes on ("etc. and", "... then")
        return False
    if m["term"] != ".":
        return True
    word = _word_before(text, m.start())
    return not (word.lower() in NEVER_FINAL or _INITIAL.fullmatch(word) or _DOTTED.fullmatch(word))


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``, stripped, in order; pieces without a letter or digit are dropped."""
    pieces: list[str] = []
    for paragraph in _PARAGRAPH.split(text):
        start = 0
        for m in _CANDIDATE.finditer(paragraph):
            if _ends_sentence(paragraph, m):
                pieces.append(paragraph[start : m.start("space")])
                start = m.end()
        pieces.append(paragraph[start:])
    return [p for p in (" ".join(p.split()) for p in pieces) if any(ch.isalnum() for ch in p)]


def split_captions(captions: list[str]) -> list[str]:
    """Every caption of an image cut into sentences, in order: the captions a dataset item carries."""
    return [s for caption in captions for s in split_sentences(caption)]

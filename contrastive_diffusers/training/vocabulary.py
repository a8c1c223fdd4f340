"""Word lists for the contrastive terms: a basis of English prepositions (ReVersion's
positives) and stop words (never used as negatives), and the content words of a caption.

The lists are plain English facts written for this project; the prepositions are single
words, so each is one token on real CLIP vocabularies (a word that a small vocabulary splits
into several pieces is represented by the mean of its pieces, see ``embeddings.word_embedding``).
"""

from __future__ import annotations

import regex

#: 56 single-word English prepositions: the relation basis that ReVersion steers ``<R>`` towards.
PREPOSITIONS: tuple[str, ...] = tuple(
    """aboard about above across after against along alongside amid among around at atop
    before behind below beneath beside between beyond by down during for from in inside
    into near of off on onto opposite out outside over past round since through throughout
    till to toward towards under underneath unlike until up upon via with within without""".split()
)

#: Function words that carry no object or relation content: articles, pronouns, auxiliaries,
#: conjunctions, quantifiers and number words.
STOP_WORDS: frozenset[str] = frozenset(
    """a an the this that these those there here it its it's he she him her his hers they them
    their theirs we us our ours you your yours i me my mine one ones is are was were be been
    being am has have had having do does did doing will would shall should can could may might
    must and or but nor so yet if then than as too very just not no nor only own same such both
    each every all any some few many much more most other another either neither what which who
    whom whose when where why how two three four five six seven eight nine ten s t""".split()
)

_WORD = regex.compile(r"<[^<>\s]+>|[\p{L}\p{N}]+(?:['\-][\p{L}\p{N}]+)*")


def caption_words(caption: str) -> list[str]:
    """Lower-cased words of a caption; ``<...>`` placeholder tokens are kept whole."""
    return [w if w.startswith("<") else w.lower() for w in _WORD.findall(caption)]


def content_words(captions, exclude=()) -> list[str]:
    """The distinct content words of ``captions`` in first-seen order: no stop words, no
    prepositions, no numbers, nothing in ``exclude`` (e.g. placeholder tokens), no
    ``<...>`` tokens."""
    excluded = set(exclude)
    seen: dict[str, None] = {}
    for caption in captions:
        for word in caption_words(caption):
            if word in excluded or word.startswith("<") or word in STOP_WORDS or word in PREPOSITIONS:
                continue
            if word.isdigit():
                continue
            seen.setdefault(word, None)
    return list(seen)

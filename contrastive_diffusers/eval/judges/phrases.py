"""Noun phrases of a prompt, as T2I-CompBench's B-VQA asks about them.

The official script (``BLIPvqa_eval/BLIP_vqa.py``) takes spaCy's ``en_core_web_sm`` noun chunks
of the prompt, in order, and asks one question per chunk (at most ``--np_num`` = 8). Two
splitters give those chunks here:

- ``"spacy"``: exactly the official one; needs ``pip install spacy`` and
  ``python -m spacy download en_core_web_sm`` (the model is not on PyPI, so it is not a
  dependency of this package).
- ``"rules"``: a hand-written stand-in (no tagger is available offline), exact for the grammar
  of T2I-CompBench's attribute-binding prompts ("a green bench and a red car", "rubber gloves
  and a wooden table"): a chunk is a maximal run of words between punctuation, conjunctions,
  prepositions, forms of "be"/"have", pronouns and verbs in "-ing", and a determiner or
  possessive ("the", "its") opens a new one. A word in "-ing" is taken for a verb only where a
  noun could not follow it (before a boundary, a determiner or the end: "a dog sitting on",
  "a man riding a horse"), after a form of "be" ("is making plans") or after "and" or a comma
  when an "-ing" verb came before ("holding a camera and taking photos"); elsewhere it modifies
  a noun ("a dining table", "flickering candles", "a clearing"). Longer sentences (the
  complex category, "A bathroom with white tile and a beige toilet.") come out as spaCy cuts
  them in the common cases but may differ where spaCy's tagger would call a word a verb or an
  adverb (a verb not in "-ing" stays inside a chunk here).

``"auto"`` uses spaCy when it and its English model are installed, else the rules; the splitter
actually used is recorded with the scores (a changed splitter re-scores).
"""

from __future__ import annotations

import re

SPLITTERS = ("auto", "spacy", "rules")

# Words that end a noun chunk (spaCy tags them CCONJ, ADP, AUX, PRON, PART, ADV or SCONJ).
_BOUNDARIES = frozenset(
    """
    and or but nor so yet then while as than that which who whom whose where when
    with without on in of at to from by for near beside besides behind under underneath above below over
    inside into onto upon within between among across along against around through toward towards
    beneath beyond past off out up down next about after before during except like
    is are was were be been being am has have had do does did can could will would should may might must
    it it's they them he him she hers we us you i me this these those there here not very also too just each other
    """.split()
)
# Nouns that end in "-ing" (not verbs): kept inside chunks.
_ING_NOUNS = frozenset(
    """
    building ceiling painting ring string king wing thing clothing bedding railing icing frosting
    sibling pudding dumpling wedding evening morning awning stuffing dressing topping filling
    sling swing spring lightning flooring siding carving drawing stocking earring ping
    duckling gosling seedling sapling meeting clearing opening shelving carpeting lighting
    """.split()
)
_AUXILIARIES = frozenset("is are was were be been being am".split())
_DETERMINERS = frozenset("a an the some any".split())
# Words that open a new chunk and belong to it (spaCy: DET, possessive PRON).
_STARTERS = _DETERMINERS | frozenset("its their his her our your my".split())
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:['-][A-Za-z0-9]+)*|[^\sA-Za-z0-9]")


def _ends_chunk(word: str) -> bool:
    """Punctuation and the closed-class words above; "-ing" words are decided in context."""
    return not re.match(r"[A-Za-z0-9]", word) or word.lower() in _BOUNDARIES


def _ends_in_ing(word: str) -> bool:
    lower = word.lower()
    return lower.endswith("ing") and len(lower) > 4 and lower not in _ING_NOUNS


def _is_ing_verb(word: str, previous: str | None, following: str | None, after_ing_verb: bool,
                 after_modifier: bool) -> bool:
    if not _ends_in_ing(word) or after_modifier:  # "a boring meeting": the noun of its modifier
        return False
    before = previous.lower() if previous else None
    if before in _AUXILIARIES:
        return True  # "is making plans"
    if before in _STARTERS:
        return False  # "a clearing", "the sparkling lake"
    if before in ("and", "or", ",") and after_ing_verb:
        return True  # "holding a camera and taking photos"
    # a verb is followed by what ends a chunk or opens a new one; a modifier by its noun
    return following is None or _ends_chunk(following) or following.lower() in _STARTERS


def rule_noun_phrases(prompt: str) -> list[str]:
    """The prompt's noun chunks by the rules above, in order, with their original case."""
    chunks, current = [], []
    words = _TOKEN.findall(prompt)
    after_ing_verb = False  # an "-ing" verb came earlier in the sentence
    after_modifier = False  # the previous word was an "-ing" word kept as a modifier
    for i, word in enumerate(words):
        previous = words[i - 1] if i else None
        following = words[i + 1] if i + 1 < len(words) else None
        ing_verb = _is_ing_verb(word, previous, following, after_ing_verb, after_modifier)
        after_ing_verb = (after_ing_verb or ing_verb) and word not in (".", "!", "?", ";")
        after_modifier = _ends_in_ing(word) and not ing_verb
        if ing_verb or _ends_chunk(word):
            chunks.append(current)
            current = []
        elif word.lower() in _STARTERS and any(w.lower() not in _STARTERS for w in current):
            chunks.append(current)
            current = [word]
        else:
            current.append(word)
    chunks.append(current)
    # a run of determiners alone ("the" before a verb) names nothing
    return [" ".join(c) for c in chunks if c and not all(w.lower() in _DETERMINERS for w in c)]


class PhraseSplitter:
    """Calls give a prompt's noun phrases; :attr:`name` says which splitter (``"spacy:<model>"``
    or ``"rules"``)."""

    def __init__(self, kind: str = "auto", spacy_model: str = "en_core_web_sm"):
        if kind not in SPLITTERS:
            raise ValueError(f"unknown phrase splitter {kind!r}; use one of {', '.join(SPLITTERS)}.")
        self._nlp = None
        if kind in ("auto", "spacy"):
            self._nlp = _load_spacy(spacy_model, required=kind == "spacy")
        self.name = f"spacy:{spacy_model}" if self._nlp is not None else "rules"

    def __call__(self, prompt: str) -> list[str]:
        if self._nlp is None:
            return rule_noun_phrases(prompt)
        return [chunk.text for chunk in self._nlp(prompt).noun_chunks]


def _load_spacy(model: str, required: bool):
    try:
        import spacy

        return spacy.load(model)
    except (ImportError, OSError) as err:
        if required:
            raise ValueError(
                f"the spaCy phrase splitter needs spaCy and its model {model!r} ({err}); install them with "
                f"`pip install spacy && python -m spacy download {model}`, or use phrase_splitter='rules'."
            ) from None
        return None

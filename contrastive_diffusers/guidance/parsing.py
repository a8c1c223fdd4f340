"""The built-in prompt parser: a prompt's objects as word groups, ``[attribute..., noun]``.

A small rule-based noun-phrase chunker, with no dependency but its word lists
(:mod:`.lexicon`). Each word gets a class from the lists or its ending (``-ing``, ``-ed``,
``-ly``); a word no list knows is a possible noun. Noun phrases are the runs of content
words between function words, and a verb ends a run ("a cat sitting on ...": the ``-ing``
word after a noun is a verb; "a sleeping cat": before a noun it is an attribute). Then:

- a phrase's last word is its noun; compound nouns keep all their words, the head last
  ("a red fire hydrant" -> ``["red", "fire", "hydrant"]``);
- a phrase ending in an adjective has no noun: its attributes carry over "and"/"," to the
  next phrase ("an orange and white cat"), bind to the subject after a copula ("the car
  is red", "a light that is green"), or are dropped ("a man dressed in black");
- frames ("a photo of", "this painting depicts"), relation nouns ("on top of", "left
  of"), counting nouns ("a pair of", "a group of"; their attributes go to the counted
  noun), pronouns, numbers and abstract nouns ("taking their time") are no objects.

The convention and the parser's accuracy on a hand-labelled set of benchmark prompts
(``tests/data/token_groups_dev.jsonl``) are in the README.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import regex

from . import lexicon as lx

_TOKEN = regex.compile(
    r"'(?:s|t|re|ve|m|ll|d)\b|[\p{L}\p{N}]+(?:-[\p{L}\p{N}]+)*|[^\s\p{L}\p{N}]",
    regex.IGNORECASE,
)
_CLITICS = frozenset(["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"])
_BE_CLITIC_HOSTS = frozenset(["that", "there", "it", "what", "here", "he", "she", "who", "which"])


def _normalize(text: str) -> str:
    # As CLIPTokenizer: NFC, one space between words, lower case; curly apostrophes as ASCII.
    text = unicodedata.normalize("NFC", text).replace("\u2019", "'")
    return regex.sub(r"\s+", " ", text).strip().lower()


def tokenize(text: str) -> list[str]:
    """Words (hyphenated words kept whole), clitics (``'s``) and punctuation marks."""
    return _TOKEN.findall(_normalize(text))


def _third_person(base: str) -> str:
    if base.endswith(("s", "sh", "ch", "x", "z", "o")):
        return base + "es"
    if len(base) > 2 and base.endswith("y") and base[-2] not in "aeiou":
        return base[:-1] + "ies"
    return base + "s"


_VERB_FORMS = lx.VERBS | {_third_person(v) for v in lx.VERBS} | lx.IRREGULAR_VERB_FORMS


def _is_participle(word: str) -> bool:
    """An ``-ing`` or ``-ed`` verb form ("sitting", "potted"), not a noun like "ceiling"."""
    if word in lx.ING_NOUNS or word in lx.ED_NOUNS or "-" in word:
        return False
    return (word.endswith("ing") and len(word) > 4) or (word.endswith("ed") and len(word) > 4)


# Word classes: function words end a phrase; content words build it.
DET, NUM, PRON, CONJ, PREP, COP, AUX, ADV, VERB, PUNCT, CLITIC = (
    "det", "num", "pron", "conj", "prep", "cop", "aux", "adv", "verb", "punct", "clitic"
)
ADJ, NOUN, PART, AMBIG = "adj", "noun", "part", "ambig"  # content classes (AMBIG: verb or noun)
_CONTENT = frozenset([ADJ, NOUN, PART, AMBIG])


def _lexical_class(word: str, prev: str | None) -> str:
    """A word's class from the word lists and its ending, before looking at its neighbours."""
    if word in _CLITICS:
        return COP if word == "'s" and prev in _BE_CLITIC_HOSTS else CLITIC
    if not regex.match(r"[\p{L}\p{N}]", word):
        return PUNCT
    if word.isdigit() or word in lx.NUMBERS:
        return NUM
    for cls, words in (
        (DET, lx.DETERMINERS), (PRON, lx.PRONOUNS), (CONJ, lx.CONJUNCTIONS),
        (PREP, lx.PREPOSITIONS), (COP, lx.COPULAS), (AUX, lx.AUXILIARIES),
    ):
        if word in words:
            return cls
    if word in lx.ADVERBS or (word.endswith("ly") and len(word) > 4 and word not in lx.ADJECTIVES):
        return ADV
    if word in lx.VERB_NOUNS:
        return AMBIG
    if word in lx.ADJECTIVES:
        return ADJ
    if _is_participle(word):
        return PART
    if word in _VERB_FORMS:
        return VERB
    return NOUN


@dataclass
class _Phrase:
    """A run of content words; ``has_det``: a determiner or number came just before it."""

    words: list[str]
    classes: list[str]
    start: int  # token index of the first word
    end: int  # token index after the last word
    has_det: bool = False

    @property
    def noun(self) -> str | None:
        """The head noun, or ``None`` when the phrase ends in an adjective or participle."""
        last, cls = self.words[-1], self.classes[-1]
        if cls in (NOUN, AMBIG):
            return last
        if cls == ADJ and last in lx.ADJECTIVE_NOUNS and (self.has_det or len(self.words) > 1):
            return last  # "a brown orange"
        return None


class _Chunker:
    """Splits tokens into phrases (runs of content words) and the function words between."""

    def __init__(self, tokens: list[str]):
        self.tokens = tokens
        self.classes = []
        for i, token in enumerate(tokens):
            self.classes.append(_lexical_class(token, tokens[i - 1] if i else None))
        for i, token in enumerate(tokens[1:], 1):
            if token == "'t" and tokens[i - 1].endswith("n"):
                # "isn't", "doesn't": split as CLIP splits them ("isn" + "'t"), an auxiliary and its negation
                self.classes[i - 1] = self.classes[i] = AUX
        for i, token in enumerate(tokens[:-1]):
            if token in lx.RELATIVES and self.classes[i + 1] in (COP, AUX, VERB, ADV):
                self.classes[i] = CONJ  # "a light that is green": "that" relative, not a determiner

    def _next_is_content(self, i: int) -> bool:
        return i + 1 < len(self.tokens) and self.classes[i + 1] in _CONTENT

    def _is_relation(self, i: int) -> bool:
        # "on top of", "at the bottom of", "left of", "on side of": a place, not an object.
        if self.tokens[i] not in lx.RELATION_NOUNS:
            return False
        if i + 1 < len(self.tokens) and self.tokens[i + 1] == "of":
            return True
        j = i - 1
        while j >= 0 and self.classes[j] == DET:
            j -= 1
        return j >= 0 and self.classes[j] == PREP

    def role(self, i: int, run_has_noun: bool, run_empty: bool, has_det: bool) -> str:
        """``"content"``, or the function class that ends the current phrase."""
        word, cls = self.tokens[i], self.classes[i]
        prev_cls = self.classes[i - 1] if i else None
        prev = self.tokens[i - 1] if i else None
        if self._is_relation(i):
            return PREP
        if word in lx.MODAL_NOUNS and not run_empty:
            return "content"  # "a cylindrical can"
        after_verb_slot = prev_cls in (PRON, COP, AUX) or prev == "to"
        if cls == PART or (cls == ADJ and _is_participle(word)):
            # After a noun, pronoun or auxiliary it is a verb ("a cat sitting", "is lying");
            # after a determiner or before a noun or adjective it is an attribute ("the
            # towering, majestic elephants", "a sleeping cat", "potted plant").
            if run_has_noun or (run_empty and after_verb_slot and cls == PART):
                return VERB
            if cls == ADJ or (run_empty and prev_cls in (DET, NUM)) or self._next_is_content(i):
                return "content"
            return VERB
        if cls == VERB and (prev_cls in (DET, NUM) or has_det) and not run_has_noun:
            return "content"  # "a chew toy", "a green cross": no verb follows a determiner
        if word in lx.ING_NOUNS and run_empty and prev_cls not in (DET, NUM, ADJ):
            nxt_cls = self.classes[i + 1] if i + 1 < len(self.tokens) else None
            if nxt_cls in (DET, PRON):
                return VERB  # "and painting a wall"
        if cls == AMBIG:
            nxt_cls = self.classes[i + 1] if i + 1 < len(self.tokens) else None
            if run_has_noun and nxt_cls in (DET, NUM, PRON, PREP, ADV):
                return VERB  # "the spatulas cook the eggs", "a man stands on"
            if run_empty and after_verb_slot and (prev != "to" or nxt_cls != NOUN):
                return VERB  # "it shows", "to fly" (but "to park benches")
            return "content"
        if cls in (ADJ, NOUN):
            if cls == NOUN and run_empty and prev_cls == PRON and prev not in ("there", "here"):
                return VERB  # "making it chug along": a word right after a pronoun
            return "content"
        return cls

    def phrases(self) -> list[_Phrase | tuple[int, str]]:
        """Phrases and ``(index, class)`` function tokens, in prompt order."""
        items: list[_Phrase | tuple[int, str]] = []
        run: list[int] = []
        has_det = False

        def close():
            nonlocal run, has_det
            if run:
                words = [self.tokens[j] for j in run]
                classes = [self.classes[j] if self.classes[j] in _CONTENT else NOUN for j in run]
                items.append(_Phrase(words, classes, run[0], run[-1] + 1, has_det))
            run, has_det = [], False

        for i in range(len(self.tokens)):
            run_has_noun = any(self.classes[j] in (NOUN, AMBIG) for j in run)
            role = self.role(i, run_has_noun, not run, has_det)
            if role == "content":
                run.append(i)
                continue
            close()
            has_det = role in (DET, NUM)
            items.append((i, role))
        close()
        return items


_CARRY_OVER = frozenset([",", "and", "or"])
_NEGATORS = frozenset(["not", "n't", "'t", "never"])
# What "'t" negates after (CLIP's split: "isn" + "'t", "can" + "'t").
_NEGATED_HOSTS = frozenset(
    "isn aren wasn weren don doesn didn hasn haven hadn can couldn won wouldn shouldn mustn needn mightn shan ain".split()
)
# Words that deny what follows them: a denied object or attribute is not drawn, so no method
# should excite it ("a dog and no cat" made a group of "cat").
DENYING_WORDS = _NEGATORS | frozenset(["no", "without", "neither", "nor"])
_DENIED = object()  # the subject of a predicate is a denied object
# What a "no ...ing" phrase names when it is a notice ("no parking sign", "a no smoking area").
_NOTICE_NOUNS = frozenset("sign signs zone zones area areas symbol symbols sticker stickers notice".split())
# After "not" these make no negation of what follows: "not only a cat", "not many people".
_NOT_NEGATING_AFTER_NOT = frozenset("only just many much all every enough quite too so always".split())


def _attribute_words(phrase) -> int:
    """How many words of a phrase come before its noun."""
    return next((j for j, c in enumerate(phrase.classes) if c in (NOUN, AMBIG)), 0)


@dataclass
class _Group:
    words: list[str]
    noun_start: int  # index of the first word of the (compound) noun: attributes go before it


class _Grouper:
    """Turns phrases into groups: carries, frames, counting nouns, predicate adjectives."""

    def __init__(self, tokens: list[str]):
        self.tokens = tokens
        self.items = _Chunker(tokens).phrases()
        self.groups: list[_Group] = []
        self.denied: set[int] = set()  # id() of the phrases that name a denied object
        self.denied_any: set[int] = set()  # ... or a denied attribute with no noun ("not brown")

    def _function_tokens_after(self, k: int) -> tuple[list[str], object]:
        """The function tokens after item ``k`` (adverbs skipped) and the next phrase, if any."""
        between = []
        for item in self.items[k + 1 :]:
            if isinstance(item, _Phrase):
                return between, item
            i, cls = item
            if cls != ADV:
                between.append(self.tokens[i])
        return between, None

    def _carries(self, k: int, phrase: _Phrase) -> bool:
        """Whether a phrase with no noun hands its attributes to the next ("red and white cat")."""
        between, nxt = self._function_tokens_after(k)
        if nxt is None or not between:
            return False
        if len(between) > 1 and between[-1] in _NEGATORS and nxt.noun is not None:
            # "a red and not blue car", "a red but not shiny car": the car is red, not blue/shiny
            return all(t in _CARRY_OVER or t in ("but", "yet") for t in between[:-1])
        if not set(between) & _CARRY_OVER:
            return False
        return all(t in _CARRY_OVER or t in lx.DETERMINERS or t in lx.NUMBERS for t in between)

    def _next_has_determiner(self, k: int) -> bool:
        _, nxt = self._function_tokens_after(k)
        return nxt is not None and nxt.has_det

    def _adjective_before_comma(self, k: int, phrase: _Phrase) -> bool:
        # "an orange and white cat", "the plump, red cherries": a colour noun or an unknown
        # one-word phrase followed by "and"/"," and a bare adjective, not by a new phrase.
        between, nxt = self._function_tokens_after(k)
        if nxt is None or between not in (["and"], [","], [",", "and"]) or nxt.classes[0] != ADJ:
            return False
        if all(c == ADJ for c in phrase.classes):
            return True
        return len(phrase.words) == 1 and between == [","] and nxt.noun is not None

    def _denial(self, k: int) -> str | None:
        """What a negation before phrase ``k`` denies: ``"object"`` ("no cat", "without a
        hat", "not a cloud", "neither a cat nor a dog", "cats, not dogs"; a list closed by
        "or" goes on denying, "without a hat, a scarf or gloves", and so does an "of" after
        a denied noun, "without a bowl of fruit"), ``"attributes"`` (no determiner between
        "not" and a noun with attributes: "a not very tall man", "a red but not shiny car",
        "a field with not very tall trees") or ``None`` ("a no parking sign" and "no smoking
        sign" name signs; "not only a cat", "not many people")."""
        phrase = self.items[k]
        determiner_after = False
        for j in range(k - 1, -1, -1):
            item = self.items[j]
            if not isinstance(item, tuple):
                return None
            token, cls = self.tokens[item[0]], item[1]
            if token == "'t" and not (item[0] and self.tokens[item[0] - 1] in _NEGATED_HOSTS):
                token = None  # "a frisbee in't mouth": a typo, not a negation
            if token in DENYING_WORDS:
                if token == "no":
                    before = self._previous(j)
                    names_a_thing = isinstance(before, tuple) and before[1] == DET
                    names_a_thing |= (not determiner_after and phrase.words[0].endswith("ing")
                                      and phrase.noun in _NOTICE_NOUNS)  # "no smoking sign", not "no flying birds"
                    return None if names_a_thing else "object"
                if token in _NEGATORS:
                    nxt = item[0] + 1
                    if nxt < len(self.tokens) and self.tokens[nxt] in _NOT_NEGATING_AFTER_NOT:
                        continue
                    if not determiner_after and phrase.noun is not None and _attribute_words(phrase):
                        return "attributes"
                return "object"
            if token == "of" or (token in ("or", ",") and self._list_closed_by_or(j)):
                previous = self._previous(j)
                while isinstance(previous, tuple) and self.tokens[previous[0]] in (",", "or"):
                    previous = self._previous(self.items.index(previous))
                return "object" if id(previous) in self.denied_any else None
            if cls not in (ADV, AUX, COP, DET, NUM):
                return None
            determiner_after = determiner_after or cls in (DET, NUM)
        return None

    def _list_closed_by_or(self, j: int) -> bool:
        """Whether the list that item ``j`` ("," or "or") belongs to ends with "or"/"nor":
        "no hat, scarf or gloves" denies all three, "no people, a stove and a sink" one."""
        if self.tokens[self.items[j][0]] == "or":
            return True
        for item in self.items[j + 1 :]:
            if not isinstance(item, tuple):
                continue
            token, cls = self.tokens[item[0]], item[1]
            if token in ("or", "nor"):
                return True
            if token != "," and cls not in (DET, NUM, ADV):
                return False
        return False

    def _previous(self, k: int):
        """The item before item ``k``, adverbs skipped."""
        for item in reversed(self.items[:k]):
            if not (isinstance(item, tuple) and item[1] == ADV):
                return item
        return None

    def _subject_for_predicate(self, k: int, clause_subject, made: dict) -> _Group | None:
        """The group an adjective after a copula binds to, when phrase ``k`` follows one
        (``_DENIED`` when its subject is a denied object)."""
        cop = self._previous(k)
        if not (isinstance(cop, tuple) and cop[1] == COP):
            return None
        before = self._previous(self.items.index(cop))
        if isinstance(before, tuple) and self.tokens[before[0]] in lx.RELATIVES:
            antecedent = self._previous(self.items.index(before))
            if id(antecedent) in self.denied:
                return _DENIED
            return made.get(id(antecedent))  # "a light that is green"; "something that is" binds nothing
        if id(before) in made or id(before) in self.denied:
            # The phrase right before the copula is the subject unless a preposition
            # attaches it to another ("the shirt on the table is white", "the cat without a
            # collar is black").
            head = self._previous(self.items.index(before))
            while isinstance(head, tuple) and head[1] in (DET, NUM):
                head = self._previous(self.items.index(head))
            if not (isinstance(head, tuple) and head[1] == PREP):
                return _DENIED if id(before) in self.denied else made[id(before)]  # "no cat is red"
        return clause_subject

    def run(self) -> list[list[str]]:
        carry: list[str] = []
        predicate_target = None
        clause_subject = None
        made: dict[int, _Group] = {}  # id(phrase) -> the group it made
        for k, item in enumerate(self.items):
            if isinstance(item, tuple):
                token = self.tokens[item[0]]
                carried_on = carry and token in ("but", "yet")  # "a red but not shiny car"
                if (token in ".;!?" or token in lx.CLAUSE_CONJUNCTIONS) and not carried_on:
                    clause_subject, carry, predicate_target = None, [], None
                continue
            phrase = item
            denial = self._denial(k)
            if denial == "object" or (denial and phrase.noun is None):
                # "a dog that is not brown and a white cat": a denied attribute binds to no
                # object (it used to carry over to the next one, "brown white cat"); "a man
                # without a hat": a denied object is no group.
                self.denied_any.add(id(phrase))
                if phrase.noun is not None:
                    self.denied.add(id(phrase))
                carry, predicate_target = [], None
                continue
            # "a not very tall man": the object stays, the attributes denied before its noun go
            cut = _attribute_words(phrase) if denial else 0
            if not carry:
                predicate_target = self._subject_for_predicate(k, clause_subject, made)
                if predicate_target is _DENIED:  # an attribute of a denied object: nothing to bind
                    carry, predicate_target = [], None
                    continue
            words = carry + phrase.words[cut:]
            noun = phrase.noun
            if noun is not None and self._adjective_before_comma(k, phrase):
                noun = None
            if noun is None:
                # A predicate ("the car is red and the bike is blue") binds to its subject; it
                # does not carry over to a next phrase that has its own determiner.
                predicate_ends = predicate_target is not None and self._next_has_determiner(k)
                if self._carries(k, phrase) and not predicate_ends:
                    carry = words
                    continue
                if predicate_target is not None and not phrase.has_det:
                    target = predicate_target
                    target.words[target.noun_start:target.noun_start] = words
                    target.noun_start += len(words)
                carry, predicate_target = [], None
                continue
            carry, predicate_target = [], None
            nxt = self.tokens[phrase.end] if phrase.end < len(self.tokens) else None
            if not self.groups and noun in lx.FRAME_NOUNS and nxt in lx.FRAME_VERBS:
                continue  # "a photo of ...", "this painting depicts ..."
            if noun in lx.MEASURE_NOUNS and nxt == "of":
                carry = words[:-1]  # "a short blade of grass" -> short grass
                continue
            if noun in lx.ABSTRACT_NOUNS:
                continue
            noun_start = len(carry) + next(
                (j for j, c in enumerate(phrase.classes[cut:]) if c in (NOUN, AMBIG)), len(phrase.words) - cut - 1
            )
            group = _Group(words, noun_start)
            self.groups.append(group)
            made[id(phrase)] = group
            if clause_subject is None:
                clause_subject = group
        return [g.words for g in self.groups]


def attribute_count(group) -> int:
    """How many leading words of a group ``[attribute..., noun]`` are attributes: those before
    the first word the word lists take for a noun (a word no list knows is one), the group's
    last word at the latest. Compound nouns keep their words: "red fire hydrant" -> 1,
    "teddy bear" -> 0, "big red car" -> 2; a material before another word is an attribute
    ("glass bowl" -> 1, "red metal fire hydrant" -> 2) unless the two words name one thing
    ("red paper towel" -> 1, "cotton candy" -> 0)."""
    words = [_normalize(w) for w in group]
    for j, word in enumerate(words[:-1]):
        if (word, words[j + 1]) in lx.MATERIAL_COMPOUNDS:
            return j
        if word in lx.MATERIALS:
            continue
        if _lexical_class(word, words[j - 1] if j else None) in (NOUN, AMBIG):
            return j
    return max(len(words) - 1, 0)


def is_number_word(word: str) -> bool:
    """A count: digits or a number word ("two", "dozen")."""
    word = _normalize(word)
    return word.isdigit() or word in lx.NUMBERS


def parse_builtin(prompt: str) -> list[list[str]]:
    """The prompt's objects as word groups ``[attribute..., noun]``, in prompt order."""
    return _Grouper(tokenize(prompt)).run()

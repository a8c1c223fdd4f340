"""Contrast captions: minimal perturbations of a prompt that change what it says
(Winoground-style), for binding metrics and contrastive training pairs."""

from __future__ import annotations

import hashlib
import re
import unicodedata

from ..guidance.parsing import attribute_count, is_number_word
from .attend_and_excite import ANIMALS, OBJECTS
from .items import SAFE_ID, WORD, PromptItem, prompt_words

#: Links between two objects that make their order meaningless ("a cat and a dog" = "a dog
#: and a cat"; "a mouse on side of a key", T2I-CompBench's spatial wording, = "a key on side
#: of a mouse"), read without the second object's article; any other words make it matter
#: ("a cat left of a dog", "a cat on a dog", "a cat with a hat", "a sticker on the side of a car").
_SYMMETRIC_LINKS = frozenset({
    "", "and", "or", "and also", "plus", "as well as", "along with", "together with", "alongside",
    "next to", "beside", "near", "near to", "close to", "by", "on side of",
})
_ARTICLES = frozenset({"a", "an", "the"})

#: Nouns whose plural has no -s, and nouns with one form for both numbers.
_IRREGULAR_PLURALS = {
    "people": "person", "men": "man", "women": "woman", "children": "child", "mice": "mouse", "geese": "goose",
    "feet": "foot", "teeth": "tooth", "oxen": "ox", "knives": "knife", "wolves": "wolf", "leaves": "leaf",
    "loaves": "loaf", "shelves": "shelf", "calves": "calf", "halves": "half", "scarves": "scarf", "cacti": "cactus",
}
_SAME_IN_BOTH_NUMBERS = frozenset({"sheep", "fish", "deer", "moose", "bison", "salmon", "trout", "aircraft",
                                   "species", "series", "offspring"})
#: Words right before an object's phrase that fix its number ("a sheep", "some sheep").
_SINGULAR_BEFORE = frozenset({"a", "an", "one", "each", "every", "this", "that", "another", "single"})
_PLURAL_BEFORE = frozenset({"some", "many", "several", "few", "these", "those", "both", "multiple", "various"})

#: Words whose first letter misleads "a" / "an": the sound decides ("a unicorn", "an hour").
_CONSONANT_SOUND = ("uni", "use", "usu", "uti", "ute", "uri", "uk", "u-", "eu", "ewe", "one", "once")
_NOT_CONSONANT_SOUND = ("unim", "unin", "unid")  # "an unidentified", "an uninvited"
_VOWEL_SOUND = ("hour", "honest", "honor", "honour", "heir")

__all__ = ["contrast_set", "split_group"]


def _locate(item: PromptItem) -> tuple[list[re.Match], list[list[tuple[int, int]]]]:
    """Prompt word matches, and per group per entry the ``(first, last + 1)`` word-index span.

    Each group's noun takes its first occurrence not taken by an earlier group, preferring one
    right after the group's word before it ("a toy car beside a red car": ``["red", "car"]``
    is the second car); each attribute the nearest untaken occurrence before the group's next
    word, so "a red car and a red bench" gives each "red" to its own noun.
    """
    tokens = list(WORD.finditer(item.prompt))
    lowered = [t.group().lower() for t in tokens]

    def starts(entry: str) -> list[int]:
        parts = [w.lower() for w in prompt_words(_as_written(entry))]
        if not parts:
            return []
        k = len(parts)
        return [i for i in range(len(lowered) - k + 1) if lowered[i : i + k] == parts]

    taken: set[int] = set()

    def free(start: int, k: int) -> bool:
        return not taken.intersection(range(start, start + k))

    spans = []
    for group in item.token_groups:
        k_of = [max(len(prompt_words(w)), 1) for w in group]
        found = [starts(w) for w in group]
        for word, where in zip(group, found):
            if not where:
                raise ValueError(
                    f"Token group word {word!r} not found in prompt {item.prompt!r} (item "
                    f"{item.id!r}); fix the token groups or the prompt."
                )
        noun_k = k_of[-1]
        free_nouns = [s for s in found[-1] if free(s, noun_k)]
        if len(group) > 1:  # prefer the noun its group's previous word stands right before
            after = [s for s in free_nouns if any(a + k_of[-2] == s for a in found[-2])]
            free_nouns = after + [s for s in free_nouns if s not in after]
        noun = free_nouns[0] if free_nouns else found[-1][0]
        group_spans = [(noun, noun + noun_k)]
        anchor = noun
        for word_starts, k in zip(reversed(found[:-1]), reversed(k_of[:-1])):
            before = [s for s in word_starts if s + k <= anchor and free(s, k)]
            anywhere = [s for s in word_starts if free(s, k)]
            s = before[-1] if before else (anywhere[0] if anywhere else word_starts[0])
            group_spans.insert(0, (s, s + k))
            anchor = s
        for s, e in group_spans:
            taken.update(range(s, e))
        spans.append(group_spans)
    return tokens, spans


def _as_written(entry: str) -> str:
    """A group word as a prompt writes it: composed accents, and no spaces inside a word
    ("t - shirt", "rubik 's": the words a tokenizer's pieces give back)."""
    return re.sub(r"\s*(['\-])\s*", r"\1", unicodedata.normalize("NFC", entry))


def _article(before: str, following: str) -> str:
    """"a" or "an" (in ``before``'s case) for the word ``following``: by its first letter, but
    "a unicorn", "a European", "a one-way", "an hour"."""
    word = following.lower()
    vowel = word[:1] in "aeiou"
    if word.startswith(_CONSONANT_SOUND) and not word.startswith(_NOT_CONSONANT_SOUND):
        vowel = False
    elif word.startswith(_VOWEL_SOUND):
        vowel = True
    article = "an" if vowel else "a"
    return article.capitalize() if before[:1].isupper() else article


def _edit(prompt: str, tokens, edits: list[tuple[tuple[int, int], str]], articles: bool = False) -> str | None:
    """Replace word-index spans with texts; ``None`` when spans overlap. ``articles``: an "a" /
    "an" right before an edited span is re-chosen for its new first word ("a purple square" ->
    "an orange square"), by the first letter (so "an unicorn" can happen)."""
    if articles:
        edited = {i for (s, e), _ in edits for i in range(s, e)}
        for (s, _), text in list(edits):
            before = tokens[s - 1].group() if s > 0 else ""
            if before.lower() in ("a", "an") and s - 1 not in edited:
                edits = [*edits, ((s - 1, s), _article(before, text))]
    char_edits = sorted((tokens[s].start(), tokens[e - 1].end(), text) for (s, e), text in edits)
    for (_, end, _), (start, _, _) in zip(char_edits, char_edits[1:]):
        if start < end:
            return None
    out = prompt
    for start, end, text in reversed(char_edits):
        out = out[:start] + text + out[end:]
    return out


def _articles_follow_the_rule(tokens) -> bool:
    """Whether every "a" / "an" of the prompt is the one its next word's first letter asks for
    (the published A&E set writes "a" before every noun: "a apple")."""
    words = [t.group() for t in tokens]
    return all(word.lower() == _article(word, following).lower()
               for word, following in zip(words, words[1:]) if word.lower() in ("a", "an"))


def _plural(noun: str) -> bool | None:
    """A rough plural test by the noun's form ("cats", "glasses", "mice"; not "glass", "bus");
    ``None`` for a noun with one form for both ("sheep")."""
    noun = noun.lower()
    if noun in _IRREGULAR_PLURALS:
        return True
    if noun in _SAME_IN_BOTH_NUMBERS:
        return None
    return noun.endswith("s") and not noun.endswith(("ss", "us", "is"))


def _number(noun: str, before: str) -> bool | None:
    """Whether the object is plural: by the word before its phrase where that fixes it ("a
    scissors", "some sheep", "three"), else by the noun's form; ``None`` when neither tells."""
    before = before.lower()
    if before in _SINGULAR_BEFORE:
        return False
    if before in _PLURAL_BEFORE or (is_number_word(before) and before not in ("one", "1")):
        return True
    return _plural(noun)


def _singular(word: str) -> str:
    """A rough singular form, to compare nouns across number ("dogs" ~ "dog", "mice" ~ "mouse")."""
    word = word.lower()
    if word in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[word]
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "sses", "xes", "zes")):
        return word[:-2]
    if _plural(word):
        return word[:-1]
    return word


def _vocabulary_next(noun: str, avoid: set[str], plural: bool) -> str | None:
    """The next noun of ``noun``'s list that is not in ``avoid`` in either number ("dog" is
    not brought into "a cat and three dogs") and is plural or not as asked."""
    avoid = {_singular(w) for w in avoid}
    for vocab in (ANIMALS, OBJECTS):
        if noun in vocab:
            i = vocab.index(noun)
            for step in range(1, len(vocab)):
                candidate = vocab[(i + step) % len(vocab)]
                if _singular(candidate) not in avoid and _plural(candidate) == plural:
                    return candidate
    return None


def split_group(group) -> tuple[list[str], list[str]]:
    """``(attributes, noun words)`` of a group: a compound noun keeps its words ("red fire
    hydrant" -> red | fire hydrant; :func:`~contrastive_diffusers.guidance.parsing.attribute_count`)."""
    n = attribute_count(group)
    return list(group[:n]), list(group[n:])


def _bindings(groups) -> frozenset:
    """What a caption says: which attributes (in any order) go with which noun."""
    splits = (split_group(g) for g in groups)
    return frozenset((frozenset(w.lower() for w in attributes), " ".join(w.lower() for w in noun))
                     for attributes, noun in splits)


def _recase(text: str, like: str, to_start: bool, from_start: bool) -> str:
    """``text`` moved to where ``like`` stood: the sentence start's capital stays at the start
    ("Red car and blue bench" -> "Blue car and red bench"); elsewhere words keep their case
    ("a whale in front of the Sydney Opera House" -> "a Sydney Opera House in front of the whale")."""
    if to_start and like[:1].isupper():
        return text[:1].upper() + text[1:]
    if from_start and text[:1].isupper() and text[1:2].islower():
        return text[:1].lower() + text[1:]
    return text


def _derived_id(source_id: str, name: str) -> str:
    """``"<source id>~<perturbation>"``, the source id shortened (with a hash of it) where the
    whole would pass the id length limit."""
    derived = f"{source_id}~{name}"
    if SAFE_ID.fullmatch(derived):
        return derived
    digest = hashlib.sha1(source_id.encode()).hexdigest()[:8]
    return f"{source_id[: 200 - len(name) - 10]}-{digest}~{name}"


def contrast_set(item: PromptItem) -> list[PromptItem]:
    """Minimal perturbations of a prompt with token groups (Winoground-style contrast captions).

    A group's attributes are its words before its (compound) noun: "red fire hydrant" is red
    | fire hydrant, "teddy bear" has none (:func:`_split`). Groups with a count ("two cats",
    or a number right before the group) are never swapped: the count and the noun's number
    would not follow.

    - ``swap_attributes`` (exactly two groups, both with attributes, each group's attributes
      consecutive words): "a red car and a blue bench" -> "a blue car and a red bench". Left
      out when it binds the same attributes to the same nouns ("a red car and a blue car",
      attributes that differ only in case or order). The article before a swapped word is
      re-chosen by sound ("a purple square and an orange cross" -> "an orange square and a
      purple cross"; "a unicorn", "an hour"); the sentence start's capital stays at the start,
      other words keep their case ("The Alamo").
    - ``swap_objects`` (exactly two groups, the objects both singular or both plural: by "a",
      "some", a count before them, else by the noun, "mice" and "people" plural; "sheep"
      with neither is not swapped): the nouns swap, attributes stay in place -> "a cat and a
      red bench" becomes "a bench and a red cat"; "a cat to the left of a dog" becomes "a dog
      to the left of a cat". Where only a symmetric link stands between the objects ("and",
      "next to", "beside", "near", "by", "along with", "as well as", "on side of", ...: their
      order means nothing), it is left out when it binds the same attributes to the same nouns as the
      prompt ("a dog and a cat" only paraphrases "a cat and a dog") or as ``swap_attributes``
      ("a red bench and a blue car" says what "a blue car and a red bench" says): a contrast
      caption must mean something else.
    - ``replace_object``: the last group whose noun is in :data:`ANIMALS` or :data:`OBJECTS`
      gets the next noun of that list that is no word of the prompt in either number ("a cat
      and three dogs" gets no "dog") and as plural as it -> "a red car and a blue clock"; "an
      elephant" becomes "a monkey". A prompt with any article that breaks the article rule,
      as the published A&E set writes them ("a apple"), keeps all its articles.

    Group words are matched as the prompt writes them: composed accents, and a tokenizer's
    "t - shirt" is the prompt's "t-shirt". A perturbation that does not apply, or would leave
    the prompt unchanged (equal attributes), is left out. Ids are ``"<source id>~<perturbation>"``
    (a source id too long for that is shortened, with a hash of it); metadata is ``{"perturbation": ...,
    "source_id": ...}``. Raises ``ValueError`` when the item has no token groups or a group's
    word is not in the prompt.
    """
    if not item.token_groups:
        raise ValueError(
            f"contrast_set needs token groups; item {item.id!r} ({item.prompt!r}) has none. Set "
            'token_groups, e.g. [["red", "car"], ["blue", "bench"]].'
        )
    groups = item.token_groups
    if not unicodedata.is_normalized("NFC", item.prompt):  # decomposed accents: "cafe\u0301" is one word
        item = PromptItem(item.id, unicodedata.normalize("NFC", item.prompt), item.category, groups, item.metadata)
    tokens, spans = _locate(item)
    articles = _articles_follow_the_rule(tokens)  # else the prompt's own style is kept, "a orange" included

    def text(span: tuple[int, int]) -> str:
        return item.prompt[tokens[span[0]].start() : tokens[span[1] - 1].end()]

    def consecutive(word_spans) -> bool:
        return all(x[1] == y[0] for x, y in zip(word_spans, word_spans[1:]))

    def counted(group, group_spans) -> bool:
        first = group_spans[0][0]
        return any(is_number_word(w) for w in group) or (first > 0 and is_number_word(tokens[first - 1].group()))

    def swap(first, second) -> list[tuple[tuple[int, int], str]]:
        a, b = text(first), text(second)
        return [(first, _recase(b, a, first[0] == 0, second[0] == 0)),
                (second, _recase(a, b, second[0] == 0, first[0] == 0))]

    def before(group_spans) -> str:
        first = min(s for s, _ in group_spans)
        return tokens[first - 1].group() if first > 0 else ""

    results: list[tuple[str, str, list[list[str]]]] = []

    if len(groups) == 2 and not any(counted(g, sp) for g, sp in zip(groups, spans)):
        (a_attr_words, a_noun_words), (b_attr_words, b_noun_words) = split_group(groups[0]), split_group(groups[1])
        na, nb = len(a_attr_words), len(b_attr_words)
        a_spans, b_spans = spans
        a_attr, b_attr = a_spans[:na], b_spans[:nb]
        a_noun, b_noun = a_spans[na:], b_spans[nb:]
        if a_attr and b_attr and consecutive(a_attr) and consecutive(b_attr):
            a_region = (a_attr[0][0], a_attr[-1][1])
            b_region = (b_attr[0][0], b_attr[-1][1])
            prompt = _edit(item.prompt, tokens, swap(a_region, b_region), articles)
            new_groups = [b_attr_words + a_noun_words, a_attr_words + b_noun_words]
            if _bindings(new_groups) != _bindings(groups):  # "a red car and a blue car": a paraphrase
                results.append(("swap_attributes", prompt, new_groups))
        numbers = [_number(noun[-1], before(sp)) for noun, sp in ((a_noun_words, a_spans), (b_noun_words, b_spans))]
        same_number = numbers[0] is not None and numbers[0] == numbers[1]
        if consecutive(a_noun) and consecutive(b_noun) and same_number:
            a_region, b_region = (a_noun[0][0], a_noun[-1][1]), (b_noun[0][0], b_noun[-1][1])
            prompt = _edit(item.prompt, tokens, swap(a_region, b_region), articles)
            new_groups = [a_attr_words + b_noun_words, b_attr_words + a_noun_words]
            # the words between the two objects' phrases (attributes excluded)
            (_, left_end), (right_start, _) = sorted((min(s for s, _ in sp), max(e for _, e in sp)) for sp in spans)
            between = [t.group().lower() for t in tokens[left_end:right_start]]
            while between and between[-1] in _ARTICLES:  # "and a", "next to the"
                between.pop()
            between = " ".join(between)
            said = [_bindings(groups)] + [_bindings(g) for _, _, g in results]
            if between not in _SYMMETRIC_LINKS or _bindings(new_groups) not in said:
                results.append(("swap_objects", prompt, new_groups))

    words = {t.group().lower() for t in tokens}
    for index in reversed(range(len(groups))):
        if len(split_group(groups[index])[1]) > 1:  # a compound noun: "teddy bear" is no "teddy lion"
            continue
        start = spans[index][-1][0]
        # after "a" a singular noun (the A&E set writes "a glasses"), else as plural as the noun
        plural = bool(_number(groups[index][-1], before(spans[index])))
        replacement = _vocabulary_next(groups[index][-1].lower(), words, plural)
        if replacement is None:
            continue
        old = text(spans[index][-1])
        new = replacement.capitalize() if old[:1].isupper() else replacement
        prompt = _edit(item.prompt, tokens, [(spans[index][-1], new)], articles)
        new_groups = [list(g) for g in groups]
        new_groups[index] = groups[index][:-1] + [replacement]
        results.append(("replace_object", prompt, new_groups))
        break

    return [
        PromptItem(
            _derived_id(item.id, name),
            prompt,
            item.category,
            new_groups,
            {"perturbation": name, "source_id": item.id},
        )
        for name, prompt, new_groups in results
        if prompt is not None and prompt != item.prompt
    ]

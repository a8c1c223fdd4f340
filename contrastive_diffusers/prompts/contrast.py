"""Contrast captions: minimal perturbations of a prompt that change what it says
(Winoground-style), for binding metrics and contrastive training pairs."""

from __future__ import annotations

import re

from ..guidance.parsing import attribute_count, is_number_word
from .attend_and_excite import ANIMALS, OBJECTS
from .items import WORD, PromptItem, prompt_words

#: Words between two objects that make their order meaningless ("a cat and a dog" = "a dog
#: and a cat"; "a cat next to a dog" = "a dog next to a cat"); any other word makes it matter
#: ("a cat left of a dog", "a cat on a dog", "a cat with a hat").
_SYMMETRIC_LINKS = frozenset({"and", "&", ",", "or", "a", "an", "the", "next", "to", "beside", "near"})

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
        parts = [w.lower() for w in prompt_words(entry)]
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


def _article(before: str, following: str) -> str:
    """"a" or "an" (in ``before``'s case) for the word ``following``, by its first letter."""
    article = "an" if following[:1].lower() in "aeiou" else "a"
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


def _plural(noun: str) -> bool:
    """A rough plural test for nouns of these prompts ("cats", "glasses"; not "glass", "bus")."""
    noun = noun.lower()
    return noun.endswith("s") and not noun.endswith(("ss", "us", "is"))


def _vocabulary_next(noun: str, avoid: set[str], plural: bool) -> str | None:
    """The next noun of ``noun``'s list that is not in ``avoid`` and is plural or not as asked."""
    for vocab in (ANIMALS, OBJECTS):
        if noun in vocab:
            i = vocab.index(noun)
            for step in range(1, len(vocab)):
                candidate = vocab[(i + step) % len(vocab)]
                if candidate not in avoid and _plural(candidate) == plural:
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


def _recase(text: str, like: str) -> str:
    """``text`` moved to where ``like`` stood: a capital first letter where ``like`` had one
    (the sentence start), a small one where it had none ("Red car and blue bench")."""
    if like[:1].isupper():
        return text[:1].upper() + text[1:]
    if text[:1].isupper() and text[1:2].islower():
        return text[:1].lower() + text[1:]
    return text


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
      re-chosen ("a purple square and an orange cross" -> "an orange square and a purple
      cross"), a moved word's capital follows the sentence start.
    - ``swap_objects`` (exactly two groups, the nouns both singular or both plural): the
      nouns swap, attributes stay in place -> "a cat and a red bench" becomes "a bench and a
      red cat"; "a cat to the left of a dog" becomes "a dog to the left of a cat". Where only
      "and", "next to", "beside" or "near" stand between the objects, their order means
      nothing: then it is left out when it binds the same attributes to the same nouns as the
      prompt ("a dog and a cat" only paraphrases "a cat and a dog") or as ``swap_attributes``
      ("a red bench and a blue car" says what "a blue car and a red bench" says): a contrast
      caption must mean something else.
    - ``replace_object``: the last group whose noun is in :data:`ANIMALS` or :data:`OBJECTS`
      gets the next noun of that list that is no word of the prompt and as plural as it ->
      "a red car and a blue clock"; "an elephant" becomes "a monkey". A prompt with any
      article that breaks this rule, as the published A&E set writes them ("a apple"), keeps
      all its articles.

    A perturbation that does not apply, or would leave the prompt unchanged (equal attributes),
    is left out. Ids are ``"<source id>~<perturbation>"``; metadata is ``{"perturbation": ...,
    "source_id": ...}``. Raises ``ValueError`` when the item has no token groups or a group's
    word is not in the prompt.
    """
    if not item.token_groups:
        raise ValueError(
            f"contrast_set needs token groups; item {item.id!r} ({item.prompt!r}) has none. Set "
            'token_groups, e.g. [["red", "car"], ["blue", "bench"]].'
        )
    groups = item.token_groups
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
        return [(first, _recase(text(second), text(first))), (second, _recase(text(first), text(second)))]

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
        same_number = _plural(a_noun_words[-1]) == _plural(b_noun_words[-1])
        if consecutive(a_noun) and consecutive(b_noun) and same_number:
            a_region, b_region = (a_noun[0][0], a_noun[-1][1]), (b_noun[0][0], b_noun[-1][1])
            prompt = _edit(item.prompt, tokens, swap(a_region, b_region), articles)
            new_groups = [a_attr_words + b_noun_words, b_attr_words + a_noun_words]
            # the words between the two objects' phrases (attributes excluded)
            (_, left_end), (right_start, _) = sorted((min(s for s, _ in sp), max(e for _, e in sp)) for sp in spans)
            between = {t.group().lower() for t in tokens[left_end:right_start]}
            said = [_bindings(groups)] + [_bindings(g) for _, _, g in results]
            if not between <= _SYMMETRIC_LINKS or _bindings(new_groups) not in said:
                results.append(("swap_objects", prompt, new_groups))

    words = {t.group().lower() for t in tokens}
    for index in reversed(range(len(groups))):
        if len(split_group(groups[index])[1]) > 1:  # a compound noun: "teddy bear" is no "teddy lion"
            continue
        start = spans[index][-1][0]
        after_article = start > 0 and tokens[start - 1].group().lower() in ("a", "an")
        # after "a" a singular noun (the A&E set writes "a glasses"), else as plural as the noun
        plural = False if after_article else _plural(groups[index][-1])
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
            f"{item.id}~{name}",
            prompt,
            item.category,
            new_groups,
            {"perturbation": name, "source_id": item.id},
        )
        for name, prompt, new_groups in results
        if prompt is not None and prompt != item.prompt
    ]

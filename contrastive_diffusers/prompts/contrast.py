"""Contrast captions: minimal perturbations of a prompt that change what it says
(Winoground-style), for binding metrics and contrastive training pairs."""

from __future__ import annotations

import re

from .attend_and_excite import ANIMALS, OBJECTS
from .items import WORD, PromptItem, prompt_words

__all__ = ["contrast_set"]


def _locate(item: PromptItem) -> tuple[list[re.Match], list[list[tuple[int, int]]]]:
    """Prompt word matches, and per group per entry the ``(first, last + 1)`` word-index span.

    Each group's noun takes its first occurrence not taken by an earlier group; each attribute
    the nearest untaken occurrence before the group's next word, so "a red car and a red bench"
    gives each "red" to its own noun.
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
        noun = next((s for s in found[-1] if free(s, noun_k)), found[-1][0])
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


def _vocabulary_next(noun: str, avoid: set[str]) -> str | None:
    for vocab in (ANIMALS, OBJECTS):
        if noun in vocab:
            i = vocab.index(noun)
            for step in range(1, len(vocab)):
                candidate = vocab[(i + step) % len(vocab)]
                if candidate not in avoid:
                    return candidate
    return None


def _bindings(groups) -> frozenset:
    """What a caption says: which attributes go with which noun."""
    return frozenset((tuple(w.lower() for w in g[:-1]), g[-1].lower()) for g in groups)


def contrast_set(item: PromptItem) -> list[PromptItem]:
    """Minimal perturbations of a prompt with token groups (Winoground-style contrast captions).

    - ``swap_attributes`` (exactly two groups, both with attributes, each group's attributes
      consecutive words): "a red car and a blue bench" -> "a blue car and a red bench". Left
      out when it binds the same attributes to the same nouns ("a red car and a blue car",
      or attributes that differ only in case). The article before a swapped word is re-chosen
      ("a purple square and an orange cross" -> "an orange square and a purple cross").
    - ``swap_objects`` (exactly two groups): nouns swap, attributes stay in place -> "a cat
      and a red bench" becomes "a bench and a red cat". Left out when it binds the same
      attributes to the same nouns as the prompt ("a dog and a cat" only paraphrases "a cat
      and a dog") or as ``swap_attributes`` ("a red bench and a blue car" says what "a blue
      car and a red bench" says): a contrast caption must mean something else.
    - ``replace_object``: the last group whose noun is in :data:`ANIMALS` or :data:`OBJECTS`
      gets the next noun of that list that is none of the prompt's nouns -> "a red car and a
      blue clock"; "an elephant" becomes "a monkey". A prompt with any article that breaks
      this rule, as the published A&E set writes them ("a apple"), keeps all its articles.

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

    results: list[tuple[str, str, list[list[str]]]] = []

    if len(groups) == 2:
        a_spans, b_spans = spans
        a_attr, b_attr = a_spans[:-1], b_spans[:-1]
        if a_attr and b_attr and consecutive(a_attr) and consecutive(b_attr):
            a_region = (a_attr[0][0], a_attr[-1][1])
            b_region = (b_attr[0][0], b_attr[-1][1])
            prompt = _edit(item.prompt, tokens, [(a_region, text(b_region)), (b_region, text(a_region))], articles)
            new_groups = [groups[1][:-1] + groups[0][-1:], groups[0][:-1] + groups[1][-1:]]
            if _bindings(new_groups) != _bindings(groups):  # "a red car and a blue car": a paraphrase
                results.append(("swap_attributes", prompt, new_groups))
        prompt = _edit(
            item.prompt, tokens, [(a_spans[-1], text(b_spans[-1])), (b_spans[-1], text(a_spans[-1]))], articles
        )
        new_groups = [groups[0][:-1] + groups[1][-1:], groups[1][:-1] + groups[0][-1:]]
        if _bindings(new_groups) not in [_bindings(groups)] + [_bindings(g) for _, _, g in results]:
            results.append(("swap_objects", prompt, new_groups))

    nouns = {g[-1].lower() for g in groups}
    for index in reversed(range(len(groups))):
        replacement = _vocabulary_next(groups[index][-1].lower(), nouns)
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

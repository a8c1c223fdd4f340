"""Token groups: which positions of a prompt's ``input_ids`` belong to which object.

Attention-map guidance (Attend-and-Excite, CONFORM, EBAMA, SynGen) reads the cross-attention
maps of selected tokens. A *token group* is one object of the prompt: its attribute words
followed by its noun (the group's last word), e.g. ``"a red car and a blue bench"`` gives
``[["red", "car"], ["blue", "bench"]]``. Positions index the tokenizer's ``input_ids``:
0 is ``<|startoftext|>``, 1..n the prompt's own tokens, n+1 ``<|endoftext|>``, then padding.

Words are found by CLIP's own pre-tokenization, so a word that BPE splits into several
pieces ("zebra" -> z e b r a) maps to all of its positions. This needs no offsets mapping,
so it works with slow and fast ``CLIPTokenizer``s alike.
"""

from __future__ import annotations

import functools
import numbers
import unicodedata
from dataclasses import dataclass
from typing import Sequence

import regex

from .parsing import parse_builtin

# CLIP's pre-tokenizer pattern (transformers' CLIPTokenizer / openai CLIP simple_tokenizer).
_CLIP_PAT = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


@dataclass(frozen=True)
class TokenGroup:
    """One object of a prompt: the token positions of its words, the noun last."""

    words: tuple[str, ...]
    word_positions: tuple[tuple[int, ...], ...]

    def __post_init__(self):
        if not self.words or len(self.words) != len(self.word_positions):
            raise ValueError("A TokenGroup needs at least one word and one positions tuple per word.")
        if any(not positions for positions in self.word_positions):
            raise ValueError("Every word of a TokenGroup needs at least one token position.")

    @property
    def noun(self) -> tuple[int, ...]:
        """Positions of the noun (the last word)."""
        return self.word_positions[-1]

    @property
    def modifiers(self) -> tuple[tuple[int, ...], ...]:
        """Positions of each attribute word (every word but the last)."""
        return self.word_positions[:-1]

    @property
    def positions(self) -> tuple[int, ...]:
        """All positions, in word order, each once (two words can share a T5 piece)."""
        return tuple(dict.fromkeys(p for positions in self.word_positions for p in positions))


@dataclass(frozen=True)
class PromptTokens:
    """A prompt's ``input_ids`` (start and end tokens included, no padding) and its words."""

    prompt: str
    input_ids: tuple[int, ...]
    pieces: tuple[str, ...]
    words: tuple[tuple[str, tuple[int, ...]], ...]
    added: tuple[str, ...] = ()  # the tokenizer's added words (learned tokens), each one word

    @property
    def length(self) -> int:
        """Number of the prompt's own tokens (start and end tokens excluded)."""
        return len(self.input_ids) - 2

    def describe(self) -> str:
        """The prompt's token positions and pieces, e.g. ``"1:'a' 2:'red' 3:'car'"``."""
        if self.length <= 0:
            return "(no tokens)"
        return " ".join(
            f"{i}:{self.pieces[i].replace('</w>', '')!r}" for i in range(1, self.length + 1)
        )


def _normalize(text: str) -> str:
    # What CLIPTokenizer does before its pre-tokenizer: NFC, collapse whitespace, lowercase.
    text = unicodedata.normalize("NFC", text)
    return regex.sub(r"\s+", " ", text).strip().lower()


def _pre_tokenize(text: str, added: Sequence[str] = ()) -> list[str]:
    """CLIP's pre-token words of ``text``; each of the ``added`` tokens in it (learned words such
    as ``"<cat-toy>"``, which the tokenizer keeps whole, in any case as CLIP's tokenizer matches
    them after lowercasing) is one word, spelled as added."""
    text = _normalize(text)
    if not added:
        return _CLIP_PAT.findall(text)
    spelling = {a.lower(): a for a in reversed(added)}  # longest first: the first spelling wins a tie
    parts = regex.split("(" + "|".join(regex.escape(a.lower()) for a in added) + ")", text)
    return [w for i, part in enumerate(parts) for w in ([spelling[part]] if i % 2 else _CLIP_PAT.findall(part))]


def added_words(tokenizer) -> tuple[str, ...]:
    """The tokens added to ``tokenizer``'s vocabulary that are no special tokens (textual
    inversion's, ReVersion's and MCPL's learned words), longest first."""
    vocab = tokenizer.get_added_vocab() if hasattr(tokenizer, "get_added_vocab") else {}
    special = set(getattr(tokenizer, "all_special_tokens", ()))
    return tuple(sorted((t for t in vocab if t not in special and t.strip()), key=len, reverse=True))


def _as_encoded(tokenizer, prompt: str) -> str:
    """The prompt as diffusers' textual inversion loader (``maybe_convert_prompt``) hands it to
    the tokenizer: each added token of a multi-vector embedding (``w``) followed by its extra
    tokens (``w_1 w_2 ...``). Written out here (diffusers keeps it on the pipeline mixin) with
    its rule kept exactly, also where that misses a token (one the tokenizer lowercases)."""
    encoder = getattr(tokenizer, "added_tokens_encoder", {})
    for token in set(tokenizer.tokenize(prompt)):
        if token in encoder and f"{token}_1" in encoder:
            k, replacement = 1, token
            while f"{token}_{k}" in encoder:
                replacement += f" {token}_{k}"
                k += 1
            prompt = prompt.replace(token, replacement)
    return prompt


def _merge_vectors(texts: list[str], ids: list[list[int]], added: Sequence[str]) -> tuple[list[str], list[list[int]]]:
    """A learned word's extra vector tokens (``w_1``, ``w_2``, ... right after ``w``) join its ids."""
    merged_texts: list[str] = []
    merged_ids: list[list[int]] = []
    count = 0
    for text, word_ids in zip(texts, ids):
        if merged_texts and text in added and text == f"{merged_texts[-1]}_{count}":
            merged_ids[-1] = merged_ids[-1] + list(word_ids)
            count += 1
            continue
        merged_texts.append(text)
        merged_ids.append(list(word_ids))
        count = 1
    return merged_texts, merged_ids


def tokenize_prompt(tokenizer, prompt: str) -> PromptTokens:
    """Tokenize ``prompt`` and map each CLIP pre-token word to its ``input_ids`` positions.

    Raises ``ValueError`` if the prompt does not fit the tokenizer (truncated tokens are
    invisible to guidance), or if tokenizing word by word does not reproduce the prompt's
    ids (a tokenizer that is not CLIP-compatible; pass integer positions then).
    ``tokenizer`` may also be a word lookup with a ``prompt_tokens(prompt)`` method
    (:class:`~.t5_tokens.T5WordLookup`), which then does the work.
    """
    if hasattr(tokenizer, "prompt_tokens"):  # a word lookup of another tokenizer family (T5: .t5_tokens)
        return tokenizer.prompt_tokens(prompt)
    if not isinstance(prompt, str):
        raise ValueError(f"The prompt must be a string, got {type(prompt).__name__}.")
    added = added_words(tokenizer)
    encoded = _as_encoded(tokenizer, prompt) if added else prompt
    word_texts = _pre_tokenize(encoded, added)
    word_ids = tokenizer(word_texts, add_special_tokens=False).input_ids if word_texts else []
    if added:  # a multi-vector learned word is one word of all its vectors
        word_texts, word_ids = _merge_vectors(word_texts, word_ids, added)
    flat = [i for ids in word_ids for i in ids]
    # Check the length before tokenizing the whole prompt, which would warn about it.
    limit = tokenizer.model_max_length - 2
    if len(flat) > limit:
        raise ValueError(
            f"The prompt has {len(flat)} tokens but the text encoder sees at most {limit} "
            f"(model_max_length {tokenizer.model_max_length} minus the start and end tokens); "
            f"shorten the prompt, since guidance cannot see truncated tokens (on SD3, text_sequence='t5' "
            f"or --text-sequence t5 reads the T5 tokens, max_sequence_length of them): {prompt!r}"
        )
    input_ids = list(tokenizer(encoded).input_ids)
    if input_ids[1:-1] != flat or len(input_ids) < 2:
        raise ValueError(
            f"Tokenizing the prompt {prompt!r} word by word does not reproduce its input_ids, so "
            f"the tokenizer ({type(tokenizer).__name__}) is not CLIP-compatible for word lookup; "
            "pass integer token positions instead of words."
        )
    words, position = [], 1
    for text, ids in zip(word_texts, word_ids):
        words.append((text, tuple(range(position, position + len(ids)))))
        position += len(ids)
    return PromptTokens(
        prompt=prompt,
        input_ids=tuple(input_ids),
        pieces=tuple(tokenizer.convert_ids_to_tokens(input_ids)),
        words=tuple(words),
        added=added,
    )


# ----------------------------------------------------------------------------- parsing

# "a photo of ...": for spaCy's noun chunks, a frame around the objects, not an object.
_FRAME = regex.compile(
    r"^.*\b(?:photo|photograph|picture|image|painting|drawing|illustration|rendering|render|sketch)\s+of\b"
)


@functools.lru_cache(maxsize=1)
def _spacy_model():
    install = "pip install spacy && python -m spacy download en_core_web_sm"
    try:
        import spacy
    except ImportError as err:
        raise ImportError(f"parser='spacy' needs spaCy and its English model: {install}") from err
    try:
        return spacy.load("en_core_web_sm")
    except OSError as err:
        raise ImportError(f"parser='spacy' needs the spaCy model en_core_web_sm: {install}") from err


def _parse_spacy(prompt: str) -> list[list[str]]:
    doc = _spacy_model()(_normalize(prompt))
    groups = []
    for chunk in doc.noun_chunks:
        root = chunk.root
        if root.pos_ == "PRON":
            continue
        nxt = doc[root.i + 1] if root.i + 1 < len(doc) else None
        if nxt is not None and nxt.text == "of" and _FRAME.search(f"{root.text} of"):
            continue  # "a photo of ..." frames the objects
        modifiers = [t.text for t in chunk if t.i != root.i and t.dep_ in ("amod", "compound")]
        groups.append(modifiers + [root.text])
    return groups


def describe_auto_groups(prompt: str, parser: str = "builtin") -> str:
    """A note for error messages about groups that ``token_groups="auto"`` made.

    E.g. ``"token_groups='auto' parsed 'a cat in a hat' into [['cat'], ['hat']] (the
    automatic prompt parser); if that is wrong, pass token_groups explicitly ..."``, for a
    method that needs two groups where the parser found one.
    """
    groups = parse_prompt(prompt, parser)
    return (
        f"token_groups='auto' parsed {prompt!r} into {groups} (the automatic prompt parser); "
        "if that is wrong, pass token_groups explicitly, one [attribute..., noun] word list "
        "per object, e.g. [['red', 'car'], ['blue', 'bench']]."
    )


def parse_prompt(prompt: str, parser: str = "builtin") -> list[list[str]]:
    """Split a prompt into object word groups, each ``[attribute..., noun]``.

    ``parser="builtin"`` (no dependencies, :mod:`.parsing`) is a rule-based noun-phrase
    chunker with a shipped word list: verbs, pronouns, relation words ("on top of"),
    frames ("a photo of"), numbers and abstract nouns never become objects; compound nouns
    keep all their words, the head last; "the car is red" binds "red" to "car".
    ``parser="spacy"`` uses spaCy's ``en_core_web_sm`` noun chunks (amod and compound
    modifiers plus the head noun). A prompt with no object gives ``[]``.
    """
    if parser == "builtin":
        return parse_builtin(prompt)
    if parser == "spacy":
        return _parse_spacy(prompt)
    raise ValueError(f"Unknown prompt parser {parser!r}; use 'builtin' or 'spacy'.")


# ----------------------------------------------------------------------------- resolving


def _is_position(item) -> bool:
    # bool is an int subclass, but True/False as a token position is almost surely a mistake.
    return isinstance(item, numbers.Integral) and not isinstance(item, bool)


def _group_entries(group, index: int) -> list:
    """One group as a list of entries (word strings or integer positions)."""
    if isinstance(group, str):
        entries = group.split()
    elif _is_position(group):
        entries = [group]
    elif isinstance(group, (list, tuple)):
        entries = list(group)
    else:
        raise ValueError(
            f"Token group {index} is a {type(group).__name__} ({group!r}); a group is a list of "
            "words or of integer token positions, a string of words, or a single position."
        )
    if not entries:
        raise ValueError(f"Token group {index} ({group!r}) is empty; give it at least one word or position.")
    for entry in entries:
        if not (isinstance(entry, str) or _is_position(entry)):
            raise ValueError(
                f"Token group {index} ({group!r}) holds {entry!r}, a {type(entry).__name__}; "
                "entries must be words (str) or integer token positions (int)."
            )
    return entries


def _only_multi_word(entries: list) -> bool:
    return len(entries) > 1 and all(isinstance(e, str) and len(e.split()) > 1 for e in entries)


def _check_position(pos: int, tokens: PromptTokens, index: int) -> int:
    pos = int(pos)
    n = tokens.length
    valid = f"valid positions are 1..{n}: {tokens.describe()}"
    if pos < 0:
        raise ValueError(f"Token position {pos} in group {index} is negative; {valid}")
    if pos == 0:
        raise ValueError(
            f"Token position 0 in group {index} is not a prompt token (CLIP's start-of-text token; on T5, which "
            f"has none, a placeholder); {valid}"
        )
    if pos > n:
        raise ValueError(
            f"Token position {pos} in group {index} is the end-of-text/padding token or beyond the "
            f"prompt {tokens.prompt!r} ({n} tokens); {valid}"
        )
    return pos


def _word_matches(entry: str, tokens: PromptTokens, index: int) -> tuple[int, list[int]]:
    """``(k, starts)``: ``entry`` is ``k`` pre-token words, found at ``tokens.words[start:start + k]``."""
    target = _pre_tokenize(entry, tokens.added)
    if not target:
        raise ValueError(
            f"Token group {index} holds an empty word {entry!r}; remove it or give a word of the prompt."
        )
    texts = [w for w, _ in tokens.words]
    k = len(target)
    starts = [i for i in range(len(texts) - k + 1) if texts[i : i + k] == target]
    if not starts:
        raise ValueError(
            f"Word {entry!r} of token group {index} is not in the prompt {tokens.prompt!r}; use a word "
            f"of the prompt or pass integer token positions. Prompt tokens: {tokens.describe()}"
        )
    return k, starts


def _place(matches: list[tuple[int, list[int]]], used: set[int]) -> list[int]:
    """A start for each of a group's words, avoiding words ``used`` by groups placed before.

    Takes unused occurrences in prompt order (attributes precede their noun); among such
    placements, the most compact one, then the earliest. So "red" of a ``["red", "bench"]``
    group in "a red car and a red bench" is the second "red", whatever the group order.
    If the words do not occur in order, each takes its first unused occurrence; a word whose
    occurrences are all used reuses its first one (groups may share words).
    """
    cands = [[i for i in starts if not used.intersection(range(i, i + k))] or starts for k, starts in matches]
    best = None
    for first in cands[0]:
        # From a fixed first word, taking each next word's earliest occurrence after the
        # previous one gives the earliest possible end, hence the most compact placement.
        chain, end = [first], first + matches[0][0]
        for (k, _), options in zip(matches[1:], cands[1:]):
            nxt = next((i for i in options if i >= end), None)
            if nxt is None:
                break
            chain.append(nxt)
            end = nxt + k
        else:
            if best is None or end - first < best[0]:
                best = (end - first, chain)
    if best is not None:
        return best[1]
    return [options[0] for options in cands]


class NoObjectsError(ValueError):
    """The automatic parser found no object in a prompt: nothing to guide (callers may draw it plainly)."""


def _resolve(tokens: PromptTokens, groups) -> list[TokenGroup]:
    if isinstance(groups, str):
        if groups != "auto":
            raise ValueError(
                f"Token groups must be 'auto' or a list of groups, got the string {groups!r}; "
                f"wrap it in a list, e.g. [{groups!r}]."
            )
        learned = [w for w, _ in tokens.words if w in tokens.added]
        if learned:
            raise ValueError(
                f"token_groups='auto' cannot place the learned word(s) {', '.join(dict.fromkeys(learned))} of "
                f"{tokens.prompt!r}: the automatic parser reads words, and a learned token may be an object, an "
                "attribute or a relation. Pass token_groups explicitly, e.g. [['<cat-toy>'], ['red', 'chair']] "
                "(a learned word is matched whole, with all its vectors)."
            )
        groups = parse_prompt(tokens.prompt)
        if not groups:
            raise NoObjectsError(
                f"The automatic prompt parser (token_groups='auto') found no objects (no noun, or only "
                f"nouns the prompt denies: 'no cat', 'without a hat') in "
                f"{tokens.prompt!r}; pass token groups explicitly, e.g. [['red', 'car']] (words "
                "of the prompt, the noun last) or integer token positions."
            )
    elif not isinstance(groups, (list, tuple)):
        raise ValueError(f"Token groups must be 'auto' or a list of groups, got a {type(groups).__name__}.")
    if len(groups) == 0:
        raise ValueError(
            f"The token group list for {tokens.prompt!r} is empty; give at least one group or use 'auto'."
        )
    entries = [_group_entries(group, index) for index, group in enumerate(groups)]
    if all(_only_multi_word(group) for group in entries):
        # [["red car", "blue bench"]] is one prompt's list of string groups wrapped once more per
        # prompt as often as one object whose attribute is "red car" and noun "blue bench"
        first = list(entries[0])
        raise ValueError(
            f"Token group 0 ({first!r}) holds only multi-word entries, as every group here does, which reads as "
            f"one object (the attribute {first[0]!r} ... the noun {first[-1]!r}). For one group per string, pass "
            f"the strings as the prompt's group list ({first!r}; with several prompts, one such list per prompt); "
            "for one object with a multi-word noun, give its other words one by one (['light', 'blue', "
            "'traffic light'])."
        )
    matches = [[_word_matches(e, tokens, index) for e in group if isinstance(e, str)]
               for index, group in enumerate(entries)]
    # Groups with more words are placed first (stable otherwise): in "a red car next to a car",
    # ["red", "car"] takes the car after "red" whichever of the two groups comes first.
    used: set[int] = set()  # indices into tokens.words taken by groups placed earlier
    spans: dict[int, list[tuple[int, int]]] = {}
    for index in sorted(range(len(entries)), key=lambda i: -len(matches[i])):
        starts = _place(matches[index], used) if matches[index] else []
        spans[index] = [(start, start + k) for start, (k, _) in zip(starts, matches[index])]
        used.update(i for start, stop in spans[index] for i in range(start, stop))
    out = []
    for index, group in enumerate(entries):
        word_spans = iter(spans[index])
        names, positions = [], []
        for entry in group:
            if isinstance(entry, str):
                start, stop = next(word_spans)
                names.append(" ".join(w for w, _ in tokens.words[start:stop]))
                # each once: on T5 several words can share a piece ("12" is "1" "2" on "▁12")
                positions.append(tuple(dict.fromkeys(p for _, ps in tokens.words[start:stop] for p in ps)))
            else:
                pos = _check_position(entry, tokens, index)
                names.append(str(pos))
                positions.append((pos,))
        out.append(TokenGroup(words=tuple(names), word_positions=tuple(positions)))
    return out


def resolve_groups(tokenizer, prompt: str, groups) -> list[TokenGroup]:
    """Resolve one prompt's token groups to token positions.

    ``groups`` is ``"auto"`` (:func:`parse_prompt`) or a list of groups; a group is a list of
    words and/or integer positions, a string of whitespace-separated words, or one position.
    A multi-word string inside a group list ("traffic light") is one word matched on
    consecutive prompt words. Words match case-insensitively; a repeated word takes an
    occurrence not used by a group placed before it (groups with more words first, then in
    the given order): the group's words in prompt order, as compactly as possible, else the
    earliest (see ``_place``).
    """
    return _resolve(tokenize_prompt(tokenizer, prompt), groups)


def is_per_prompt(token_groups: Sequence) -> bool:
    """Whether ``token_groups`` holds one group list (or ``"auto"``) per prompt: it nests one
    level deeper than a single prompt's group list."""
    return any(
        (isinstance(entry, str) and entry == "auto")
        or (isinstance(entry, (list, tuple)) and len(entry) > 0 and isinstance(entry[0], (list, tuple)))
        for entry in token_groups
    )


def resolve_batch_groups(tokenizer, prompts: list[str], token_groups) -> list[list[TokenGroup]]:
    """Resolve token groups for a batch of prompts, one list of :class:`TokenGroup` per prompt.

    ``token_groups`` is ``"auto"``, one group list per prompt (each may be ``"auto"``), or,
    for a single prompt only, that prompt's group list.
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if isinstance(token_groups, str) and token_groups == "auto":
        per_prompt = ["auto"] * len(prompts)
    elif isinstance(token_groups, (list, tuple)) and is_per_prompt(token_groups):
        per_prompt = list(token_groups)
        if len(per_prompt) != len(prompts):
            raise ValueError(
                f"Got {len(per_prompt)} token group lists for {len(prompts)} prompts; "
                "pass one group list (or 'auto') per prompt."
            )
    elif len(prompts) == 1:
        per_prompt = [token_groups]
    else:
        raise ValueError(
            f"Token groups {token_groups!r} look like a single prompt's group list, but there are "
            f"{len(prompts)} prompts; pass one group list per prompt (e.g. [[['red', 'car']], 'auto']) "
            "or 'auto'."
        )
    return [resolve_groups(tokenizer, prompt, groups) for prompt, groups in zip(prompts, per_prompt)]

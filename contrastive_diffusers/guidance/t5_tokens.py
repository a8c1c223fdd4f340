"""Token groups on a T5 (sentencepiece) tokenizer: the text sequence Flux's joint attention
reads (and SD3's second half).

T5 marks a word start with ``"▁"`` and has no start token; its ids are the prompt's pieces,
then ``</s>``, then ``<pad>``. :class:`T5WordLookup` finds the same words as the CLIP path
(:mod:`.tokens`: letters runs, digits, punctuation, case-insensitive) through the fast
tokenizer's character offsets, so a word split into several pieces ("▁ze", "bra") maps to all
of them. Positions count as for CLIP: ``1`` is the first prompt token (T5's index 0), so
slot 0 is a placeholder, never a prompt token, and groups, windows and losses are the same
code for both tokenizers.
"""

from __future__ import annotations

import regex

from .tokens import PromptTokens, _pre_tokenize

# A word of the raw prompt: CLIP's pattern with combining marks kept in their letter run, so
# that "cafe\u0301" (decomposed) is one word; _pre_tokenize then splits it as CLIP's path does.
_RAW_WORD = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}\p{M}]+|[\p{N}]|[^\s\p{L}\p{M}\p{N}]+""", regex.IGNORECASE)


class T5WordLookup:
    """Word lookup of a T5 tokenizer for sequences of ``max_length`` tokens (the pipeline's
    ``max_sequence_length``). Pass it wherever a tokenizer is taken for token groups
    (:func:`~.tokens.resolve_groups`, ``GuidanceSession.start``): they call :meth:`prompt_tokens`."""

    def __init__(self, tokenizer, max_length: int):
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                f"{type(tokenizer).__name__} is not a fast tokenizer, so it gives no character offsets; load the "
                "T5 tokenizer as T5TokenizerFast (transformers' default)."
            )
        self.tokenizer = tokenizer
        self.max_length = int(max_length)

    @property
    def pad_token_id(self):
        return self.tokenizer.pad_token_id

    @property
    def eos_token_id(self):
        return self.tokenizer.eos_token_id

    def prompt_tokens(self, prompt: str) -> PromptTokens:
        """The prompt's pieces with slot 0 a placeholder (see the module docstring) and its
        words, each with the positions of the pieces it overlaps."""
        if not isinstance(prompt, str):
            raise ValueError(f"The prompt must be a string, got {type(prompt).__name__}.")
        encoded = self.tokenizer(prompt, return_offsets_mapping=True, verbose=False)
        ids, offsets = list(encoded.input_ids), list(encoded.offset_mapping)
        own = len(ids) - 1 if ids and ids[-1] == self.eos_token_id else len(ids)
        if own + 1 > self.max_length:
            raise ValueError(
                f"The prompt has {own} T5 tokens but the text encoder sees at most {self.max_length - 1} "
                f"(max_sequence_length {self.max_length} minus the end token); shorten the prompt, or in Python raise "
                f"the pipeline's max_sequence_length argument (the commands keep its default), since guidance "
                f"cannot see truncated tokens: {prompt!r}"
            )
        pieces = self.tokenizer.convert_ids_to_tokens(ids)
        # A lone "▁" starts the word of the piece after it ("▁", "z", "e", "bra"); its offset is
        # the space before the word or the word's first letter, by how the tokenizer was loaded.
        offsets = [offsets[i + 1] if pieces[i] == "▁" and i + 1 < own else offsets[i] for i in range(len(offsets))]
        words = []
        for match in _RAW_WORD.finditer(prompt):
            start, end = match.span()
            positions = tuple(i + 1 for i, (s, e) in enumerate(offsets[:own]) if s < end and e > start)
            if positions:  # a character T5 drops (unknown to its vocabulary) has no piece
                # the words a group entry becomes on both paths (NFC, lower case: "İ" is "i" + a mark)
                words.extend((word, positions) for word in _pre_tokenize(match.group()))
        return PromptTokens(
            prompt=prompt,
            input_ids=(self.pad_token_id, *ids[:own], self.eos_token_id),
            pieces=("", *pieces[:own], pieces[own] if own < len(pieces) else ""),
            words=tuple(words),
        )

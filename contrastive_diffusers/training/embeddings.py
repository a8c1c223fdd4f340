"""Placeholder tokens and the only trainable parameters: their embedding rows.

:func:`add_placeholder_tokens` adds the tokens to a tokenizer, grows the text encoder's
embedding matrix if needed, and returns each token's initial row: the embedding of its
initializer word, **the mean of the word's pieces** when the tokenizer splits it (so any
word can initialise a token; the pieces are recorded in the run's JSON).

:class:`LearnedEmbeddings` holds one float32 ``(tokens, width)`` parameter per text encoder
(SDXL: two) and substitutes those rows into the encoders' token-embedding output with a
forward hook. The embedding matrices themselves are never trained or written during
training, so every other row stays bit-identical by construction (no restore step), the
optimizer state is ``tokens x width`` instead of ``vocab x width``, and the frozen text
encoders can run in the mixed-precision weight dtype. The text encoders are deliberately
*not* submodules: ``accelerator.prepare`` / DDP / ``save_state`` see only the learned rows,
while :meth:`LearnedEmbeddings.forward` (called through the prepared wrapper) runs the
encoders, so DDP synchronises the rows' gradients.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class PlaceholderInfo:
    """The tokens added to one tokenizer: their ids (consecutive) and initialisation."""

    tokens: tuple[str, ...]
    token_ids: tuple[int, ...]
    initializer_pieces: tuple[tuple[str, ...], ...]

    @property
    def first_id(self) -> int:
        return self.token_ids[0]


def check_placeholder_tokens(tokens, initializers) -> None:
    """Errors that need no tokenizer: counts, duplicates, whitespace, empty words."""
    tokens, initializers = list(tokens), list(initializers)
    if not tokens:
        raise ValueError("No placeholder token given; pass --placeholder_token (or --placeholder_tokens a,b).")
    if len(tokens) != len(initializers):
        raise ValueError(
            f"Got {len(tokens)} placeholder token(s) ({', '.join(tokens)}) but {len(initializers)} initializer "
            f"token(s) ({', '.join(initializers)}); give one initializer word per placeholder token."
        )
    if len(set(tokens)) != len(tokens):
        raise ValueError(f"Placeholder tokens must be distinct, got {', '.join(tokens)}.")
    for token in tokens:
        if not token or any(c.isspace() for c in token) or "{}" in token:
            raise ValueError(
                f"Placeholder token {token!r} must be one word without spaces or '{{}}', e.g. '<cat-toy>'."
            )
    for word in initializers:
        if not word.strip():
            raise ValueError("An initializer token is empty; give a word such as 'and' or 'toy'.")


def add_placeholder_tokens(tokenizer, text_encoder, tokens, initializers) -> tuple[PlaceholderInfo, torch.Tensor]:
    """Add ``tokens`` to ``tokenizer`` (and rows to ``text_encoder``); return their info and
    initial rows ``(len(tokens), width)`` in float32.

    A token already in the vocabulary is an error (a loaded pipeline would refuse it too).
    The new rows of the embedding matrix are also set to the initial rows, so the encoder
    alone already means "initializer word" for each token.
    """
    check_placeholder_tokens(tokens, initializers)
    vocab = tokenizer.get_vocab()
    taken = [t for t in tokens if t in vocab]
    if taken:
        raise ValueError(
            f"The placeholder token(s) {', '.join(taken)} are already in the tokenizer's vocabulary; choose "
            "new strings, e.g. '<my-token>'."
        )
    for token in tokens:
        whole = tokenizer.tokenize(token)
        if len(whole) == 1 and whole[0] != token:
            warnings.warn(
                f"The placeholder token {token!r} is a word the tokenizer already knows ({whole[0]!r}): every prompt "
                f"that says {token!r} will mean the learned token. Choose a new string such as '<{token}-x>'.",
                stacklevel=2,
            )
    weight = text_encoder.get_input_embeddings().weight
    init_rows, pieces = [], []
    for word in initializers:
        ids = tokenizer(word, add_special_tokens=False).input_ids
        if not ids:
            raise ValueError(f"The initializer token {word!r} has no tokens in this tokenizer.")
        names = tuple(tokenizer.convert_ids_to_tokens(ids))
        if len(names) > 1:  # kept (a phrase may be meant), but a typo reads the same way
            warnings.warn(
                f"The initializer {word!r} is {len(names)} tokenizer pieces ({' '.join(names)}); the new token "
                "starts from their mean. If that is a typo, give a word the tokenizer knows whole.",
                stacklevel=2,
            )
        pieces.append(names)
        init_rows.append(weight[ids].detach().float().mean(0))
    added = tokenizer.add_tokens(list(tokens))
    if added != len(tokens):
        raise ValueError(f"The tokenizer added {added} of the {len(tokens)} placeholder tokens {', '.join(tokens)}.")
    token_ids = tuple(tokenizer.convert_tokens_to_ids(list(tokens)))
    if list(token_ids) != list(range(token_ids[0], token_ids[0] + len(tokens))):
        raise ValueError(f"The tokenizer gave the placeholder tokens non-consecutive ids {token_ids}.")
    if len(tokenizer) > weight.shape[0]:
        text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    rows = torch.stack(init_rows)
    with torch.no_grad():
        emb = text_encoder.get_input_embeddings().weight
        emb[token_ids[0] : token_ids[-1] + 1] = rows.to(emb.dtype)
    return PlaceholderInfo(tuple(tokens), token_ids, tuple(pieces)), rows


class LearnedEmbeddings(nn.Module):
    """The trainable rows (one float32 parameter per text encoder) and the text encoding that
    uses them. ``forward(input_ids)`` takes one ``input_ids`` tensor per encoder and returns
    ``(encoder_hidden_states, pooled_text_embeds or None)`` as the UNet expects them
    (SDXL: penultimate hidden states of both encoders concatenated, pooled from the second).
    """

    def __init__(self, text_encoders, infos: list[PlaceholderInfo], init_rows: list[torch.Tensor], sdxl: bool):
        super().__init__()
        if not (len(text_encoders) == len(infos) == len(init_rows)):
            raise ValueError("One PlaceholderInfo and one row tensor per text encoder are needed.")
        self.rows = nn.ParameterList([nn.Parameter(r.detach().clone().float()) for r in init_rows])
        self.first_ids = [info.first_id for info in infos]
        self.sdxl = sdxl
        self._text_encoders = tuple(text_encoders)  # a tuple: not registered as submodules
        self._hooks = [
            encoder.get_input_embeddings().register_forward_hook(self._substitute(k), with_kwargs=True)
            for k, encoder in enumerate(text_encoders)
        ]

    @property
    def text_encoders(self):
        return self._text_encoders

    def _substitute(self, k: int):
        def hook(module, args, kwargs, output):
            ids = args[0] if args else kwargs["input"]
            rows = self.rows[k]
            index = ids - self.first_ids[k]
            inside = (index >= 0) & (index < rows.shape[0])
            picked = rows[index.clamp(0, rows.shape[0] - 1)].to(output.dtype)
            return torch.where(inside.unsqueeze(-1), picked, output)

        return hook

    def forward(self, input_ids: list[torch.Tensor]):
        if len(input_ids) != len(self._text_encoders):
            raise ValueError(f"Expected {len(self._text_encoders)} input_ids tensors, got {len(input_ids)}.")
        if not self.sdxl:
            encoder = self._text_encoders[0]
            return encoder(input_ids[0].to(encoder.device))[0], None
        hidden, pooled = [], None
        for encoder, ids in zip(self._text_encoders, input_ids):
            out = encoder(ids.to(encoder.device), output_hidden_states=True)
            hidden.append(out.hidden_states[-2])
            pooled = out[0]  # the second encoder's projected, pooled embedding
        return torch.cat(hidden, dim=-1), pooled

    def remove_hooks(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    @torch.no_grad()
    def write_into_encoders(self) -> None:
        """Copy the learned rows into the encoders' embedding matrices (their dtype)."""
        for k, encoder in enumerate(self._text_encoders):
            weight = encoder.get_input_embeddings().weight
            rows = self.rows[k]
            weight[self.first_ids[k] : self.first_ids[k] + rows.shape[0]] = rows.to(weight.device, weight.dtype)

    def learned(self) -> list[torch.Tensor]:
        """The learned rows, detached float32 CPU copies, one ``(tokens, width)`` tensor per encoder."""
        return [r.detach().float().cpu().clone() for r in self.rows]

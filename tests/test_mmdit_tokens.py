"""Token groups on T5's sentencepiece pieces (the text Flux's joint attention reads)."""

from __future__ import annotations

import pytest

from contrastive_diffusers.guidance.t5_tokens import T5WordLookup
from contrastive_diffusers.guidance.tokens import resolve_groups, tokenize_prompt
from contrastive_diffusers.models.tiny_tokenizers import tiny_t5_tokenizer


@pytest.fixture(scope="module")
def lookup():
    return T5WordLookup(tiny_t5_tokenizer(), max_length=32)


def test_words_map_to_their_pieces_counted_from_one(lookup):
    tokens = tokenize_prompt(lookup, "a red fire hydrant and a blue bench")
    # T5 pieces: ▁a ▁red ▁fi re ▁h y d ra nt ▁and ▁a ▁blue ▁bench </s>; position 1 is the first.
    assert dict(tokens.words[:4]) == {"a": (1,), "red": (2,), "fire": (3, 4), "hydrant": (5, 6, 7, 8, 9)}
    assert tokens.length == 13 and tokens.pieces[13] == "▁bench" and tokens.pieces[14] == "</s>"
    groups = resolve_groups(lookup, "a red fire hydrant and a blue bench", [["red", "fire hydrant"], ["blue", "bench"]])
    assert [g.word_positions for g in groups] == [((2,), (3, 4, 5, 6, 7, 8, 9)), ((12,), (13,))]


def test_case_punctuation_and_lone_word_start_pieces(lookup):
    # "A Red car, and a zebra." -> ▁ A ▁ R e d ▁car , ▁and ▁a ▁ z e b ra . </s>: a lone "▁"
    # belongs to the word it starts; punctuation is a word of its own, as for CLIP.
    groups = resolve_groups(lookup, "A Red car, and a zebra.", [["red", "car"], ["zebra"]])
    assert [g.word_positions for g in groups] == [((3, 4, 5, 6), (7,)), ((11, 12, 13, 14, 15),)]
    assert resolve_groups(lookup, "A Red car, and a zebra.", "auto")[0].words == ("red", "car")


def test_the_same_words_however_the_tokenizer_was_loaded(lookup):
    """transformers' T5Tokenizer gives a lone "▁" the next letter's offset, the same
    tokenizer.json loaded as a plain fast tokenizer gives it the space's: the words are the same."""
    from transformers import PreTrainedTokenizerFast

    from contrastive_diffusers.models.tiny_tokenizers import T5_TOKENIZER_DIR

    plain = T5WordLookup(PreTrainedTokenizerFast(tokenizer_file=str(T5_TOKENIZER_DIR / "tokenizer.json"),
                                                 eos_token="</s>", pad_token="<pad>", unk_token="<unk>"), 32)
    for prompt in ["a zebra and a firetruck", "A Red car, and a zebra.", "Ünïcode éclair's 42 dogs"]:
        assert plain.prompt_tokens(prompt).words == lookup.prompt_tokens(prompt).words
    assert dict(plain.prompt_tokens("a zebra").words)["zebra"] == (2, 3, 4, 5, 6)  # ▁ z e b ra


def test_errors_name_the_problem(lookup):
    with pytest.raises(ValueError, match=r"Word 'truck' .* not in the prompt .* 1:'▁a'"):
        resolve_groups(lookup, "a red car", [["truck"]])
    with pytest.raises(ValueError, match="position 0 .* start-of-text"):
        resolve_groups(lookup, "a red car", [[0]])
    with pytest.raises(ValueError, match="at most 31 .*max_sequence_length 32"):
        tokenize_prompt(lookup, " ".join(["red"] * 40))
